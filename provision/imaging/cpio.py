"""The "newc" cpio format that the Linux kernel unpacks as an initramfs.

Pure codec: entries in, bytes out (and back, for tests and verification).
Reference: the kernel's Documentation/driver-api/early-userspace/buffer-format.rst.
Every header is "070701" and 13 eight-digit hex fields; the name (NUL-terminated)
and the data are each padded to a multiple of 4 bytes.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

MAGIC = b"070701"  # newc, no checksum
TRAILER = "TRAILER!!!"
_HEADER_LEN = 110


class CpioError(ValueError):
    """A malformed archive; carries the byte offset of the problem."""

    def __init__(self, offset: int, reason: str):
        self.offset = offset
        super().__init__(f"cpio: offset {offset}: {reason}")


@dataclass(frozen=True)
class CpioEntry:
    """One member of a newc cpio archive."""

    name: str  # relative path, no leading slash
    mode: int  # full st_mode: type bits | permissions
    data: bytes = b""  # file contents, or the link target for symlinks
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes
    mtime: int = 0
    uid: int = 0
    gid: int = 0


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _header(entry: CpioEntry, ino: int) -> bytes:
    name = entry.name.encode("utf-8", "surrogateescape") + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (
        ino, entry.mode, entry.uid, entry.gid, nlink, entry.mtime, len(entry.data),
        0, 0, entry.rdev[0], entry.rdev[1], len(name), 0,
    )
    head = MAGIC + b"".join(f"{f:08x}".encode() for f in fields)
    return head + name + b"\0" * _pad4(len(head) + len(name))


def member(entry: CpioEntry, ino: int) -> bytes:
    """One entry of an archive as written (its header, name and data, padded);
    ``ino`` unique in the archive (cpio takes equal ones for hard links)."""
    return _header(entry, ino) + entry.data + b"\0" * _pad4(len(entry.data))


def trailer() -> bytes:
    """What ends an archive."""
    return _header(CpioEntry(TRAILER, 0), 0)


def pack(entries: list[CpioEntry]) -> bytes:
    """An archive of `entries` in the given order, ending with the trailer."""
    return b"".join(member(e, ino) for ino, e in enumerate(entries, start=1)) + trailer()


def unpack(blob: bytes) -> list[CpioEntry]:
    """Entries of a newc archive, up to the trailer. Raises CpioError."""
    entries: list[CpioEntry] = []
    off = 0
    while True:
        if off + _HEADER_LEN > len(blob):
            raise CpioError(off, "truncated header")
        if blob[off : off + 6] != MAGIC:
            raise CpioError(off, f"bad magic {blob[off:off + 6]!r}")
        try:
            f = [int(blob[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise CpioError(off, "non-hex header field") from None
        mode, uid, gid, mtime, size, rmaj, rmin, namesize = (
            f[1], f[2], f[3], f[5], f[6], f[9], f[10], f[11],
        )
        name_end = off + _HEADER_LEN + namesize
        if namesize == 0 or name_end > len(blob):
            raise CpioError(off, "bad name size")
        name = blob[off + _HEADER_LEN : name_end - 1].decode()
        data_off = name_end + _pad4(name_end)
        if name == TRAILER:
            return entries
        if data_off + size > len(blob):
            raise CpioError(data_off, f"truncated data for {name}")
        data = blob[data_off : data_off + size]
        entries.append(CpioEntry(name, mode, data, (rmaj, rmin), mtime, uid, gid))
        off = data_off + size + _pad4(size)
