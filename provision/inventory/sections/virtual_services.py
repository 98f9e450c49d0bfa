"""virtual_services: the services the LVS directors balance — VIP, port, scheduler, the
role whose hosts serve it, its health check and the LVS pair that carries it."""

from __future__ import annotations

import re
from typing import Any

from ..model import (
    CHECK_TYPES,
    FORWARDING,
    PROTOCOLS,
    SCHEDULERS,
    HealthCheck,
    IPv4Address,
    VirtualService,
)
from ..reader import LABEL, Reader
from .known import Known

KEYS = {"vip", "port", "protocol", "scheduler", "forwarding", "persistence", "role",
        "real_port", "weight", "check", "pair"}
REQUIRED = ("vip", "port", "role", "check")
CHECK_KEYS = {"type", "path", "status", "digest", "port", "command", "connect_timeout", "retry",
              "delay_before_retry"}
URL_PATH = re.compile(r"^/[!-~]*$")
DIGEST = re.compile(r"^[0-9a-f]{32}$")

Seen = dict[tuple[IPv4Address, int, str], str]


def virtual_services(r: Reader, data: dict[str, Any], known: Known) -> dict[str, VirtualService]:
    section = r.mapping(data, "virtual_services", "virtual_services", optional=True) or {}
    out = {}
    seen: Seen = {}
    for name, path, m in r.entries(section, "virtual_services", KEYS, REQUIRED):
        if not LABEL.match(str(name)):
            r.err(section, name, path, "virtual service names must be DNS labels")
        vs = _service(r, str(name), path, m, known, seen)
        if vs is not None:
            out[str(name)] = vs
    return out


def _service(r: Reader, name: str, path: str, m: dict[str, Any], known: Known,
             seen: Seen) -> VirtualService | None:
    vip = r.address(m, "vip", f"{path}.vip")
    port = r.integer(m, "port", path, 1, 65535, None)
    proto = r.choice(m, "protocol", path, PROTOCOLS, "TCP")
    sched = r.choice(m, "scheduler", path, SCHEDULERS, "wlc")
    fwd = r.choice(m, "forwarding", path, FORWARDING, "NAT")
    persist = r.integer(m, "persistence", path, 0, 86400 * 31, 0) or 0
    real_port = r.integer(m, "real_port", path, 1, 65535, port) or port
    weight = r.integer(m, "weight", path, 0, 65535, 1)
    role = _role(r, m, path, known)
    if vip is not None and port is not None:
        _vip_unused(r, m, path, (vip, port, proto), name, seen, known)
    pair = _pair(r, m, path, known)
    check = health_check(r, m, f"{path}.check")
    if None in (vip, port, role, pair, check, weight):
        return None
    assert vip and port and role and pair and check is not None and weight is not None
    return VirtualService(name, vip, port, proto, sched, fwd, persist, role, real_port or port,
                          weight, check, pair)


def _role(r: Reader, m: dict[str, Any], path: str, known: Known) -> str | None:
    role = r.string(m, "role", path)
    if role is None:
        return None
    if role not in known.roles:
        r.unknown(m, "role", f"{path}.role", "role", role)
    elif not any(h.role.name == role for h in known.hosts.values()) \
            and not _has_broken_host(r, role):
        r.err(m, "role", f"{path}.role",
              f"role {role!r} has no hosts to serve this virtual service")
    return role


def _has_broken_host(r: Reader, role: str) -> bool:
    """A host of ``role`` was declared but refused (then its problem is the cause)."""
    section = r.data.get("hosts")
    return any(isinstance(section, dict) and isinstance(section.get(h), dict)
               and str(section[h].get("role")) == role
               for h in r.broken.get("host", ()))


def _vip_unused(r: Reader, m: dict[str, Any], path: str, key: tuple[IPv4Address, int, str],
                name: str, seen: Seen, known: Known) -> None:
    """No two virtual services share VIP, port and protocol; no host has the VIP."""
    vip, port, proto = key
    if key in seen:
        r.err(m, "vip", f"{path}.vip",
              f"{vip}:{port}/{proto} is already used by virtual service {seen[key]}")
    seen[key] = name
    for h in known.hosts.values():
        if vip in h.addresses.values():
            r.err(m, "vip", f"{path}.vip", f"{vip} is the address of host {h.name}")


def _pair(r: Reader, m: dict[str, Any], path: str, known: Known) -> str | None:
    """The LVS pair that carries the service: named, or the only one there is."""
    pair = r.string(m, "pair", path)
    if pair is not None:
        if pair not in r.declared_pairs:
            r.err(m, "pair", f"{path}.pair", f"unknown LVS pair {pair!r}")
        return pair
    if len(known.pairs) == 1:
        return next(iter(known.pairs))
    if len(r.declared_pairs) == 1:
        pass  # the one pair is invalid and reported already
    elif not r.declared_pairs:
        r.err(m, "vip", path, "no LVS pair is defined to carry this service")
    else:
        r.err(m, "pair", f"{path}.pair", "several LVS pairs exist: name one")
    return None


def health_check(r: Reader, m: dict[str, Any], path: str) -> HealthCheck | None:
    c = r.mapping(m, "check", path, CHECK_KEYS, ("type",))
    if c is None or c.get("type") is None:
        return None
    kind = r.choice(c, "type", path, CHECK_TYPES, "")
    if not kind:
        return None
    url_path = r.string(c, "path", path, pattern=URL_PATH, what="URL path")
    status = r.integer(c, "status", path, 100, 599, None)
    digest = r.string(c, "digest", path, pattern=DIGEST, what="MD5 digest")
    command = r.string(c, "command", path)
    if kind in ("HTTP_GET", "SSL_GET"):
        if url_path is None:
            r.err(c, "type", f"{path}.path", f"{kind} needs a path")
        if status is None and digest is None:
            status = 200
    _command(r, c, path, kind, command)
    return HealthCheck(
        kind,
        url_path,
        status,
        digest,
        r.integer(c, "port", path, 1, 65535, None),
        command,
        r.integer(c, "connect_timeout", path, 1, 3600, 3) or 3,
        r.integer(c, "retry", path, 0, 100, 3) or 0,
        r.integer(c, "delay_before_retry", path, 0, 3600, 3) or 0,
    )


def _command(r: Reader, c: dict[str, Any], path: str, kind: str, command: str | None) -> None:
    """MISC_CHECK runs a command (one keepalived can quote); no other check takes one."""
    if kind == "MISC_CHECK":
        if not command:
            r.err(c, "type", f"{path}.command", "MISC_CHECK needs a command")
        elif "\n" in command or '"' in command:
            r.err(c, "command", f"{path}.command",
                  "the command may not contain newlines or double quotes")
    elif command is not None:
        r.err(c, "command", f"{path}.command", f"{kind} takes no command")
