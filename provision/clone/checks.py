"""Checks on the target before anything is written: not mounted, not in use, not
the running system's disk, big enough."""

from __future__ import annotations

import os
from pathlib import Path

from .. import proc
from .model import STEP_TIMEOUT, Refused


def block_name(dev: Path) -> str | None:
    """The /sys/class/block name of a block device node."""
    try:
        rdev = dev.stat().st_rdev
    except OSError:
        return None
    link = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    return link.resolve().name if link.exists() else None


def disk_of(name: str) -> str:
    """sda for sda3, loop0 for loop0p1; the name itself for a whole disk."""
    path = Path("/sys/class/block") / name
    if (path / "partition").exists():
        return path.resolve().parent.name
    return name


def _lower_disks(name: str, depth: int = 0) -> set[str]:
    """The disks under a block device (through dm/md slaves), itself included."""
    out = {disk_of(name)}
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
            name = block_name(Path(src))
            for d in _lower_disks(name) if name else ():
                out.setdefault(d, f"it holds the running system's {mp}")
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        name = block_name(Path(line.split()[0]))
        for d in _lower_disks(name) if name else ():
            out.setdefault(d, "the running system swaps on it")
    return out


def _mounted_parts(disk: str) -> list[str]:
    """Mount points of the disk or any of its partitions."""
    names = {disk} | {p.name for p in (Path("/sys/class/block") / disk).glob(f"{disk}*")}
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        src, mp = line.split()[:2]
        if src.startswith("/dev/") and block_name(Path(src)) in names:
            out.append(f"{src} on {mp}")
    for line in Path("/proc/swaps").read_text().splitlines()[1:]:
        if block_name(Path(line.split()[0])) in names:
            out.append(f"{line.split()[0]} as swap")
    return out


def check_block_target(dev: Path) -> int:
    """Refuse a mounted, in-use or system disk; return its size in bytes."""
    name = block_name(dev)
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
    return int(proc.run(["blockdev", "--getsize64", str(dev)], timeout=STEP_TIMEOUT).stdout.strip())


def check_file_target(path: Path, size: int | None) -> int:
    if path.exists() and not path.is_file():
        raise Refused(f"{path} is neither a block device nor a regular file")
    if path.exists():
        attached = proc.run(["losetup", "-j", str(path)], timeout=STEP_TIMEOUT).stdout.strip()
        if attached:
            raise Refused(f"{path} is in use by a loop device: {attached.splitlines()[0]}")
    if size is not None:
        return max(size, path.stat().st_size if path.exists() else 0)
    if not path.exists():
        raise Refused(f"{path} does not exist: give --size to create it")
    return path.stat().st_size
