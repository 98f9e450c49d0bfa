"""Where a clone's files come from (an image in the store, or a running peer over
rsync+ssh), and the plan that puts them on the target."""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import shlex
import shutil
import stat
from pathlib import Path

from .. import layout as boot_layout
from .. import proc
from ..imaging.store import ImageStore
from ..inventory.model import Host, Inventory
from ..render import render_host
from ..sshtrust.sshconf import SshConfig
from . import disklayout
from .checks import check_block_target, check_file_target
from .model import (
    GUNZIP_PROGRAMS,
    PEER_EXCLUDES,
    PIPE_SIZE,
    ROOT_EXTRA,
    ROOT_SLACK,
    TAR_PROGRESS,
    CloneError,
    Plan,
    Refused,
    Source,
)

log = logging.getLogger(__name__)


def image_source(store: ImageStore, name: str, version: str) -> Source:
    concrete = store.resolve(name, version)
    if concrete is None:
        raise Refused(f"no image {name}@{version} in {store.root}"
                      + (" (build it: dsas image build " + name + ")"))
    m = store.manifest(name, concrete) or {}
    if boot_layout.ROOTFS not in m.get("files", {}):
        raise Refused(f"image {name}@{concrete} has no {boot_layout.ROOTFS} (not a root fs image)")
    problems = store.verify(name, concrete)
    if problems:
        raise Refused(f"image {name}@{concrete} does not verify: {problems[0]}")
    size = int(m.get("size") or 0) or _gzip_isize(store.dir(name, concrete) / boot_layout.ROOTFS)
    return Source("image", name, concrete, store.dir(name, concrete), m, size=size)


def gunzip_program() -> str:
    """The fastest gzip decompressor here: igzip (ISA-L, Debian package isal) inflates
    about 3x faster than gzip, which is what keeps unpacking at disk speed."""
    for prog in GUNZIP_PROGRAMS:
        if shutil.which(prog):
            return prog
    raise CloneError("no gzip decompressor found (Debian package isal or gzip)")


def children_cpu() -> float:
    """User + system seconds of the child processes waited for so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def grow_pipe(fd: int) -> None:
    """A 1 MiB pipe buffer (Linux F_SETPIPE_SZ); the default 64 KiB if refused."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError as exc:
        log.debug("pipe buffer stays at its default size: %s", exc)


def tar_progress(line: str) -> int | None:
    """Bytes of the archive tar has read, from one of its checkpoint lines."""
    if TAR_PROGRESS not in line or " r: " not in line:
        return None
    try:
        return int(line.split(" r: ", 1)[1].split()[0])
    except (IndexError, ValueError):
        return None


def _gzip_isize(path: Path) -> int:
    with path.open("rb") as f:
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def peer_source(inv: Inventory, peer_name: str, peer_path: str, ssh: SshConfig) -> Source:
    """A running peer as the source; its host key must be in dsas's known_hosts."""
    peer = inv.hosts.get(peer_name)
    if peer is None:
        raise Refused(f"--from {peer_name}: no such host in {inv.source}")
    addr = str(peer.primary_interface.address)
    if not ssh.key.is_file():
        raise Refused(f"--from {peer_name}: no SSH key {ssh.key} (dsas-push creates it; "
                      "the peer must accept it)")
    src = Source("peer", peer=peer, peer_address=addr, peer_path=peer_path.rstrip("/") + "/",
                 ssh=ssh_argv(ssh))
    res = proc.run(rsync_argv(src, "/nonexistent-dsas-dry-run/", ["-n", "--stats"]),
                   timeout=120, check=False)  # a refusal names the peer and the cause
    if res.returncode != 0:
        raise Refused(_peer_failure(src, ssh, res.stderr))
    for line in res.stdout.splitlines():
        if line.startswith("Total file size:"):
            src.size = int(line.split(":")[1].split()[0].replace(",", ""))
    return src


def ssh_argv(ssh: SshConfig) -> list[str]:
    """dsas-push's ssh (strict host keys from dsas's known_hosts, batch mode, its key),
    without connection sharing: a clone makes three connections, none left behind."""
    argv = ssh.ssh_command(Path("/nonexistent"))
    out: list[str] = []
    for opt in argv:
        if opt.startswith("Control") and out and out[-1] == "-o":
            out.pop()
        else:
            out.append(opt)
    return out


def _peer_failure(src: Source, ssh: SshConfig, stderr: str) -> str:
    assert src.peer is not None
    who = f"--from {src.peer.name} ({src.peer_address})"
    if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION" in stderr:
        return (f"{who}: its SSH host key is not the one dsas trusts ({ssh.known_hosts}); "
                f"check it and run `dsas trust {src.peer.name}`")
    return f"{who}: rsync over ssh failed: {stderr.strip()[-300:]}"


def rsync_argv(src: Source, dest: str, extra: list[str]) -> list[str]:
    argv = ["rsync", "-aHAX", "--numeric-ids", "--one-file-system", *extra,
            "-e", shlex.join(src.ssh)]
    argv += [f"--exclude={e}" for e in PEER_EXCLUDES]
    return argv + [f"{src.peer_address}:{src.peer_path}", dest]


def make_plan(inv: Inventory, host_name: str, target: Path, size: int | None,
              source: Source, templates: Path | None = None) -> Plan:
    host = inv.hosts.get(host_name)
    if host is None:
        raise Refused(f"unknown host {host_name!r}: not in {inv.source}")
    is_block = target.exists() and stat.S_ISBLK(target.stat().st_mode)
    if is_block and size is not None:
        raise Refused(f"--size is for image files; {target} is a block device")
    target_size = check_block_target(target) if is_block else check_file_target(target, size)
    needs = int(source.size * ROOT_SLACK) + ROOT_EXTRA
    try:
        lo = disklayout.plan(host.hwtype, target_size, needs)
    except disklayout.LayoutError as exc:
        raise Refused(f"{target}: {exc}") from None
    conf = render_host(inv, host, "dsas.conf", templates)
    args = " ".join(a for a in (inv.cluster.kernel_args, _image_args(inv, host),
                                host.kernel_args) if a)
    return Plan(host, target, is_block, size, target_size, lo, source, conf, args)


def _image_args(inv: Inventory, host: Host) -> str:
    img = inv.images.get(host.image or "")
    return img.kernel_args if img else ""
