"""hosts: each machine — its role, hardware type, MACs, addresses, and what it overrides.

A host is built only when everything it refers to was built; what it refers to
that was refused for its own problem (``Reader.broken``) leaves it out silently.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..model import (
    BOND_MODES,
    BOOT_MODES,
    LOADERS,
    Bond,
    Host,
    HwType,
    IPv4Address,
    Network,
    Role,
    normalize_mac,
)
from ..reader import LABEL, Reader, kind_of
from .bond import bond
from .known import Known
from .networks import on_networks
from .push import push

KEYS = {"role", "macs", "addresses", "addresses6", "hwtype", "bond", "boot", "image", "loader",
        "kernel_args", "services", "netboot6", "push"}
REQUIRED = ("role", "macs", "addresses")


@dataclass
class _Seen:
    """Which host took each MAC and address so far (each may be used once)."""

    macs: dict[str, str] = field(default_factory=dict)
    ips: dict[IPv4Address, str] = field(default_factory=dict)
    ips6: dict[ipaddress.IPv6Address, str] = field(default_factory=dict)


@dataclass
class _Draft:
    """A host whose role and hardware type are known, with its MACs and addresses."""

    name: str
    path: str
    m: dict[str, Any]
    role: Role
    hw: HwType
    macs: list[str]
    addrs: dict[str, IPv4Address]
    addrs6: dict[str, ipaddress.IPv6Address]


def hosts(r: Reader, data: dict[str, Any], known: Known) -> dict[str, Host]:
    section = r.mapping(data, "hosts", "hosts") or {}
    out: dict[str, Host] = {}
    seen = _Seen()
    for name, path, m in r.entries(section, "hosts", KEYS, REQUIRED):
        if not LABEL.match(str(name)):
            r.err(section, name, path, "host names must be lower-case DNS labels")
        draft = _draft(r, str(name), path, m, known, seen)
        host = _host(r, draft, known) if draft is not None else None
        if host is not None:
            out[str(name)] = host
    r.mark_broken("host", section, out)
    return out


def _draft(r: Reader, name: str, path: str, m: dict[str, Any], known: Known,
           seen: _Seen) -> _Draft | None:
    role = _role(r, m, path, known.roles)
    hw = _hwtype(r, m, path, role, known.hwtypes)
    mac_list = r.seq(m, "macs", path, required=False)
    macs = _macs(r, mac_list, path, seen.macs, name)
    am = r.mapping(m, "addresses", f"{path}.addresses")
    addrs = _addresses(r, am, path, known.networks, seen.ips, name)
    addrs6 = addresses6(r, m, path, known.networks, seen.ips6, name)
    if role is None or hw is None:
        return None
    _joined_networks(r, m, am, path, role, addrs, addrs6)
    if len(macs) != len(hw.nics) and len(mac_list) == len(macs):
        r.err(m, "macs", f"{path}.macs",
              f"{len(macs)} MACs for hardware type {hw.name}, which has "
              f"{len(hw.nics)} NICs ({', '.join(hw.nics)})")
        return None
    return _Draft(name, path, m, role, hw, macs, addrs, addrs6)


def _host(r: Reader, d: _Draft, known: Known) -> Host | None:
    m, path, role, hw = d.m, d.path, d.role, d.hw
    host_bond = _bond(r, m, path, role, hw)
    image = r.string(m, "image", path) or role.image
    if image is not None and image not in known.images:
        r.unknown(m, "image", f"{path}.image", "image", image)
    extra = r.names(m, "services", path, known.services, "service")
    loader = _loader(r, m, path, role, hw)
    netboot6 = _netboot6(r, m, path, role, d.addrs6)
    if len(d.addrs) != len(role.networks) or len(d.macs) != len(hw.nics) or r.tainted:
        return None
    return Host(
        name=d.name,
        role=role,
        hwtype=hw,
        macs=tuple(d.macs),
        addresses=d.addrs,
        bond=host_bond,
        boot=r.choice(m, "boot", path, BOOT_MODES, role.boot),
        image=image,
        loader=loader,
        kernel_args=" ".join(x for x in (role.kernel_args, r.kernel_args(m, path)) if x),
        services=tuple(dict.fromkeys(role.services + extra)),
        networks_in_order=tuple(known.networks[n] for n in role.networks),
        addresses6=d.addrs6,
        netboot6=netboot6,
        push=push(r, m, path, role.push),
    )


def _role(r: Reader, m: dict[str, Any], path: str, roles: dict[str, Role]) -> Role | None:
    role_name = r.string(m, "role", path)
    role = roles.get(role_name or "")
    if role_name is not None and role is None:
        r.unknown(m, "role", f"{path}.role", "role", role_name)
    return role


def _hwtype(r: Reader, m: dict[str, Any], path: str, role: Role | None,
            hwtypes: dict[str, HwType]) -> HwType | None:
    hw_name = r.string(m, "hwtype", path) or (role.hwtype if role else None)
    hw = hwtypes.get(hw_name or "")
    if hw_name is None:
        if role is not None:
            r.err(m, "hwtype", f"{path}.hwtype", "missing: set hwtype on the host or on its role")
    elif hw is None:
        r.unknown(m, "hwtype", f"{path}.hwtype", "hardware type", hw_name)
    return hw


def _macs(r: Reader, mac_list: list[Any], path: str, seen: dict[str, str],
          host: str) -> list[str]:
    macs = []
    for i, raw in enumerate(mac_list):
        try:
            mac = normalize_mac(str(raw))
        except ValueError as e:
            r.err(mac_list, i, f"{path}.macs[{i}]", str(e))
            continue
        if mac in seen:
            r.err(mac_list, i, f"{path}.macs[{i}]",
                  f"MAC {mac} is already used by host {seen[mac]}")
        seen[mac] = host
        macs.append(mac)
    return macs


def _addresses(r: Reader, am: dict[str, Any] | None, path: str, networks: dict[str, Network],
               seen: dict[IPv4Address, str], host: str) -> dict[str, IPv4Address]:
    """A host's IPv4 addresses (network -> address), each a host address of its network."""
    addrs: dict[str, IPv4Address] = {}
    for net_name, net, a, apath in on_networks(r, am, f"{path}.addresses", networks):
        if net.gateway == a:
            r.err(am, net_name, apath, f"{a} is the gateway of network {net.name}")
        if a in seen:
            r.err(am, net_name, apath, f"{a} is already used by host {seen[a]}")
        seen[a] = host
        addrs[str(net_name)] = a
    return addrs


def addresses6(r: Reader, m: dict[str, Any], path: str, networks: dict[str, Network],
               seen: dict[ipaddress.IPv6Address, str],
               host: str) -> dict[str, ipaddress.IPv6Address]:
    """A host's IPv6 addresses (network -> address), each on its network's prefix."""
    out: dict[str, ipaddress.IPv6Address] = {}
    am = r.mapping(m, "addresses6", f"{path}.addresses6", optional=True)
    for net_name in am or {}:
        apath = f"{path}.addresses6.{net_name}"
        net = networks.get(str(net_name))
        if net is None:
            r.err(am, net_name, apath, f"unknown network {net_name!r}")
            continue
        a = r.address6(am, net_name, apath)
        if a is None:
            continue
        if net.ipv6 is None:
            r.err(am, net_name, apath, f"network {net.name} has no ipv6 prefix")
            continue
        if a not in net.ipv6 or a == net.ipv6.network_address:
            r.err(am, net_name, apath, f"{a} is not a host address of {net.ipv6}")
            continue
        if a in seen:
            r.err(am, net_name, apath, f"{a} is already used by host {seen[a]}")
        seen[a] = host
        out[str(net_name)] = a
    return out


def _joined_networks(r: Reader, m: dict[str, Any], am: dict[str, Any] | None, path: str,
                     role: Role, addrs: dict[str, IPv4Address],
                     addrs6: dict[str, ipaddress.IPv6Address]) -> None:
    """A host has an address on each network its role joins, and on no other."""
    for net_name in addrs6:
        if net_name not in role.networks:
            r.err(m["addresses6"], net_name, f"{path}.addresses6.{net_name}",
                  f"role {role.name} does not join network {net_name}")
    for net_name in role.networks:
        if net_name not in addrs and am is not None and net_name not in am:
            r.err(m, "addresses", f"{path}.addresses.{net_name}",
                  f"missing: role {role.name} joins network {net_name}")
    for net_name in addrs:
        if net_name not in role.networks:
            r.err(am, net_name, f"{path}.addresses.{net_name}",
                  f"role {role.name} does not join network {net_name}")


def _bond(r: Reader, m: dict[str, Any], path: str, role: Role, hw: HwType) -> Bond:
    host_bond = bond(r, m, path, role.bond)
    need = BOND_MODES[host_bond.mode]
    if len(hw.nics) < need:
        r.err(m, "bond" if "bond" in m else "hwtype", f"{path}.bond.mode",
              f"bond mode {host_bond.mode} needs at least {need} NICs; hardware type "
              f"{hw.name} has {len(hw.nics)}")
    if host_bond.primary and host_bond.primary not in hw.nics:
        r.err(m, "bond" if "bond" in m else "role", f"{path}.bond.primary",
              f"primary {host_bond.primary} is not a NIC of hardware type {hw.name} "
              f"({', '.join(hw.nics)})")
    return host_bond


def _loader(r: Reader, m: dict[str, Any], path: str, role: Role, hw: HwType) -> str:
    loader = r.choice(m, "loader", path, LOADERS, role.loader)
    if loader == "grub-secure" and "uefi" not in hw.firmware:
        where = "loader" if "loader" in m else "role"
        r.err(m, where, f"{path}.loader",
              f"loader grub-secure (Secure Boot through shim) needs UEFI; hardware "
              f"type {hw.name} boots only {', '.join(hw.firmware)}")
    return loader


def _netboot6(r: Reader, m: dict[str, Any], path: str, role: Role,
              addrs6: dict[str, ipaddress.IPv6Address]) -> bool:
    netboot6 = m.get("netboot6", False)
    if not isinstance(netboot6, bool):
        r.err(m, "netboot6", f"{path}.netboot6", f"must be true or false, not {kind_of(netboot6)}")
        netboot6 = False
    if netboot6 and role.networks and role.networks[0] not in addrs6:
        r.err(m, "netboot6", f"{path}.netboot6",
              f"netboot6 needs an addresses6 on the boot network {role.networks[0]}")
    return bool(netboot6)
