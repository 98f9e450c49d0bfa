"""The line-tracking reader of the loose inventory tree: typed getters that report
every problem with the file, the line and the key path where the value came from.

``Reader`` is what the section translators (``sections/``) share: its getters
(``mapping``, ``string``, ``integer``, ``address`` ...) return the value or a
default, never raise, and append a ``Problem`` for what they refuse; it also
remembers which declared entries were refused for their own problem (``broken``)
so that what refers to them is left out without a second report.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Any

from .errors import Problem
from .model import IPv4Address, Module

LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DEVICE = re.compile(r"^/dev/[A-Za-z0-9/_.-]+$")
NIC = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# Kernel command lines: no newlines, no shell or iPXE/pxelinux metacharacters.
ARGS = re.compile(r"^[A-Za-z0-9_.,:=/+@%~-]*( [A-Za-z0-9_.,:=/+@%~-]+)*$")


class Reader:
    """The problems of one file, and the getters that add to them."""

    def __init__(self, filename: str, problems: list[Problem]):
        self.file = filename
        self.problems = problems
        self.fallback_line: int | None = None  # line of the entry being translated
        self.declared_pairs: set[str] = set()
        self.data: dict[str, Any] = {}
        # Declared but not built (their own problem is reported): what refers to them
        # is not reported again, and is not built either (see ``unknown``).
        self.broken: dict[str, set[str]] = {}
        self.tainted = False  # the entry being translated refers to something broken
        self.bad_vlan: set[str] = set()  # networks whose VLAN id was refused

    # -- reporting ----------------------------------------------------------

    def err(self, parent: Any, key: Any, path: str, reason: str) -> None:
        line = line_of(parent, key) or self.fallback_line
        self.problems.append(Problem(self.file, line, path, reason))

    def unknown(self, parent: Any, key: Any, path: str, what: str, name: Any) -> None:
        """``name`` is no known ``what``: an error, unless it was declared and refused
        for its own problem (reported once, there); then the entry that refers to it
        is left out silently, and so are the entries that refer to that one."""
        if str(name) in self.broken.get(what, ()):
            self.tainted = True
            return
        self.err(parent, key, path, f"unknown {what} {name!r}")

    def start_entry(self, section: Any, name: Any) -> None:
        self.fallback_line = line_of(section, name)
        self.tainted = False

    def mark_broken(self, what: str, section: Any, built: dict[str, Any]) -> None:
        self.broken[what] = {str(n) for n in (section or {}) if str(n) not in built}

    # -- typed getters ------------------------------------------------------

    def mapping(
        self,
        parent: Any,
        key: Any,
        path: str,
        allowed: Iterable[str] | None = None,
        required: Iterable[str] = (),
        optional: bool = False,
    ) -> dict[str, Any] | None:
        value = parent.get(key) if isinstance(parent, dict) else None
        if value is None:
            if not optional:
                self.err(parent, key, path, "missing (a mapping is required)")
            return None
        if not isinstance(value, dict):
            self.err(parent, key, path, f"must be a mapping, not {kind_of(value)}")
            return None
        if allowed is not None:
            self._unknown_keys(value, path, set(allowed))
        for r in required:
            if value.get(r) is None:
                self.err(parent, key, f"{path}.{r}", "missing required key")
        return value

    def _unknown_keys(self, value: dict[str, Any], path: str, allowed: set[str]) -> None:
        for k in value:
            if str(k) not in allowed:
                self.err(
                    value,
                    k,
                    f"{path}.{k}",
                    "unknown key (allowed: " + ", ".join(sorted(allowed)) + ")",
                )

    def entries(
        self, section: dict[str, Any], what: str, allowed: Iterable[str] | None,
        required: Iterable[str] = (),
    ) -> Iterator[tuple[Any, str, dict[str, Any]]]:
        """(name, key path, mapping) of each entry of ``section`` (the mapping at top-level
        key ``what``) that is a mapping, as the translation of that entry starts."""
        for name in section:
            path = f"{what}.{name}"
            self.start_entry(section, name)
            m = self.mapping(section, name, path, allowed, required)
            if m is not None:
                yield name, path, m

    def string(
        self,
        m: dict[str, Any],
        key: str,
        path: str,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        v = m.get(key)
        if v is None:
            return default
        if not isinstance(v, str | int) or isinstance(v, bool):
            self.err(m, key, f"{path}.{key}", f"must be a string, not {kind_of(v)}")
            return default
        s = str(v)
        if pattern is not None and not pattern.match(s):
            self.err(m, key, f"{path}.{key}", f"invalid {what or key} {s!r}")
            return default
        return s

    def choice(
        self, m: dict[str, Any], key: str, path: str, choices: Iterable[str], default: str
    ) -> str:
        v = m.get(key)
        if v is None:
            return default
        choices = tuple(choices)
        if str(v) not in choices:
            self.err(m, key, f"{path}.{key}", f"{v!r} is not one of: {', '.join(choices)}")
            return default
        return str(v)

    def integer(
        self, m: dict[str, Any], key: str, path: str, lo: int, hi: int, default: int | None
    ) -> int | None:
        v = m.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(m, key, f"{path}.{key}", f"must be an integer, not {kind_of(v)}")
            return default
        if not lo <= v <= hi:
            self.err(m, key, f"{path}.{key}", f"{v} is outside {lo}-{hi}")
            return default
        return int(v)

    def address(self, m: Any, key: Any, path: str) -> IPv4Address | None:
        v = m.get(key) if isinstance(m, dict) else m[key]
        if v is None:
            return None
        try:
            return IPv4Address(str(v))
        except ValueError:
            self.err(m, key, path, f"malformed IPv4 address {v!r}")
            return None

    def addresses(self, m: dict[str, Any], key: str, path: str) -> list[IPv4Address]:
        """The IPv4 addresses listed at ``m[key]`` (one may stand alone), the bad ones
        reported each at its index."""
        out = []
        items = self.seq(m, key, path)
        for i, _ in enumerate(items):
            a = self.address(items, i, f"{path}.{key}[{i}]")
            if a is not None:
                out.append(a)
        return out

    def address6(self, m: Any, key: Any, path: str) -> ipaddress.IPv6Address | None:
        """``m[key]`` as an IPv6 address (the caller has checked it is there)."""
        try:
            return ipaddress.IPv6Address(str(m[key]))
        except ValueError:
            self.err(m, key, path, f"malformed IPv6 address {m[key]!r}")
            return None

    def seq(self, m: dict[str, Any], key: str, path: str, required: bool = False) -> list[Any]:
        v = m.get(key)
        if v is None:
            if required:
                self.err(m, key, f"{path}.{key}", "missing required list")
            return []
        if isinstance(v, str):
            return [v]
        if not isinstance(v, list):
            self.err(m, key, f"{path}.{key}", f"must be a list, not {kind_of(v)}")
            return []
        return list(v)

    def names(
        self, m: dict[str, Any], key: str, path: str, known: dict[str, Any], what: str
    ) -> tuple[str, ...]:
        out = []
        items = self.seq(m, key, path)
        for i, n in enumerate(items):
            n = str(n)
            if n not in known:
                self.unknown(m.get(key), i, f"{path}.{key}[{i}]", what, n)
            else:
                out.append(n)
        return tuple(out)

    def modules(self, m: dict[str, Any], key: str, path: str) -> tuple[Module, ...]:
        out = []
        items = self.seq(m, key, path)
        for i, item in enumerate(items):
            mod = self._module(m.get(key), i, item, f"{path}.{key}[{i}]")
            if mod is not None:
                out.append(mod)
        return tuple(out)

    def _module(self, parent: Any, i: int, item: Any, sub: str) -> Module | None:
        if isinstance(item, str):
            name, _, opts = item.strip().partition(" ")
        elif isinstance(item, dict):
            mm = self.mapping(parent, i, sub, {"name", "options"}, ("name",))
            if not mm or mm.get("name") is None:
                return None
            name, opts = str(mm["name"]), str(mm.get("options") or "")
        else:
            self.err(parent, i, sub, "must be a module name or {name, options}")
            return None
        if not re.match(r"^[A-Za-z0-9_-]+$", name):
            self.err(parent, i, sub, f"invalid module name {name!r}")
            return None
        if "\n" in opts or not ARGS.match(opts.strip()):
            self.err(parent, i, sub, "module options contain forbidden characters")
            return None
        return Module(name, opts.strip())

    def kernel_args(self, m: dict[str, Any], path: str) -> str:
        v = m.get("kernel_args")
        if v is None:
            return ""
        s = str(v)
        if "\n" in s or "\r" in s or not ARGS.match(s.strip()):
            self.err(
                m,
                "kernel_args",
                f"{path}.kernel_args",
                "newlines and shell metacharacters are not allowed in kernel command lines",
            )
            return ""
        return s.strip()

    def in_network(
        self, m: Any, key: Any, path: str, addr: IPv4Address, cidr: ipaddress.IPv4Network
    ) -> bool:
        if addr not in cidr:
            self.err(m, key, path, f"{addr} is outside its network {cidr}")
            return False
        if cidr.prefixlen < 31 and addr in (cidr.network_address, cidr.broadcast_address):
            kind = "network" if addr == cidr.network_address else "broadcast"
            self.err(m, key, path, f"{addr} is the {kind} address of {cidr}")
            return False
        return True


def kind_of(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    return "a string"


def line_of(parent: Any, key: Any) -> int | None:
    """1-based line of ``parent[key]`` in the source, when ruamel recorded it."""
    lc = getattr(parent, "lc", None)
    if lc is None:
        return None
    try:
        if isinstance(parent, dict):
            if key in parent:
                return int(lc.key(key)[0]) + 1
            return int(lc.line) + 1
        if isinstance(parent, list):
            return int(lc.item(key)[0]) + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return int(lc.line) + 1 if getattr(lc, "line", None) is not None else None
