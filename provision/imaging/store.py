"""The image store: `<store>/<image>/<version>/{vmlinuz,initrd.img,rootfs.tar.gz,
manifest.json}` (the layout of provision/layout.py) plus a `current` symlink per
image that points at the newest published version.

A version directory appears atomically (written beside it, then renamed) and is
never changed afterwards: versions are content hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import layout
from ..errors import DsasError
from ..fsio import atomic_write

CURRENT = "current"
MANIFEST_FORMAT = 1
ARTIFACTS = (layout.KERNEL, layout.INITRD, layout.ROOTFS)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dump_manifest(m: dict[str, Any]) -> str:
    """JSON with one line per artifact and per content file (easy to read from sh)."""
    lines = ["{"]
    items = list(m.items())
    for i, (key, value) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if isinstance(value, dict) and value:
            lines.append(f" {json.dumps(key)}: {{")
            sub = list(value.items())
            for j, (k, v) in enumerate(sub):
                c = "," if j < len(sub) - 1 else ""
                lines.append(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}{c}")
            lines.append(f" }}{comma}")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, sort_keys=True)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


class ImageStore:
    """The image store: images/<name>/<version>/ and the current pointer."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, image: str, version: str) -> Path:
        return self.root / image / version

    def manifest(self, image: str, version: str) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.dir(image, version) / layout.MANIFEST).read_text())
            return doc if isinstance(doc, dict) else None
        except (OSError, ValueError):
            return None

    def resolve(self, image: str, version: str = CURRENT) -> str | None:
        """The concrete version `version` names ('current' follows the symlink)."""
        path = self.dir(image, version)
        if not path.is_dir():
            return None
        return path.resolve().name

    def versions(self, image: str) -> list[str]:
        base = self.root / image
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir()
                      if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))

    def images(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[0] != ".")

    def verify(self, image: str, version: str) -> list[str]:
        """Problems with a published version; [] when every artifact matches."""
        m = self.manifest(image, version)
        if m is None:
            return [f"{image}/{version}: no readable {layout.MANIFEST}"]
        problems = []
        for name, want in sorted(m.get("files", {}).items()):
            path = self.dir(image, version) / name
            if not path.is_file():
                problems.append(f"{image}/{version}/{name}: missing")
            elif path.stat().st_size != want["size"] or sha256_file(path) != want["sha256"]:
                problems.append(f"{image}/{version}/{name}: sha256 mismatch")
        return problems

    def publish(self, image: str, version: str, artifacts: Mapping[str, bytes | Path],
                manifest: dict[str, Any]) -> Path:
        final = self.dir(image, version)
        tmp = self.root / image / f".tmp-{version}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for name, data in artifacts.items():
            if isinstance(data, Path):  # a large artifact already on disk: move it in
                shutil.move(data, tmp / name)
            else:
                (tmp / name).write_bytes(data)
        (tmp / layout.MANIFEST).write_text(dump_manifest(manifest))
        for p in tmp.iterdir():
            with p.open("rb") as f:
                os.fsync(f.fileno())
        if final.exists():  # a broken earlier copy: replace it
            shutil.rmtree(final)
        os.rename(tmp, final)
        self.set_current(image, version)
        return final

    def record(self, image: str, version: str, **fields: Any) -> None:
        """Set build facts (``recipe_hash``) in a published version's manifest, written
        anew and renamed over; the artifacts and their sums are untouched."""
        m = self.manifest(image, version)
        if m is None:
            return
        m.update(fields)
        atomic_write(self.dir(image, version) / layout.MANIFEST, dump_manifest(m).encode())

    def set_current(self, image: str, version: str) -> None:
        link = self.root / image / CURRENT
        tmp = self.root / image / f".{CURRENT}-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(version)
        os.replace(tmp, link)


# --------------------------------------------------------------------------
# Foreign payloads: a kernel and initrd (and maybe a root fs) dsas did not build.

IMPORTED_KIND = "imported"


class PayloadError(DsasError, ValueError):
    """A payload that cannot be imported (unreadable, empty, not a tar archive)."""


def tar_listing(archive: Path) -> dict[str, dict[str, Any]]:
    """The manifest listing of a tar archive, as `verify --content` checks it."""
    import tarfile

    kinds = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.LNKTYPE: "file",
             tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "chardev",
             tarfile.BLKTYPE: "blockdev", tarfile.FIFOTYPE: "fifo"}
    listing: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                path = info.name.strip("/").removeprefix("./")
                if path in ("", "."):
                    continue
                entry: dict[str, Any] = {"type": kinds.get(info.type, "other"),
                                         "mode": f"{info.mode & 0o7777:04o}"}
                if info.isfile() or info.islnk():
                    if info.islnk() and info.linkname.strip("/").removeprefix("./") in listing:
                        first = listing[info.linkname.strip("/").removeprefix("./")]
                        entry.update(sha256=first["sha256"], size=first["size"])
                    else:
                        entry.update(_hash_member(tar.extractfile(info)))
                elif info.issym():
                    entry["target"] = info.linkname
                listing[path] = entry
    except (tarfile.TarError, EOFError, OSError) as e:
        raise PayloadError(f"{archive}: not a readable tar archive ({e})") from None
    return listing


def _hash_member(f: Any) -> dict[str, Any]:
    h, n = hashlib.sha256(), 0
    if f is not None:
        while block := f.read(1 << 20):
            h.update(block)
            n += len(block)
    return {"sha256": h.hexdigest(), "size": n}


def import_image(store: ImageStore, image: str, kernel: Path, initrd: Path,
                 rootfs: Path | None = None, kernel_args: str = "",
                 dsas_boot: bool = False, now: str | None = None) -> tuple[str, bool]:
    """Put a foreign kernel + initrd (+ root fs tarball) into the store.

    The version is a hash of the content and the kernel arguments, so importing
    the same payload twice does nothing. The manifest has the same `files`
    entries as a built image (so `verify` checks it the same way), `kind:
    imported`, the payload's own `kernel_args`, and `dsas_boot`: whether the
    initrd runs dsas's boot scripts (only then does a host's command line get
    dsas's `dsas.*` arguments). Returns (version, already there).
    """
    import time

    sources = {layout.KERNEL: Path(kernel), layout.INITRD: Path(initrd)}
    if rootfs is not None:
        sources[layout.ROOTFS] = Path(rootfs)
    for src in sources.values():
        if not src.is_file():
            raise PayloadError(f"{src}: not a regular file")
        if src.stat().st_size == 0:
            raise PayloadError(f"{src}: empty")
    listing = tar_listing(sources[layout.ROOTFS]) if rootfs is not None else None
    tmp = store.root / image / f".import-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        staged = _stage(sources, tmp)
        files = {n: {"sha256": sha256_file(p), "size": p.stat().st_size}
                 for n, p in sorted(staged.items())}
        h = hashlib.sha256(f"dsas-import-1\0{image}\0{kernel_args}\0{int(dsas_boot)}".encode())
        for n, e in files.items():
            h.update(f"\0{n}\0{e['sha256']}".encode())
        version = h.hexdigest()[:16]
        if store.manifest(image, version) is not None and not store.verify(image, version):
            store.set_current(image, version)
            return version, True
        m: dict[str, Any] = {
            "format": MANIFEST_FORMAT, "image": image, "version": version,
            "kind": IMPORTED_KIND, "dsas_boot": dsas_boot, "kernel_args": kernel_args,
            "imported": now or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sources": {n: str(p.resolve()) for n, p in sorted(sources.items())},
            "files": files,
        }
        if listing is not None:
            m["rootfs"] = listing
        artifacts: dict[str, bytes | Path] = dict(staged)
        store.publish(image, version, artifacts, m)
        return version, False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stage(sources: dict[str, Path], tmp: Path) -> dict[str, Path]:
    """Copy each source into ``tmp`` under its store name (a root fs gzip'd)."""
    import gzip

    staged: dict[str, Path] = {}
    for name, src in sources.items():
        dst = tmp / name
        with src.open("rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        if name == layout.ROOTFS and not gz:  # the store holds it gzip'd
            with src.open("rb") as fin, gzip.GzipFile(dst, "wb", mtime=0) as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
        else:
            shutil.copyfile(src, dst)
        staged[name] = dst
    return staged


def uses_dsas_boot(manifest: Mapping[str, Any] | None) -> bool:
    """Whether an image's initrd runs dsas's boot scripts (every built image does)."""
    if manifest is None:
        return True
    return bool(manifest.get("dsas_boot", manifest.get("kind") != IMPORTED_KIND))
