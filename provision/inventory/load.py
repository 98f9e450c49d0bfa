"""Load the inventory: loose YAML on disk -> typed, validated ``Inventory``.

Two steps, as in smee's file backend: ``source`` reads the file within its size
cap and parses it with ruamel.yaml keeping line numbers, then the translators of
``sections/`` turn each section into the dataclasses of ``model.py`` while a
``reader.Reader`` collects *every* problem (file, line, key path, reason).
Nothing half-valid ever leaves this module: either an ``Inventory`` or an
``InventoryError`` listing all problems.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from .errors import InventoryError
from .model import Inventory
from .reader import Reader
from .sections import build, vrrp_ids
from .source import (
    DEFAULT_MAX_BYTES,
    DEFAULT_PATH,
    ENV_VAR,
    MAX_ALIASED_NODES,
    MAX_BYTES_ENV,
    MAX_DEPTH,
    check_size,
    decode,
    parse,
    read_bytes,
    resolve_path,
    size_cap,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_PATH",
    "ENV_VAR",
    "MAX_ALIASED_NODES",
    "MAX_BYTES_ENV",
    "MAX_DEPTH",
    "Loader",
    "load",
    "load_bytes",
    "loads",
    "read_bytes",
    "resolve_path",
    "size_cap",
    "vrrp_ids",
]


def load(path: str | os.PathLike[str] | None = None, max_bytes: int | None = None) -> Inventory:
    p = resolve_path(path)
    return load_bytes(read_bytes(p, max_bytes), str(p), max_bytes)


def load_bytes(data: bytes, filename: str, max_bytes: int | None = None) -> Inventory:
    """The inventory in ``data`` (the bytes of ``filename``), UTF-8 checked with its line."""
    return loads(decode(data, filename), filename, max_bytes=max_bytes)


def loads(text: str, filename: str = "<inventory>", max_bytes: int | None = None) -> Inventory:
    check_size(text, filename, max_bytes)
    data, problems = parse(text, filename)
    r = Reader(filename, problems)
    inv = build(r, data)
    if r.problems or inv is None:
        raise InventoryError(r.problems)
    return inv


Loader = Callable[[str | None], Inventory]
