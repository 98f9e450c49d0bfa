"""cluster.masters.pair: the two masters behind the VIP (issue 18), checked.

Called by the ``cluster`` section with its Reader (for file:line problems).
With ``pair``, ``master_address`` is the VIP the nodes use: it must sit on a network
both masters have an address on, and be neither master's own address; the primary
and the secondary are two different hosts of the inventory.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import Host, IPv4Address, MasterPair

_KEY_FILE = re.compile(r"^[A-Za-z0-9_./-]{1,255}$")


def build_pair(b: Any, ms: dict[str, Any], vip: IPv4Address | None, primary: str | None,
               secondary: str | None, hosts: dict[str, Host]) -> MasterPair | None:
    """The pair of ``cluster.masters`` (None without ``pair``; problems go to ``b``)."""
    p = b.mapping(ms, "pair", "cluster.masters.pair",
                  {"vrid", "port", "preempt", "key_file", "peer_timeout", "mclt",
                   "advert_int", "auto_partner_down"},
                  ("vrid",), optional=True)
    if p is None:
        return None
    path = "cluster.masters.pair"
    ok = _secondary_ok(b, ms, primary, secondary)
    vrid = b.integer(p, "vrid", path, 1, 255, None)
    port = b.integer(p, "port", path, 1, 65535, 6767)
    mclt = b.integer(p, "mclt", path, 10, 86400, 600)
    preempt, auto_pd = _flag(b, p, "preempt", True), _flag(b, p, "auto_partner_down", False)
    timeout = _seconds(b, p, "peer_timeout", 1.0, 0.05, 60)
    advert = _seconds(b, p, "advert_int", 1.0, 0.05, 255)
    ok = ok and None not in (preempt, auto_pd, timeout, advert)
    key_file = b.string(p, "key_file", path, "master-pair.key")
    if key_file is not None and (not _KEY_FILE.match(key_file) or ".." in key_file.split("/")):
        b.err(p, "key_file", f"{path}.key_file", f"invalid key file path {key_file!r}")
        ok = False
    masters = [hosts[n] for n in (primary, secondary) if n and n in hosts]
    if vip is not None and len(masters) == 2 and masters[0] is not masters[1]:
        ok = _vip_ok(b, ms, vip, masters) and ok
    if not ok or vrid is None or port is None or mclt is None or key_file is None:
        return None
    assert preempt is not None and auto_pd is not None
    assert timeout is not None and advert is not None
    return MasterPair(vrid, port, preempt, key_file, timeout, mclt, advert, auto_pd)


def _flag(b: Any, p: dict[str, Any], key: str, default: bool) -> bool | None:
    v = p.get(key, default)
    if not isinstance(v, bool):
        b.err(p, key, f"cluster.masters.pair.{key}", "must be true or false")
        return None
    return v


def _seconds(b: Any, p: dict[str, Any], key: str, default: float, lo: float,
             hi: float) -> float | None:
    v = p.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        b.err(p, key, f"cluster.masters.pair.{key}", f"must be a number of seconds, {lo:g}-{hi:g}")
        return None
    return float(v)


def _secondary_ok(b: Any, ms: dict[str, Any], primary: str | None,
                  secondary: str | None) -> bool:
    """A secondary, and another host than the primary."""
    if not secondary:
        b.err(ms, "pair", "cluster.masters.secondary", "a master pair needs a secondary")
        return False
    if secondary == primary:
        b.err(ms, "secondary", "cluster.masters.secondary",
              f"the secondary must be another host than the primary ({primary!r})")
        return False
    return True


def _vip_ok(b: Any, ms: dict[str, Any], vip: IPv4Address, masters: list[Host]) -> bool:
    """The VIP is neither master's own address, and on a network both have."""
    ok = True
    for h in masters:
        if vip in h.addresses.values():
            b.err(ms, "pair", "cluster.master_address",
                  f"{vip} is {h.name}'s own address: with a pair it is the VIP, "
                  "another address than either master's")
            ok = False
    if not any(vip in net.cidr for net in _shared_networks(masters)):
        b.err(ms, "pair", "cluster.master_address",
              f"the VIP {vip} is on no network both masters ("
              f"{masters[0].name}, {masters[1].name}) have an address on")
        ok = False
    return ok


def _shared_networks(masters: list[Host]) -> list[Any]:
    a, b = masters
    return [n for n in a.networks_in_order if n.name in b.addresses]
