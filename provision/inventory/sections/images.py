"""images and services: the image catalogue (name -> version, kernel arguments) and the
services roles and hosts may run (name -> systemd units)."""

from __future__ import annotations

import re
from typing import Any

from ..model import Image
from ..reader import Reader

VERSION = re.compile(r"^[A-Za-z0-9._-]+$")
UNIT = re.compile(r"^[A-Za-z0-9@_.-]+$")


def images(r: Reader, data: dict[str, Any]) -> dict[str, Image]:
    section = r.mapping(data, "images", "images", optional=True) or {}
    out = {}
    for name, path, m in r.entries(section, "images", {"version", "kernel_args"}):
        version = r.string(m, "version", path, default="current", pattern=VERSION,
                           what="version")
        out[str(name)] = Image(str(name), version or "current", r.kernel_args(m, path))
    r.mark_broken("image", section, out)
    return out


def services(r: Reader, data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    section = r.mapping(data, "services", "services", optional=True) or {}
    out = {}
    for name in section:
        path = f"services.{name}"
        r.start_entry(section, name)
        m = r.mapping(section, name, path, {"units", "description"}, optional=True)
        units = tuple(str(u) for u in r.seq(m, "units", path)) if m else ()
        for i, u in enumerate(units):
            if not UNIT.match(u):
                r.err(m.get("units") if m else section, i, f"{path}.units[{i}]",
                      f"invalid unit name {u!r}")
        out[str(name)] = units or (str(name),)
    return out
