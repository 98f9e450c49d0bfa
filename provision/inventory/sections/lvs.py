"""lvs_pairs: the directors (an active and a backup host under keepalived's VRRP), and
what keepalived would accept but the cluster could not carry (``lvs_checks``)."""

from __future__ import annotations

import re
from typing import Any

from ..model import BACKUP_PRIORITY_STEP, Host, IPv4Address, LvsPair, Network, VirtualService
from ..reader import Reader, kind_of
from .known import Known
from .networks import on_networks

KEYS = {"hosts", "virtual_router_id", "priority", "auth", "advert_int", "gateway_vips",
        "preempt", "preempt_delay"}
PASSWORD = re.compile(r"^[!-~]{1,8}$")


def lvs_pairs(r: Reader, data: dict[str, Any], hosts: dict[str, Host],
              networks: dict[str, Network]) -> dict[str, LvsPair]:
    section = r.mapping(data, "lvs_pairs", "lvs_pairs", optional=True) or {}
    r.declared_pairs = {str(n) for n in section}
    out = {}
    for name, path, m in r.entries(section, "lvs_pairs", KEYS, ("hosts", "virtual_router_id")):
        pair = _pair(r, str(name), path, m, hosts, networks)
        if pair is not None:
            out[str(name)] = pair
    return out


def _pair(r: Reader, name: str, path: str, m: dict[str, Any], hosts: dict[str, Host],
          networks: dict[str, Network]) -> LvsPair | None:
    active, backup = _pair_hosts(r, m, path, hosts)
    vrid = r.integer(m, "virtual_router_id", path, 1, 255, None)
    pa, pb = _priorities(r, m, path, len(backup))
    auth_type, auth_pass = _auth(r, m, path)
    gw = _gateway_vips(r, m, path, networks)
    advert = advert_int(r, m, path)
    if advert is not None and not float(advert).is_integer() and m.get("auth") is not None:
        r.err(m, "auth", f"{path}.auth", "a sub-second advert_int needs VRRPv3, "
              "which has no authentication: drop auth or use whole seconds")
    preempt, delay = _preempt(r, m, path)
    if len(active) == 1 and backup and vrid is not None and advert is not None \
            and active[0] in hosts and all(b in hosts for b in backup) and not r.tainted:
        return LvsPair(name, active[0], backup[0], vrid, pa, pb, auth_type, auth_pass, advert,
                       gw, tuple(backup[1:]), preempt, delay)
    return None


def _preempt(r: Reader, m: dict[str, Any], path: str) -> tuple[bool, int]:
    """preempt (default true) and preempt_delay (s, only with preempt)."""
    preempt = m.get("preempt", True)
    if not isinstance(preempt, bool):
        r.err(m, "preempt", f"{path}.preempt", f"must be true or false, not {preempt!r}")
        preempt = True
    delay = r.integer(m, "preempt_delay", path, 0, 1000, 0) or 0
    if delay and not preempt:
        r.err(m, "preempt_delay", f"{path}.preempt_delay",
              "preempt_delay needs preempt: true (with preempt: false the "
              "active never takes the VIPs back)")
    return preempt, delay


def advert_int(r: Reader, m: dict[str, Any], path: str) -> float | None:
    """VRRP advert interval in seconds: whole seconds 1-255 (VRRPv2), or a
    sub-second/fractional value 0.01-40.95 in centiseconds (VRRPv3)."""
    v = m.get("advert_int")
    if v is None:
        return 1
    key = f"{path}.advert_int"
    if isinstance(v, bool) or not isinstance(v, int | float):
        r.err(m, "advert_int", key, f"must be a number of seconds, not {kind_of(v)}")
        return None
    if float(v).is_integer():
        if not 1 <= v <= 255:
            r.err(m, "advert_int", key, f"{v} is outside 1-255 seconds")
            return None
        return int(v)
    cs = round(v * 100)
    if abs(v * 100 - cs) > 1e-6:
        r.err(m, "advert_int", key, f"{v} is finer than VRRPv3's centiseconds")
        return None
    if not 1 <= cs <= 4095:
        r.err(m, "advert_int", key,
              f"{v} is outside 0.01-40.95 s (VRRPv3, for a fractional interval)")
        return None
    return cs / 100


def _pair_hosts(r: Reader, m: dict[str, Any], path: str,
                hosts: dict[str, Host]) -> tuple[list[str], list[str]]:
    """The pair's active and backup hosts (a valid pair has one active, one or more
    backups)."""
    hm = r.mapping(m, "hosts", f"{path}.hosts") or {}
    states: dict[str, list[str]] = {"active": [], "backup": []}
    for h, state in hm.items():
        if str(h) not in hosts:
            r.unknown(hm, h, f"{path}.hosts.{h}", "host", h)
        if isinstance(state, str) and state in states:
            states[state].append(str(h))
        else:
            r.err(hm, h, f"{path}.hosts.{h}", f"state must be active or backup, not {state!r}")
    if len(states["active"]) != 1:
        r.err(m, "hosts", f"{path}.hosts",
              f"an LVS pair needs exactly one active host, found {len(states['active'])}")
    if not states["backup"]:
        r.err(m, "hosts", f"{path}.hosts", "an LVS pair needs at least one backup host, found 0")
    return states["active"], states["backup"]


def _priorities(r: Reader, m: dict[str, Any], path: str, backups: int) -> tuple[int, int]:
    pr = r.mapping(m, "priority", f"{path}.priority", {"active", "backup"}, optional=True) or {}
    # 254 is the take-over priority of `dsas assign` (model.TAKEOVER_PRIORITY)
    pa = r.integer(pr, "active", f"{path}.priority", 1, 253, 150) or 150
    pb = r.integer(pr, "backup", f"{path}.priority", 1, 252, 100) or 100
    if pa <= pb:
        r.err(m, "priority", f"{path}.priority",
              f"the active priority ({pa}) must be higher than the backup's ({pb})")
    lowest = pb - BACKUP_PRIORITY_STEP * (backups - 1)
    if backups > 1 and lowest < 1:
        r.err(m, "priority", f"{path}.priority",
              f"{backups} backups need priorities {pb} down to {lowest} (each "
              f"{BACKUP_PRIORITY_STEP} lower); raise the backup priority to at least "
              f"{1 + BACKUP_PRIORITY_STEP * (backups - 1)}")
    return pa, pb


def _auth(r: Reader, m: dict[str, Any], path: str) -> tuple[str | None, str | None]:
    au = r.mapping(m, "auth", f"{path}.auth", {"type", "password"}, optional=True)
    if au is None:
        return None, None
    auth_type = r.choice(au, "type", f"{path}.auth", ("PASS", "AH"), "PASS")
    auth_pass = r.string(au, "password", f"{path}.auth", pattern=PASSWORD,
                         what="password (1-8 printable characters, VRRP limit)")
    if auth_pass is None and au.get("password") is None:
        r.err(au, "password", f"{path}.auth.password", "missing required key")
    return auth_type, auth_pass


def _gateway_vips(r: Reader, m: dict[str, Any], path: str,
                  networks: dict[str, Network]) -> dict[str, IPv4Address]:
    gw: dict[str, IPv4Address] = {}
    gm = r.mapping(m, "gateway_vips", f"{path}.gateway_vips", optional=True) or {}
    for net_name, _, a, _ in on_networks(r, gm, f"{path}.gateway_vips", networks):
        gw[str(net_name)] = a
    return gw


def vrrp_ids(pair: LvsPair, vss: list[VirtualService],
             networks: dict[str, Network]) -> dict[str, int]:
    """network name -> the VRRP id the pair's instance on it uses (as keepalived.conf has)."""
    nets: list[str] = []
    for vs in vss:
        if vs.pair != pair.name:
            continue
        net = next((n for n in networks.values() if vs.vip in n.cidr), None)
        if net is not None and net.name not in nets:
            nets.append(net.name)
    for net_name in pair.gateway_vips:
        if net_name not in nets:
            nets.append(net_name)
    order = list(networks)
    nets.sort(key=lambda n: order.index(n) if n in order else len(order))
    return {n: (pair.virtual_router_id + i - 1) % 255 + 1 for i, n in enumerate(nets)}


def lvs_checks(r: Reader, known: Known) -> None:
    """What keepalived would accept but the cluster could not carry."""
    _vips_in_networks(r, known)
    _directors_run_lvs(r, known)
    _vrrp_ids_unique(r, known)


def _section(r: Reader, key: str) -> dict[str, Any]:
    section = r.data.get(key)
    return section if isinstance(section, dict) else {}


def _vips_in_networks(r: Reader, known: Known) -> None:
    vs_section = _section(r, "virtual_services")
    for vs in known.virtual_services.values():
        if r.broken.get("network"):
            break  # the VIP may be in the network refused for its own problem
        if not any(vs.vip in n.cidr for n in known.networks.values()):
            r.err(vs_section.get(vs.name), "vip", f"virtual_services.{vs.name}.vip",
                  f"{vs.vip} is in no network of the inventory (no director could carry it)")


def _directors_run_lvs(r: Reader, known: Known) -> None:
    pair_section = _section(r, "lvs_pairs")
    for pair in known.pairs.values():
        pm = pair_section.get(pair.name)
        hm = pm.get("hosts") if isinstance(pm, dict) else None
        for h in pair.directors:
            host = known.hosts.get(h)
            if host is not None and "lvs" not in host.services:
                r.err(hm, h, f"lvs_pairs.{pair.name}.hosts.{h}",
                      f"host {h} (role {host.role.name}) does not run the lvs service; "
                      f"add lvs to role {host.role.name}'s services or to the host's")


def _vrrp_ids_unique(r: Reader, known: Known) -> None:
    """keepalived's VRRP instances: one per network carrying the pair's VIPs, with
    virtual_router_id, +1, +2 ... (render.engine.render_keepalived). Two instances
    with one id on one network fight over the same virtual MAC."""
    pair_section = _section(r, "lvs_pairs")
    seen: dict[tuple[str, int], str] = {}
    vss = list(known.virtual_services.values())
    for pair in known.pairs.values():
        pm = pair_section.get(pair.name)
        for net_name, vrid in vrrp_ids(pair, vss, known.networks).items():
            key = (net_name, vrid)
            if key in seen:
                r.err(pm, "virtual_router_id", f"lvs_pairs.{pair.name}.virtual_router_id",
                      f"VRRP id {vrid} on network {net_name} is already used by LVS pair "
                      f"{seen[key]}")
            else:
                seen[key] = pair.name
