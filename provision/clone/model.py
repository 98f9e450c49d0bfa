"""What a clone is made of: its source, its plan, its errors and constants."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DsasError
from ..inventory.model import Host
from .disklayout import MIB, Layout

EXTLINUX_DIRS = ("/usr/lib/EXTLINUX", "/usr/lib/syslinux/mbr")
ROOT_SLACK = 1.15  # file system metadata on top of the image's bytes
ROOT_EXTRA = 48 * MIB
# Tried in order for rootfs.tar.gz; a slower one only costs time (the report names it).
GUNZIP_PROGRAMS = ("igzip", "pigz", "gzip")
TAR_BLOCKING = 2048  # 512-byte blocks per tar record: 1 MiB reads and writes
TAR_CHECKPOINT = 10  # records: a progress line every 10 MiB of archive
PIPE_SIZE = 1 << 20
STEP_TIMEOUT = 300  # seconds for one step (mkfs, mount, sync, extlinux, ...)
TAR_PROGRESS = "dsas-progress"
# Paths written per host on the target (never compared with the image).
HOST_FILES = {"etc/dsas.conf", "etc/fstab", "etc/hostname", "etc/hosts", "etc/machine-id"}
# rsync --from a peer: its identity and what only means something while it runs.
PEER_EXCLUDES = (
    "/proc/*", "/sys/*", "/dev/*", "/run/*", "/tmp/*", "/var/tmp/*", "/mnt/*", "/media/*",
    "/lost+found", "/etc/dsas.conf", "/etc/hostname", "/etc/hosts", "/etc/fstab",
    "/etc/machine-id", "/var/lib/dbus/machine-id", "/etc/ssh/ssh_host_*",
    "/var/log/*", "/var/cache/apt/archives/*.deb", "/boot/extlinux/", "/swapfile",
    "/var/lib/dsas/clone.json",
)


class CloneError(DsasError, RuntimeError):
    """A clone that failed; once writing began the target has no partition table."""


class Refused(CloneError):
    """The target is unsafe or unsuitable; nothing was written."""


Progress = Callable[[str, int, int], None]  # (stage, done, total bytes)


def noprogress(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class Source:
    """Where a clone's files come from: an image in the store, or a peer over SSH."""

    kind: str  # image | peer
    image: str = ""
    version: str = ""
    path: Path | None = None  # store dir
    manifest: dict[str, Any] = field(default_factory=dict)
    peer: Host | None = None
    peer_address: str = ""
    peer_path: str = "/"
    ssh: list[str] = field(default_factory=list)
    size: int = 0  # bytes of content

    def describe(self) -> str:
        if self.kind == "image":
            return f"image {self.image}@{self.version} ({self.path})"
        assert self.peer is not None
        return f"peer {self.peer.name} ({self.peer_address}:{self.peer_path}) over rsync+ssh"


@dataclass
class Plan:
    """Everything a clone will do, checked before anything is written."""

    host: Host
    target: Path
    is_block: bool
    create_size: int | None  # a FILE target to create/extend to this size
    size: int
    layout: Layout
    source: Source
    conf: str  # the host's dsas.conf
    append: str  # kernel command line

    def describe(self) -> str:
        lo = self.layout
        lines = [f"dsas-clone plan for host {self.host.name} (role {self.host.role.name}, "
                 f"hwtype {self.host.hwtype.name})",
                 f"  target   {self.target} ({'block device' if self.is_block else 'image file'}"
                 f", {self.size / MIB:.0f} MiB"
                 + (", to be created" if self.create_size and not self.target.exists() else "")
                 + ")",
                 f"  source   {self.source.describe()}, {self.source.size / MIB:.0f} MiB",
                 f"  table    {lo.label} (written last, after verification)"]
        for p in sorted(lo.parts, key=lambda p: p.start):
            what = ("BIOS boot" if p.part == "bios" else
                    f"{p.fstype:<5} {lo.mount_point_of(p) if p.is_fs else ''}")
            lines.append(f"  {p.number:>2} {p.part:<5} {p.device:<12} start {p.start / MIB:>8.1f}"
                         f" MiB  size {p.size / MIB:>8.1f} MiB  {what}")
        for s in lo.skipped:
            lines.append(f"  skipped  {s}")
        lines.append("  writes   /etc/dsas.conf, /etc/fstab, /etc/hostname, /etc/hosts, "
                     "fresh SSH host keys, extlinux")
        lines.append(f"  boot     extlinux ({'gptmbr.bin' if lo.label == 'gpt' else 'mbr.bin'})"
                     f", APPEND root=UUID=... {self.append}")
        return "\n".join(lines)
