"""bond: how a host joins its networks over its NICs (a role's, overridden per host)."""

from __future__ import annotations

from typing import Any

from ..model import BOND_MODES, Bond, IPv4Address
from ..reader import NIC, Reader

KEYS = {"mode", "miimon", "primary", "arp_ip_target", "arp_interval"}


def bond(r: Reader, m: dict[str, Any], path: str, base: Bond) -> Bond:
    """``m.bond`` over ``base`` (what the role, or the default, says)."""
    bpath = f"{path}.bond"
    b = r.mapping(m, "bond", bpath, KEYS, optional=True)
    if b is None:
        return base
    mode = r.choice(b, "mode", bpath, BOND_MODES, base.mode)
    miimon = r.integer(b, "miimon", bpath, 0, 60000, base.miimon)
    primary = r.string(b, "primary", bpath, default=base.primary, pattern=NIC,
                       what="interface")
    targets = _arp_targets(r, b, bpath, base)
    interval = r.integer(b, "arp_interval", bpath, 0, 60000, base.arp_interval)
    if targets and not interval:
        interval = 1000
    if targets and b.get("miimon") is not None and miimon:
        r.err(b, "miimon", f"{bpath}.miimon",
              "miimon and arp_ip_target exclude each other; use one link monitor")
    if targets:
        miimon = 0
    return Bond(mode, miimon or 0, primary, tuple(targets), interval or 0)


def _arp_targets(r: Reader, b: dict[str, Any], bpath: str, base: Bond) -> list[IPv4Address]:
    if b.get("arp_ip_target") is None:
        return list(base.arp_ip_target)
    targets = r.addresses(b, "arp_ip_target", bpath)
    if len(targets) > 16:
        r.err(b, "arp_ip_target", f"{bpath}.arp_ip_target",
              "the bonding driver takes at most 16 targets")
    return targets
