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
    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, image: str, version: str) -> Path:
        return self.root / image / version

    def manifest(self, image: str, version: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.dir(image, version) / layout.MANIFEST).read_text())
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

    def set_current(self, image: str, version: str) -> None:
        link = self.root / image / CURRENT
        tmp = self.root / image / f".{CURRENT}-{os.getpid()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(version)
        os.replace(tmp, link)
