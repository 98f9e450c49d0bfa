"""An in-memory file tree that becomes an initramfs (cpio) or a root fs (tar).

Everything is normalised for reproducible output: owner root, mtime fixed,
entries sorted by path, parents before children. The fingerprint is a sha256
over exactly what goes into the archive, so it is the tree's content hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
import tarfile
from dataclasses import dataclass

from . import cpio

# A fixed timestamp for every entry (reproducible archives). 2000-01-01 UTC.
EPOCH = 946684800


@dataclass(frozen=True)
class Node:
    """One path of a ``Tree``: directory, file, symlink or device node."""

    kind: str  # "dir" | "file" | "symlink" | "chardev"
    perm: int
    data: bytes = b""  # file contents or symlink target
    rdev: tuple[int, int] = (0, 0)

    @property
    def mode(self) -> int:
        kinds = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK,
                 "chardev": stat.S_IFCHR}
        return kinds[self.kind] | self.perm

    def digest(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def _norm(path: str) -> str:
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"bad path in image tree: {path!r}")
    return "/".join(parts)


class Tree:
    """The file tree of an image being built, normalised for reproducible archives."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}

    def mkdir(self, path: str, perm: int = 0o755) -> None:
        path = _norm(path)
        parent = path.rpartition("/")[0]
        if parent:
            self.mkdir(parent)
        node = self.nodes.get(path)
        if node is None:
            self.nodes[path] = Node("dir", perm)
        elif node.kind != "dir":
            raise ValueError(f"{path}: exists and is not a directory")

    def _put(self, path: str, node: Node) -> None:
        path = _norm(path)
        parent = path.rpartition("/")[0]
        if parent:
            self.mkdir(parent)
        self.nodes[path] = node

    def file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._put(path, Node("file", perm, data))

    def symlink(self, path: str, target: str) -> None:
        self._put(path, Node("symlink", 0o777, target.encode()))

    def chardev(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._put(path, Node("chardev", perm, b"", (major, minor)))

    def __contains__(self, path: str) -> bool:
        return _norm(path) in self.nodes

    def sorted(self) -> list[tuple[str, Node]]:
        return sorted(self.nodes.items())

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for path, n in self.sorted():
            h.update(f"{path}\0{n.kind}\0{n.perm:o}\0{n.rdev}\0{n.digest()}\n".encode())
        return h.hexdigest()

    def listing(self) -> dict[str, str]:
        """path -> sha256 of each file, '-> target' of each symlink (manifests)."""
        out: dict[str, str] = {}
        for path, n in self.sorted():
            if n.kind == "file":
                out[path] = n.digest()
            elif n.kind == "symlink":
                out[path] = "-> " + n.data.decode()
        return out

    def to_cpio(self) -> bytes:
        entries = [cpio.CpioEntry(p, n.mode, n.data, n.rdev, EPOCH) for p, n in self.sorted()]
        return cpio.pack(entries)

    def to_tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path, n in self.sorted():
                tar.addfile(*_tarinfo(path, n))
        return buf.getvalue()


def _tarinfo(path: str, n: Node) -> tuple[tarfile.TarInfo, io.BytesIO | None]:
    info = tarfile.TarInfo(path)
    info.mode, info.mtime, info.uid, info.gid = n.perm, EPOCH, 0, 0
    info.uname = info.gname = "root"
    if n.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif n.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, n.data.decode()
    elif n.kind == "chardev":
        info.type, (info.devmajor, info.devminor) = tarfile.CHRTYPE, n.rdev
    else:
        info.size = len(n.data)
        return info, io.BytesIO(n.data)
    return info, None


def gzip_bytes(data: bytes) -> bytes:
    """gzip with no name and a zero timestamp, so equal input gives equal output."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()
