"""dsas-clone: make a bootable disk (block device or image file) for one host.

The order of work is what keeps a half-made disk from looking good:

1. checks (host known, target not mounted, not the running system's, big enough);
2. the target's partition-table areas are wiped first (start and end), so from
   here on the disk has no partition table and nothing will boot it;
3. every partition is reached through its own loop device (offset + size),
   formatted, mounted, filled (image from the store, or rsync from a peer),
   given the host's dsas.conf, fstab, SSH host keys and boot loader;
4. verified: every manifest file's sha256 on the target, fsck clean;
5. only then the partition table and boot code are written (the last step).

Any failure or interrupt in 2-5 leaves the target with no partition table, and
the error says so.
"""

from __future__ import annotations

import fcntl
import logging
import os
import resource
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import layout as boot_layout
from ..errors import DsasError
from ..imaging.content import entries, verify_tree
from ..imaging.store import ImageStore
from ..inventory.model import Host, Inventory
from ..render import render_host
from ..sshtrust.sshconf import SshConfig
from . import disklayout
from .disklayout import MIB, Layout

log = logging.getLogger(__name__)

EXTLINUX_DIRS = ("/usr/lib/EXTLINUX", "/usr/lib/syslinux/mbr")
ROOT_SLACK = 1.15  # file system metadata on top of the image's bytes
ROOT_EXTRA = 48 * MIB
# Tried in order for rootfs.tar.gz; a slower one only costs time (the report names it).
GUNZIP_PROGRAMS = ("igzip", "pigz", "gzip")
TAR_BLOCKING = 2048  # 512-byte blocks per tar record: 1 MiB reads and writes
TAR_CHECKPOINT = 10  # records: a progress line every 10 MiB of archive
PIPE_SIZE = 1 << 20
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


def _noprogress(stage: str, done: int, total: int) -> None:
    pass


@dataclass
class Source:
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


# -- checks -------------------------------------------------------------------------


def _run(argv: list[str], timeout: float = 300, **kw: Any) -> str:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except FileNotFoundError:
        raise CloneError(f"{argv[0]} not found (install it: see tools/apt-packages.txt)") from None
    if res.returncode != 0:
        raise CloneError(f"{' '.join(argv[:4])}...: {(res.stderr or res.stdout).strip()[-400:]}")
    return res.stdout


def _block_name(dev: Path) -> str | None:
    """The /sys/class/block name of a block device node."""
    try:
        rdev = dev.stat().st_rdev
    except OSError:
        return None
    link = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    return link.resolve().name if link.exists() else None


def _disk_of(name: str) -> str:
    """sda for sda3, loop0 for loop0p1; the name itself for a whole disk."""
    path = Path("/sys/class/block") / name
    if (path / "partition").exists():
        return path.resolve().parent.name
    return name


def _lower_disks(name: str, depth: int = 0) -> set[str]:
    """The disks under a block device (through dm/md slaves), itself included."""
    out = {_disk_of(name)}
    slaves = Path("/sys/class/block") / name / "slaves"
    if depth < 8 and slaves.is_dir():
        for s in slaves.iterdir():
            out |= _lower_disks(s.name, depth + 1)
    return out


def _system_disks() -> dict[str, str]:
    """disk name -> why it is the running system's (/, /boot, /usr, /var, swap)."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        src, mp = line.split()[:2]
        if mp in ("/", "/boot", "/boot/efi", "/usr", "/var") and src.startswith("/dev/"):
            name = _block_name(Path(src))
            for d in _lower_disks(name) if name else ():
                out.setdefault(d, f"it holds the running system's {mp}")
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        name = _block_name(Path(line.split()[0]))
        for d in _lower_disks(name) if name else ():
            out.setdefault(d, "the running system swaps on it")
    return out


def _mounted_parts(disk: str) -> list[str]:
    """Mount points of the disk or any of its partitions."""
    names = {disk} | {p.name for p in (Path("/sys/class/block") / disk).glob(f"{disk}*")}
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        src, mp = line.split()[:2]
        if src.startswith("/dev/") and _block_name(Path(src)) in names:
            out.append(f"{src} on {mp}")
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        if _block_name(Path(line.split()[0])) in names:
            out.append(f"{line.split()[0]} as swap")
    return out


def check_block_target(dev: Path) -> int:
    """Refuse a mounted, in-use or system disk; return its size in bytes."""
    name = _block_name(dev)
    if name is None:
        raise Refused(f"{dev}: not a block device this kernel knows")
    if (Path("/sys/class/block") / name / "partition").exists():
        raise Refused(f"{dev} is a partition; give the whole disk")
    why = _system_disks().get(name)
    if why:
        raise Refused(f"{dev} is part of the running system: {why}")
    mounted = _mounted_parts(name)
    if mounted:
        raise Refused(f"{dev} is mounted: {', '.join(mounted)}")
    holders = [h.name for h in (Path("/sys/class/block") / name / "holders").glob("*")]
    if holders:
        raise Refused(f"{dev} is in use by {', '.join(holders)}")
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_EXCL)  # the kernel's own "busy" check
        os.close(fd)
    except OSError as exc:
        raise Refused(f"{dev} is busy ({exc.strerror})") from None
    return int(_run(["blockdev", "--getsize64", str(dev)]).strip())


def check_file_target(path: Path, size: int | None) -> int:
    if path.exists() and not path.is_file():
        raise Refused(f"{path} is neither a block device nor a regular file")
    if path.exists():
        attached = _run(["losetup", "-j", str(path)]).strip()
        if attached:
            raise Refused(f"{path} is in use by a loop device: {attached.splitlines()[0]}")
    if size is not None:
        return max(size, path.stat().st_size if path.exists() else 0)
    if not path.exists():
        raise Refused(f"{path} does not exist: give --size to create it")
    return path.stat().st_size


# -- sources ------------------------------------------------------------------------


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


def _children_cpu() -> float:
    """User + system seconds of the child processes waited for so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _grow_pipe(fd: int) -> None:
    """A 1 MiB pipe buffer (Linux F_SETPIPE_SZ); the default 64 KiB if refused."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError as exc:
        log.debug("pipe buffer stays at its default size: %s", exc)


def _tar_progress(line: str) -> int | None:
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
    res = subprocess.run(_rsync_argv(src, "/nonexistent-dsas-dry-run/", ["-n", "--stats"]),
                         capture_output=True, text=True, timeout=120)
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


def _rsync_argv(src: Source, dest: str, extra: list[str]) -> list[str]:
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


# -- doing it -------------------------------------------------------------------------


class Cloner:
    def __init__(self, plan: Plan, progress: Progress = _noprogress,
                 say: Callable[[str], None] = print):
        self.plan = plan
        self.progress = progress
        self.say = say
        self.loops: dict[int, str] = {}  # partition number -> /dev/loopN
        self.mounts: list[Path] = []
        self.work = Path(tempfile.mkdtemp(prefix="dsas-clone-"))
        self.root = self.work / "root"
        self.stats: dict[str, Any] = {}

    # loop devices and mounts, always undone

    def attach(self, p: disklayout.Part) -> str:
        dev = _run(["losetup", "--find", "--show", "--offset", str(p.start), "--sizelimit",
                    str(p.size), str(self.plan.target)]).strip()
        self.loops[p.number] = dev
        return dev

    def mount(self, dev: str, at: Path, options: str = "") -> None:
        at.mkdir(parents=True, exist_ok=True)
        _run(["mount", *(["-o", options] if options else []), dev, str(at)])
        self.mounts.append(at)

    def unmount_all(self) -> None:
        for at in reversed(self.mounts):
            subprocess.run(["umount", str(at)], capture_output=True, timeout=120)
        self.mounts.clear()

    def detach_loops(self, timeout: float = 15) -> None:
        """Detach our loop devices and wait (bounded) until the kernel has let them go.

        A loop device still busy (a file system being torn down) is only marked for
        auto-clear by `losetup -d`; waiting here means no caller ever sees the target
        still attached after we return.
        """
        for dev in self.loops.values():
            subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)
        deadline = time.monotonic() + timeout
        for dev in self.loops.values():
            backing = Path("/sys/block") / Path(dev).name / "loop" / "backing_file"
            while backing.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
                subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)
        self.loops.clear()

    def cleanup(self) -> None:
        self.unmount_all()
        self.detach_loops()
        shutil.rmtree(self.work, ignore_errors=True)

    # steps

    def wipe(self) -> None:
        """No partition table from here until the very last step."""
        t = self.plan.target
        if not self.plan.is_block:
            with t.open("ab") as f:
                f.truncate(self.plan.size)
        with t.open("r+b") as f:
            f.write(b"\0" * MIB)
            f.seek(max(self.plan.size - MIB, MIB))
            f.write(b"\0" * MIB)
            f.flush()
            os.fsync(f.fileno())
        self.say(f"wiped the partition table of {t}: unusable until the clone completes")

    def make_filesystems(self) -> None:
        for p in self.plan.layout.parts:
            if p.part == "bios":
                continue
            dev = self.attach(p)
            label = p.part
            if p.fstype == "swap":
                _run(["mkswap", "-U", p.uuid, "-L", label, dev])
            elif p.fstype.startswith("ext"):
                _run([f"mkfs.{p.fstype}", "-F", "-q", "-U", p.uuid, "-L", label, dev])
            elif p.fstype == "xfs":
                _run(["mkfs.xfs", "-f", "-q", "-m", f"uuid={p.uuid}", "-L", label, dev])
            elif p.fstype == "vfat":
                _run(["mkfs.vfat", "-i", p.uuid.replace("-", "")[:8], "-n", label.upper(), dev])
                p.uuid = f"{p.uuid.replace('-', '')[:4]}-{p.uuid.replace('-', '')[4:8]}".upper()
            self.say(f"  {p.part}: {p.fstype} on {dev} ({p.size / MIB:.0f} MiB)")

    def mount_target(self, options: str = "") -> None:
        lo = self.plan.layout
        for p in lo.mount_order():
            at = self.root / lo.mount_point_of(p).lstrip("/")
            self.mount(self.loops[p.number], at, options)

    def copy(self) -> None:
        started, cpu = time.monotonic(), _children_cpu()
        if self.plan.source.kind == "image":
            done = self._copy_image()
        else:
            done = self._copy_peer()
        for at in self.mounts:  # on the disk, not just in the page cache
            _run(["sync", "--file-system", str(at)])
        self.stats["copy_bytes"] = done
        self.stats["copy_seconds"] = time.monotonic() - started
        self.stats["copy_cpu_seconds"] = _children_cpu() - cpu

    def _copy_image(self) -> int:
        """gunzip | tar, with a 1 MiB pipe and 1 MiB tar records (the default 64 KiB
        pipe and 10 KiB records cost more CPU than the decompression itself); the
        archive never passes through Python. tar's checkpoints give the progress."""
        src = self.plan.source
        assert src.path is not None
        archive = src.path / boot_layout.ROOTFS
        gunzip = gunzip_program()
        self.stats["gunzip"] = gunzip
        tar_argv = ["tar", "-b", str(TAR_BLOCKING), "-xpf", "-", "--numeric-owner",
                    "-C", str(self.root), f"--checkpoint={TAR_CHECKPOINT}",
                    f"--checkpoint-action=echo={TAR_PROGRESS} %{{r}}T"]
        procs: list[subprocess.Popen[Any]] = []
        with tempfile.TemporaryFile("w+") as gz_err:
            try:
                with deferred_interrupts():  # never a child started but not in procs
                    unzip = subprocess.Popen([gunzip, "-dc", str(archive)],
                                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=gz_err)
                    procs.append(unzip)
                    assert unzip.stdout is not None
                    _grow_pipe(unzip.stdout.fileno())
                    tar = subprocess.Popen(tar_argv, stdin=unzip.stdout,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           text=True)
                    procs.append(tar)
                    unzip.stdout.close()  # tar holds the read end now
                err = self._follow_tar(tar, src.size)
                gz_rc = unzip.wait(timeout=60)
            except BaseException:
                for proc in procs:
                    proc.kill()
                    proc.wait(timeout=60)
                raise
            gz_err.seek(0)
            err = (gz_err.read() + " " + err).strip()
        if tar.returncode != 0 or gz_rc != 0:
            raise CloneError(f"unpacking {archive} failed: {err[-300:]}")
        self.progress("copy", src.size, src.size)
        return src.size

    def _follow_tar(self, tar: subprocess.Popen[str], total: int) -> str:
        """Progress from tar's checkpoint lines until it exits; its other stderr lines."""
        assert tar.stderr is not None
        err: list[str] = []
        with tar.stderr:
            for line in tar.stderr:  # ends when tar exits
                done = _tar_progress(line)
                if done is None:
                    err.append(line.rstrip())
                else:
                    self.progress("copy", min(done, total - 1), total)
        tar.wait(timeout=600)
        return " ".join(err)

    def _copy_peer(self) -> int:
        src = self.plan.source
        argv = _rsync_argv(src, str(self.root) + "/", ["--info=progress2", "--no-inc-recursive"])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                bufsize=1)
        assert proc.stdout is not None
        buf = ""
        while True:
            ch = proc.stdout.read(1)
            if not ch:
                break
            if ch in "\r\n":
                fields = buf.split()
                if fields and fields[0].replace(",", "").isdigit():
                    self.progress("copy", int(fields[0].replace(",", "")), src.size)
                buf = ""
            else:
                buf += ch
        err = proc.stderr.read() if proc.stderr else ""
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
        if proc.wait(timeout=600) not in (0,):
            raise CloneError(f"rsync from {src.peer_address} failed: {err.strip()[-300:]}")
        return src.size

    def host_files(self) -> None:
        r, plan = self.root, self.plan
        etc = r / "etc"
        etc.mkdir(exist_ok=True)
        _write(etc / "dsas.conf", plan.conf, 0o644)
        _write(etc / "fstab", disklayout.fstab(plan.layout), 0o644)
        _write(etc / "hostname", plan.host.name + "\n", 0o644)
        fqdn = f"{plan.host.name}.{plan.source.manifest.get('domain', '')}".rstrip(".")
        addr = plan.host.primary_interface.address
        _write(etc / "hosts", f"127.0.0.1 localhost\n{addr} {fqdn} {plan.host.name}\n", 0o644)
        _write(etc / "machine-id", "", 0o444)
        ssh = etc / "ssh"
        ssh.mkdir(exist_ok=True)
        for old in ssh.glob("ssh_host_*"):
            old.unlink()
        _run(["ssh-keygen", "-A", "-f", str(r)])
        record = r / "var/lib/dsas"
        record.mkdir(parents=True, exist_ok=True)
        _write(record / "clone.json", _json({
            "host": plan.host.name, "source": plan.source.describe(),
            "image": plan.source.image, "version": plan.source.version,
            "cloned": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}), 0o644)
        self.say(f"  wrote /etc/dsas.conf ({plan.host.name}), fstab, hostname, hosts, "
                 "fresh SSH host keys")

    def boot_loader(self) -> None:
        lo, plan = self.plan.layout, self.plan
        boot_dir = self.root / "boot"
        boot_dir.mkdir(exist_ok=True)
        kernels = sorted(boot_dir.glob("vmlinuz-*"))
        if kernels:
            kernel = kernels[-1]
            initrd = boot_dir / kernel.name.replace("vmlinuz-", "initrd.img-", 1)
        elif plan.source.path is not None:  # a busybox image: its netboot kernel
            kernel, initrd = boot_dir / "vmlinuz", boot_dir / "initrd.img"
            shutil.copyfile(plan.source.path / boot_layout.KERNEL, kernel)
            shutil.copyfile(plan.source.path / boot_layout.INITRD, initrd)
        else:
            raise CloneError("no kernel in /boot of the copied tree")
        if not initrd.is_file():
            raise CloneError(f"no initrd for {kernel.name} in /boot")
        prefix = "/" if lo.boot is not lo.root else "/boot/"
        ext = boot_dir / "extlinux"
        ext.mkdir(exist_ok=True)
        _write(ext / "extlinux.conf",
               disklayout.extlinux_conf(lo, prefix + kernel.name, prefix + initrd.name,
                                        plan.append), 0o644)
        _run(["extlinux", "--install", str(ext)])
        self.say(f"  extlinux on the {lo.boot.part} partition: {kernel.name}")

    def verify(self) -> list[str]:
        src = self.plan.source
        started = time.monotonic()
        if src.kind == "image":
            want = entries(src.manifest)
            total = sum(e.size or 0 for e in want.values())
            done = [0]

            def tick(n: int) -> None:
                done[0] += n
                self.progress("verify", done[0], total or src.size)
            problems, nbytes = verify_tree(self.root, want, HOST_FILES | _ssh_keys(want), tick)
            self.progress("verify", nbytes, nbytes)
            self.stats["verified_files"] = sum(1 for e in want.values() if e.type == "file")
        else:
            out = _run(_rsync_argv(src, str(self.root) + "/",
                                   ["-n", "-c", "--itemize-changes", "--delete"]), timeout=900)
            problems = [f"differs from the peer: {line}" for line in out.splitlines()
                        if line.strip() and not line.startswith(".d..t")]
            nbytes = src.size
        self.stats["verify_seconds"] = time.monotonic() - started
        self.stats["verify_bytes"] = nbytes
        return problems

    def fsck(self) -> None:
        for p in self.plan.layout.parts:
            if p.fstype.startswith("ext"):
                res = subprocess.run(["e2fsck", "-f", "-n", self.loops[p.number]],
                                     capture_output=True, text=True, timeout=600)
            elif p.fstype == "xfs":
                res = subprocess.run(["xfs_repair", "-n", self.loops[p.number]],
                                     capture_output=True, text=True, timeout=600)
            else:
                continue
            if res.returncode != 0:
                raise CloneError(f"fsck of the {p.part} partition is not clean: "
                                 f"{res.stdout.strip()[-300:]}")
        self.say("  fsck: every file system clean")

    def write_table(self) -> None:
        """The last step: the partition table and the boot code."""
        t, lo = self.plan.target, self.plan.layout
        self.detach_loops()
        script = disklayout.sfdisk_script(lo, str(t))
        _run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(t)], input=script)
        mbr = _extlinux_file("gptmbr.bin" if lo.label == "gpt" else "mbr.bin")
        with t.open("r+b") as f:
            f.write(mbr.read_bytes()[:440])
            f.flush()
            os.fsync(f.fileno())
        if self.plan.is_block:
            subprocess.run(["blockdev", "--rereadpt", str(t)], capture_output=True, timeout=60)
        self.say(f"wrote the {lo.label} partition table and boot code: {t} is ready")

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.wipe()
        try:
            self.say("making file systems")
            self.make_filesystems()
            self.mount_target()
            self.say(f"copying {self.plan.source.describe()}")
            self.copy()
            self.host_files()
            self.boot_loader()
            _run(["sync"])
            self.say("verifying")
            problems = self.verify()
            if problems:
                for p in problems[:20]:
                    self.say(f"  MISMATCH {p}")
                raise CloneError(f"verification failed: {len(problems)} difference(s)")
            self.unmount_all()
            self.fsck()
            self.write_table()
        except BaseException:
            self.unmount_all()
            raise
        finally:
            self.cleanup()
        self.stats["seconds"] = time.monotonic() - started
        return self.stats


def _ssh_keys(want: dict[str, Any]) -> set[str]:
    return {p for p in want if p.startswith("etc/ssh/ssh_host_")}


def _extlinux_file(name: str) -> Path:
    for d in EXTLINUX_DIRS:
        if (Path(d) / name).is_file():
            return Path(d) / name
    raise CloneError(f"{name} not found (Debian package syslinux-common / extlinux)")


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _json(obj: Any) -> str:
    import json
    return json.dumps(obj, indent=1, sort_keys=True) + "\n"


_deferred = {"depth": 0, "pending": 0}


def _interrupt(signum: int, frame: Any) -> None:
    if _deferred["depth"]:
        _deferred["pending"] = signum
        return
    raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Ctrl-C or SIGTERM inside waits until the block is done (say, until a child
    process is started and known, so that it can be killed)."""
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
        if not _deferred["depth"] and _deferred["pending"]:
            _deferred["pending"] = 0
            raise KeyboardInterrupt


@contextmanager
def interrupts_as_errors() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so cleanup and the 'unusable' message run."""
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
