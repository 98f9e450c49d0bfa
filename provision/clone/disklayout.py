"""Disk layouts for dsas-clone (pure: no I/O).

A host's hardware type says which partitions its disk has (boot, swap, db, fs:
device, size, file system, mount point). This module turns that into sectors
on a target of a given size, and into the sfdisk script, fstab and boot loader
configuration that go with it. The root file system is the partition mounted
at "/"; without one, the boot partition holds the whole system (as in the
seed, where BTDEVICE=/dev/sda1 was the disk's only file system).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from ..errors import DsasError
from ..inventory.model import HwType

SECTOR = 512
MIB = 1 << 20
ALIGN = MIB  # partitions start on MiB boundaries
GPT_RESERVED = MIB  # the backup GPT at the end of the disk (33 sectors, rounded up)
BIOS_BOOT_FIRST, BIOS_BOOT_LAST = 34, 2047  # GPT: a BIOS boot partition in the gap (GRUB)
MIN_REST = 64 * MIB  # "rest" must leave at least this much

GPT_TYPES = {"linux": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
             "swap": "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F",
             "bios": "21686148-6449-6E6F-744E-656564454649"}
MSDOS_TYPES = {"linux": "83", "swap": "82"}


class LayoutError(DsasError, ValueError):
    """The host's disk layout does not fit the target."""


@dataclass
class Part:
    """One partition of the target disk, in bytes."""

    part: str  # boot | swap | db | fs | bios
    number: int
    device: str  # as the inventory names it (/dev/sda1)
    start: int  # bytes
    size: int  # bytes
    fstype: str  # ext4 | xfs | swap | ...; "" for the BIOS boot partition
    mountpoint: str | None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def is_fs(self) -> bool:
        return self.fstype not in ("", "swap")


@dataclass
class Layout:
    """The partition table a hardware type's disk gets, fitted to the target's size."""

    label: str  # gpt | msdos
    disk: str  # the inventory's disk device (/dev/sda)
    size: int  # target bytes
    parts: list[Part]
    skipped: list[str]  # partitions of the hwtype on other disks

    @property
    def root(self) -> Part:
        for p in self.parts:
            if p.mountpoint == "/":
                return p
        boot = self.by_part("boot")
        if boot is None:
            raise LayoutError("no partition is mounted at / and there is no boot partition")
        return boot

    @property
    def boot(self) -> Part:
        return self.by_part("boot") or self.root

    def by_part(self, part: str) -> Part | None:
        return next((p for p in self.parts if p.part == part), None)

    def mount_order(self) -> list[Part]:
        """File systems in the order to mount them: the root first, then by depth."""
        root = self.root
        rest = [p for p in self.parts if p.is_fs and p is not root and p.mountpoint]
        return [root] + sorted(rest, key=lambda p: (p.mountpoint or "").count("/"))

    def mount_point_of(self, p: Part) -> str:
        return "/" if p is self.root else (p.mountpoint or "")


def part_number(disk: str, device: str) -> int | None:
    """3 for (/dev/sda, /dev/sda3) or (/dev/nvme0n1, /dev/nvme0n1p3); None: another disk."""
    m = re.fullmatch(re.escape(disk) + r"p?(\d+)", device)
    return int(m.group(1)) if m else None


def parse_size(text: str) -> int:
    """'2G', '512M', '1048576' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise ValueError(f"{text!r} is not a size like 2G or 512M")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def plan(hw: HwType, target_size: int, root_needs: int) -> Layout:
    """Lay hw's disk partitions out on target_size bytes; root_needs: bytes of the image."""
    if hw.disk is None or not hw.partitions:
        raise LayoutError(f"hardware type {hw.name} has no disk layout (hwtypes.{hw.name}.disk)")
    mine, skipped = [], []
    for p in hw.partitions:
        n = part_number(hw.disk, p.device)
        if n is None:
            skipped.append(f"{p.part} ({p.device}: not on {hw.disk})")
        else:
            mine.append((n, p))
    mine.sort(key=lambda t: t[0])
    if hw.label == "msdos" and any(n > 4 for n, _ in mine):
        raise LayoutError(f"hardware type {hw.name}: msdos labels have partitions 1-4 only")
    end_reserve = GPT_RESERVED if hw.label == "gpt" else 0
    fixed = sum(_align((p.size_mib or 0) * MIB) for _, p in mine)
    usable = target_size - ALIGN - end_reserve
    rest = usable - fixed
    if any(p.size_mib is None for _, p in mine) and rest < MIN_REST:
        raise LayoutError(f"target is too small: {target_size / MIB:.0f} MiB; the fixed "
                          f"partitions need {fixed / MIB:.0f} MiB plus at least "
                          f"{MIN_REST / MIB:.0f} MiB for the rest")
    if rest < 0:
        raise LayoutError(f"target is too small: {target_size / MIB:.0f} MiB; the "
                          f"partitions need {(fixed + ALIGN + end_reserve) / MIB:.0f} MiB")
    parts, offset = [], ALIGN
    for n, p in mine:
        size = _align(p.size_mib * MIB) if p.size_mib is not None else rest // ALIGN * ALIGN
        parts.append(Part(p.part, n, p.device, offset, size, p.fstype, p.mountpoint))
        offset += size
    if hw.label == "gpt":
        bios_n = max(n for n, _ in mine) + 1
        parts.append(Part("bios", bios_n, f"{hw.disk}{bios_n}", BIOS_BOOT_FIRST * SECTOR,
                          (BIOS_BOOT_LAST - BIOS_BOOT_FIRST + 1) * SECTOR, "", None))
    layout = Layout(hw.label, hw.disk, target_size, parts, skipped)
    root = layout.root
    if root.size < root_needs:
        raise LayoutError(f"target is too small: the root file system ({root.part}, "
                          f"{root.size / MIB:.0f} MiB) cannot hold the image "
                          f"({root_needs / MIB:.0f} MiB with room for metadata)")
    return layout


def sfdisk_script(layout: Layout, target: str) -> str:
    """The partition table, for `sfdisk TARGET` (numbered lines keep inventory numbers)."""
    lines = [f"label: {'dos' if layout.label == 'msdos' else 'gpt'}", "unit: sectors"]
    if layout.label == "gpt":
        lines.append(f"first-lba: {BIOS_BOOT_FIRST}")
    boot = layout.boot
    for p in sorted(layout.parts, key=lambda p: p.number):
        kind = "bios" if p.part == "bios" else ("swap" if p.fstype == "swap" else "linux")
        types = GPT_TYPES if layout.label == "gpt" else MSDOS_TYPES
        fields = [f"start={p.start // SECTOR}", f"size={p.size // SECTOR}", f"type={types[kind]}"]
        if layout.label == "gpt":
            fields.append(f"name={p.part}")
            if p is boot:
                fields.append('attrs="LegacyBIOSBootable"')
        elif p is boot:
            fields.append("bootable")
        sep = "p" if target[-1:].isdigit() else ""  # /dev/loop0p1, /dev/sda1, disk.img1
        lines.append(f"{target}{sep}{p.number} : " + ", ".join(fields))
    return "\n".join(lines) + "\n"


def fstab(layout: Layout) -> str:
    lines = ["# /etc/fstab written by dsas-clone; devices by UUID",
             "# <file system>  <mount point>  <type>  <options>  <dump>  <pass>"]
    for p in layout.mount_order():
        mp = layout.mount_point_of(p)
        passno, opts = (1, "defaults,errors=remount-ro") if mp == "/" else (2, "defaults")
        lines.append(f"UUID={p.uuid}  {mp}  {p.fstype}  {opts}  0  {passno}")
    swap = layout.by_part("swap")
    if swap:
        lines.append(f"UUID={swap.uuid}  none  swap  sw  0  0")
    return "\n".join(lines) + "\n"


def extlinux_conf(layout: Layout, kernel: str, initrd: str, append: str) -> str:
    """kernel and initrd: paths relative to the boot file system's root."""
    if "\n" in append:
        raise LayoutError("kernel command line must be one line")
    return (
        "# written by dsas-clone\n"
        "DEFAULT dsas\nPROMPT 0\nTIMEOUT 1\n"
        "LABEL dsas\n"
        f"  LINUX {kernel}\n"
        f"  INITRD {initrd}\n"
        f"  APPEND root=UUID={layout.root.uuid} ro {append}".rstrip() + "\n"
    )
