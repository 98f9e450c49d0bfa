"""Image recipes: `images/<name>/recipe.toml`, loaded into typed values.

A recipe lists what goes into the image and where it comes from: files copied
out of Debian packages, files from this repository (the boot scripts), kernel
modules by name (their dependencies are added from modules.dep), directories,
symlinks and device nodes. Errors name the file and the key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DsasError

KINDS = ("initramfs", "rootfs", "debian")


class RecipeError(DsasError, ValueError):
    """A recipe that cannot be read or built as written."""


@dataclass(frozen=True)
class Copy:
    """A recipe's file copied out of a Debian package."""

    package: str
    path: str  # as the package ships it
    dest: str
    mode: int


@dataclass(frozen=True)
class RepoFile:
    """A recipe's file copied from this repository."""

    src: str  # relative to the repository root
    dest: str
    mode: int


@dataclass(frozen=True)
class Device:
    """A device node a recipe creates in the image."""

    dest: str
    major: int
    minor: int
    mode: int


@dataclass(frozen=True)
class Recipe:
    """An image recipe, parsed and checked."""

    name: str
    kind: str
    source: Path
    description: str
    kernel: str  # Debian package, e.g. linux-image-amd64
    boot: str | None  # rootfs images: the image that provides vmlinuz + initrd.img
    modules: tuple[str, ...]
    busybox_links: str | None  # path of busybox in the tree: add its applet links
    copies: tuple[Copy, ...]
    files: tuple[RepoFile, ...]
    dirs: tuple[str, ...]
    symlinks: tuple[tuple[str, str], ...]  # (dest, target)
    devices: tuple[Device, ...]
    # kind "debian": a full Debian root fs made by mmdebstrap (provision/imaging/debian.py)
    suite: str = ""
    variant: str = ""
    include: tuple[str, ...] = ()
    dpkg_opts: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()  # scripts (repo-relative) run with the root dir as $1

    @property
    def packages(self) -> list[str]:
        return sorted({c.package for c in self.copies})


def _mode(value: Any, where: str) -> int:
    try:
        return int(str(value), 8)
    except ValueError:
        raise RecipeError(f"{where}: mode must be octal like \"0755\", got {value!r}") from None


def _str(d: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = d.get(key, default)
    if not isinstance(value, str) or not value:
        raise RecipeError(f"{where}.{key}: required, a non-empty string")
    return value


def _table_list(raw: dict[str, Any], key: str, src: str) -> list[tuple[str, dict[str, Any]]]:
    items = raw.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise RecipeError(f"{src}: {key}: must be an array of tables ([[{key}]])")
    return [(f"{src}: {key}[{i}]", item) for i, item in enumerate(items)]


def _strings(raw: dict[str, Any], key: str, src: str) -> tuple[str, ...]:
    items = raw.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise RecipeError(f"{src}: {key}: must be an array of non-empty strings")
    return tuple(items)


def load(path: Path) -> Recipe:
    src = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{src}: {exc}") from None
    kind = _str(raw, "kind", src)
    if kind not in KINDS:
        raise RecipeError(f"{src}: kind: {kind!r} is not one of {', '.join(KINDS)}")
    boot = raw.get("boot")
    if kind in ("rootfs", "debian") and not isinstance(boot, str):
        raise RecipeError(f"{src}: boot: a rootfs image names the image that boots it")
    copies = tuple(
        Copy(_str(c, "package", w), _str(c, "path", w), _str(c, "dest", w),
             _mode(c.get("mode", "0755"), w))
        for w, c in _table_list(raw, "copy", src)
    )
    files = tuple(
        RepoFile(_str(f, "src", w), _str(f, "dest", w), _mode(f.get("mode", "0644"), w))
        for w, f in _table_list(raw, "file", src)
    )
    symlinks = tuple(
        (_str(s, "dest", w), _str(s, "target", w)) for w, s in _table_list(raw, "symlink", src)
    )
    devices = tuple(
        Device(_str(d, "dest", w), int(d.get("major", -1)), int(d.get("minor", -1)),
               _mode(d.get("mode", "0600"), w))
        for w, d in _table_list(raw, "device", src)
    )
    return Recipe(
        name=_str(raw, "name", src, path.parent.name),
        kind=kind,
        source=path,
        description=str(raw.get("description", "")),
        kernel=_str(raw, "kernel", src, "linux-image-amd64"),
        boot=boot if isinstance(boot, str) else None,
        modules=tuple(str(m) for m in raw.get("modules", [])),
        busybox_links=raw.get("busybox_links"),
        copies=copies,
        files=files,
        dirs=tuple(str(d) for d in raw.get("dirs", [])),
        symlinks=symlinks,
        devices=devices,
        suite=str(raw.get("suite", "")),
        variant=str(raw.get("variant", "")),
        include=_strings(raw, "include", src),
        dpkg_opts=_strings(raw, "dpkg_opts", src),
        hooks=_strings(raw, "hooks", src),
    )


def find(recipes_dir: Path, name: str) -> Recipe:
    path = recipes_dir / name / "recipe.toml"
    if not path.is_file():
        known = sorted(p.parent.name for p in recipes_dir.glob("*/recipe.toml"))
        raise RecipeError(f"no image recipe {name!r} in {recipes_dir} (known: {', '.join(known)})")
    return load(path)
