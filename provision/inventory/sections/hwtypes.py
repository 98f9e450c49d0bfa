"""hwtypes: hardware types — NIC names in order, the disk layout, modules, firmware."""

from __future__ import annotations

import re
from typing import Any

from ..model import DISK_PARTS, FIRMWARES, HwType, Partition
from ..reader import DEVICE, NIC, Reader

KEYS = {"nics", "disk", "modules", "firmware"}
PARTITION_KEYS = {"device", "size", "fstype", "mount"}
FSTYPES = ("ext4", "ext3", "ext2", "xfs", "vfat", "swap")
DEFAULT_FS = {"boot": "ext4", "swap": "swap", "db": "ext4", "fs": "ext4"}
DEFAULT_MOUNT = {"boot": "/boot", "swap": None, "db": "/var/lib/db", "fs": "/srv"}
SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|)$", re.IGNORECASE)
UNITS = {"": 1, "K": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def hwtypes(r: Reader, data: dict[str, Any]) -> dict[str, HwType]:
    section = r.mapping(data, "hwtypes", "hwtypes", optional=True) or {}
    out: dict[str, HwType] = {}
    for name, path, h in r.entries(section, "hwtypes", KEYS, ("nics",)):
        nics = _nics(r, h, path)
        disk_dev, label, parts = _disk(r, h, path)
        mods = r.modules(h, "modules", path)
        fw_list = r.seq(h, "firmware", path)
        firmware = _firmware(r, fw_list, path)
        out[str(name)] = HwType(str(name), nics, disk_dev, label, tuple(parts), mods,
                                firmware if fw_list else FIRMWARES)
    r.mark_broken("hardware type", section, out)
    return out


def _nics(r: Reader, h: dict[str, Any], path: str) -> tuple[str, ...]:
    nics: list[str] = []
    nic_list = r.seq(h, "nics", path, required=True)
    for i, nic in enumerate(nic_list):
        if not NIC.match(str(nic)):
            r.err(nic_list, i, f"{path}.nics[{i}]", f"invalid interface name {nic!r}")
        elif str(nic) in nics:
            r.err(nic_list, i, f"{path}.nics[{i}]", f"{nic} is listed twice")
        else:
            nics.append(str(nic))
    return tuple(nics)


def _firmware(r: Reader, fw_list: list[Any], path: str) -> tuple[str, ...]:
    firmware: list[str] = []
    for i, fw in enumerate(fw_list):
        if str(fw) not in FIRMWARES:
            r.err(fw_list, i, f"{path}.firmware[{i}]",
                  f"{fw!r} is not one of: {', '.join(FIRMWARES)}")
        elif str(fw) not in firmware:
            firmware.append(str(fw))
    return tuple(firmware)


def _disk(r: Reader, h: dict[str, Any],
          path: str) -> tuple[str | None, str, list[Partition]]:
    """(device, label, partitions) of hwtypes.X.disk; (None, "gpt", []) without one."""
    d = r.mapping(h, "disk", f"{path}.disk", {"device", "label", *DISK_PARTS}, optional=True)
    if d is None:
        return None, "gpt", []
    disk_dev = r.string(d, "device", f"{path}.disk", pattern=DEVICE, what="device")
    label = r.choice(d, "label", f"{path}.disk", ("gpt", "msdos"), "gpt")
    return disk_dev, label, _partitions(r, d, f"{path}.disk")


def _partitions(r: Reader, d: dict[str, Any], path: str) -> list[Partition]:
    parts = []
    rest_seen = False
    for part in DISK_PARTS:
        pp = partition(r, d, part, f"{path}.{part}")
        if pp is None:
            continue
        if pp.size_mib is None:
            if rest_seen:
                r.err(d, part, f"{path}.{part}.size",
                      "only one partition may take the rest of the disk")
            rest_seen = True
        parts.append(pp)
    devs = [p.device for p in parts]
    for p in parts:
        if devs.count(p.device) > 1:
            r.err(d, p.part, f"{path}.{p.part}.device",
                  f"{p.device} is used by more than one partition")
    return parts


def partition(r: Reader, d: dict[str, Any], part: str, path: str) -> Partition | None:
    p = r.mapping(d, part, path, PARTITION_KEYS, ("device", "size"), optional=True)
    if p is None:
        return None
    dev = r.string(p, "device", path, pattern=DEVICE, what="device")
    size = parse_size(p.get("size"))
    if size is False:
        r.err(p, "size", f"{path}.size",
              f"invalid size {p.get('size')!r} (use e.g. 512M, 20G or 'rest')")
    fstype = r.choice(p, "fstype", path, FSTYPES, DEFAULT_FS[part])
    if (part == "swap") != (fstype == "swap"):
        r.err(p, "fstype", f"{path}.fstype", "only the swap partition may be swap")
    mount = r.string(p, "mount", path, default=DEFAULT_MOUNT[part],
                     pattern=re.compile(r"^/[A-Za-z0-9/_.-]*$"), what="mount point")
    if dev is None or size is False:
        return None
    return Partition(part, dev, size, fstype, mount if part != "swap" else None)


def parse_size(v: Any) -> int | None | bool:
    """Size in MiB; None for 'rest'; False if malformed."""
    if v is None:
        return False
    if isinstance(v, int) and not isinstance(v, bool):
        return v if v > 0 else False
    s = str(v).strip()
    if s.lower() == "rest":
        return None
    m = SIZE.match(s)
    if not m:
        return False
    n = int(m.group(1))
    unit = m.group(2)[:1].upper()
    if unit == "K":
        return max(1, n // 1024) if n else False
    mib = n * UNITS[unit]
    return mib if mib > 0 else False
