"""An image's content as its manifest lists it, and checks of real files against it.

Two listing formats exist in manifests: the busybox images list
`path -> sha256` (or `-> target` for symlinks); Debian images list
`path -> {type, mode, uid, gid, size, sha256 | target}`. `entries()` reads both.
Checks return problems as lines ("path: what differs"); [] means it matches.
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import layout
from .store import CURRENT, ImageStore


@dataclass(frozen=True)
class Entry:
    """One path of an image's manifest: its type and, by type, digest, size, mode."""

    type: str  # file | symlink | dir | chardev | blockdev | fifo
    sha256: str | None = None
    size: int | None = None
    mode: int | None = None
    target: str | None = None


def parse_ref(ref: str) -> tuple[str, str]:
    """'web' -> ('web', 'current'); 'web@3d7ae7dd' -> ('web', '3d7ae7dd')."""
    name, _, version = ref.partition("@")
    return name, version or CURRENT


def entries(manifest: dict[str, Any]) -> dict[str, Entry]:
    out: dict[str, Entry] = {}
    for path, v in (manifest.get("rootfs") or {}).items():
        if isinstance(v, str):
            if v.startswith("-> "):
                out[path] = Entry("symlink", target=v[3:])
            else:
                out[path] = Entry("file", sha256=v)
        elif isinstance(v, dict):
            mode = int(v["mode"], 8) if "mode" in v else None
            out[path] = Entry(v.get("type", "file"), v.get("sha256"), v.get("size"), mode,
                              v.get("target"))
    return out


def _sha256_stream(f: Any) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
        n += len(block)
    return h.hexdigest(), n


def _compare(path: str, want: Entry, kind: str, sha: str | None, size: int | None,
             mode: int | None, target: str | None) -> str | None:
    if kind != want.type:
        return f"{path}: is a {kind}, manifest says {want.type}"
    if want.type == "file":
        if want.sha256 and sha != want.sha256:
            return f"{path}: sha256 {sha}, manifest says {want.sha256}"
        if want.size is not None and size != want.size:
            return f"{path}: size {size}, manifest says {want.size}"
    if want.type == "symlink" and target != want.target:
        return f"{path}: links to {target}, manifest says {want.target}"
    if want.mode is not None and mode is not None and mode != want.mode:
        return f"{path}: mode {mode:04o}, manifest says {want.mode:04o}"
    return None


def verify_archive(store: ImageStore, image: str, version: str) -> list[str]:
    """Every entry of rootfs.tar.gz against the manifest's listing, both ways."""
    m = store.manifest(image, version) or {}
    want = entries(m)
    archive = store.dir(image, version) / layout.ROOTFS
    if not want or not archive.is_file():
        return []
    problems: list[str] = []
    seen: set[str] = set()
    kinds = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.LNKTYPE: "file",
             tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "chardev",
             tarfile.BLKTYPE: "blockdev", tarfile.FIFOTYPE: "fifo"}
    with tarfile.open(archive, "r:gz") as tar:
        for info in tar:
            path = info.name.strip("/").removeprefix("./")
            seen.add(path)
            if path not in want:
                if want and info.isfile():
                    problems.append(f"{path}: in the archive, not in the manifest")
                continue
            sha = size = None
            if info.isfile() or info.islnk():
                f = tar.extractfile(info)
                if f is not None:
                    sha, size = _sha256_stream(f)
            p = _compare(path, want[path], kinds.get(info.type, "other"), sha, size,
                         info.mode & 0o7777, info.linkname if info.issym() else None)
            if p:
                problems.append(p)
    problems += [f"{p}: in the manifest, not in the archive" for p in sorted(set(want) - seen)
                 if want[p].type in ("file", "symlink")]
    return problems


def verify_tree(root: Path, want: dict[str, Entry], skip: set[str] | None = None,
                progress: Any = None) -> tuple[list[str], int]:
    """Files and symlinks under root against the listing; returns (problems, bytes read)."""
    problems: list[str] = []
    total = 0
    skip = skip or set()
    for path, e in sorted(want.items()):
        if path in skip or e.type not in ("file", "symlink"):
            continue
        full = root / path
        try:
            st = full.lstat()
        except FileNotFoundError:
            problems.append(f"{path}: missing")
            continue
        if stat.S_ISLNK(st.st_mode):
            p = _compare(path, e, "symlink", None, None, None, str(full.readlink()))
        elif stat.S_ISREG(st.st_mode):
            with full.open("rb") as f:
                sha, size = _sha256_stream(f)
            total += size
            if progress:
                progress(size)
            p = _compare(path, e, "file", sha, size, stat.S_IMODE(st.st_mode), None)
        else:
            p = f"{path}: is neither a file nor a symlink"
        if p:
            problems.append(p)
    return problems, total
