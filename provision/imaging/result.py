"""What every kind of image build shares: its result, its version hash, and what a
builder offers the kinds built outside ``build.py`` (``debian.py``).

``build.py`` (initramfs and root fs images, and the dispatch by kind) and
``debian.py`` (mmdebstrap root fs images) both import this module; neither imports
the other's internals, so the two no longer form an import cycle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .recipe import Recipe
from .store import ImageStore

Progress = Callable[[str], None]
FORMAT_TAG = "dsas-image/1"


@dataclass
class BuildResult:
    """What an image build produced: the image version and whether it was cached."""

    image: str
    version: str
    path: Path
    cached: bool
    manifest: dict[str, Any] = field(default_factory=dict)


class ImageBuilder(Protocol):
    """The part of ``build.Builder`` a recipe kind's build function uses."""

    repo_root: Path
    store: ImageStore
    cache: Path
    say: Progress

    def build(self, name: str) -> BuildResult: ...


def image_version(recipe: Recipe, *parts: str) -> str:
    """The version of an image: a hash of its name, kind and everything that goes in."""
    h = hashlib.sha256(f"{FORMAT_TAG}\0{recipe.name}\0{recipe.kind}".encode())
    for p in parts:
        h.update(b"\0" + p.encode())
    return h.hexdigest()[:16]


def file_entry(data: bytes) -> dict[str, Any]:
    """A manifest's ``files`` entry for an artifact: its sha256 and size."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def file_entries(artifacts: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    return {name: file_entry(data) for name, data in sorted(artifacts.items())}


def stored_result(store: ImageStore, name: str, version: str) -> BuildResult | None:
    """``version`` of ``name`` as the store holds it, when it verifies (made current)."""
    if store.manifest(name, version) is None or store.verify(name, version):
        return None
    if store.resolve(name) != version:
        store.set_current(name, version)
    return BuildResult(name, version, store.dir(name, version), True,
                       store.manifest(name, version) or {})
