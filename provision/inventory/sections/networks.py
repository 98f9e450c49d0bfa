"""networks: name -> IPv4 network (and optional IPv6 prefix), gateway, VLAN, DNS, MTU."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

from ..model import IPv4Address, Network
from ..reader import LABEL, Reader

KEYS = {"cidr", "gateway", "vlan", "dns", "mtu", "ipv6", "gateway6"}


def networks(r: Reader, data: dict[str, Any]) -> dict[str, Network]:
    section = r.mapping(data, "networks", "networks", optional=False)
    out: dict[str, Network] = {}
    for name, path, n in r.entries(section or {}, "networks", KEYS, ("cidr",)):
        net = _network(r, section, name, path, n)
        if net is not None:
            out[str(name)] = net
    r.mark_broken("network", section, out)
    _overlaps(r, section, list(out.values()))
    return out


def _network(r: Reader, section: Any, name: Any, path: str, n: dict[str, Any]) -> Network | None:
    if not LABEL.match(str(name)):
        r.err(section, name, path, "network names must be DNS labels")
    try:
        cidr = ipaddress.IPv4Network(str(n.get("cidr")), strict=True)
    except ValueError as e:
        if n.get("cidr") is not None:
            r.err(n, "cidr", f"{path}.cidr", f"malformed network: {e}")
        return None
    gw = r.address(n, "gateway", f"{path}.gateway")
    if gw is not None:
        r.in_network(n, "gateway", f"{path}.gateway", gw, cidr)
    before = len(r.problems)
    vlan = r.integer(n, "vlan", path, 1, 4094, None)
    if len(r.problems) > before:
        r.bad_vlan.add(str(name))
    dns = tuple(r.addresses(n, "dns", path))
    mtu = r.integer(n, "mtu", path, 576, 9216, None)
    ipv6 = _ipv6(r, n, path)
    gw6 = _gateway6(r, n, path, ipv6)
    return Network(str(name), cidr, gw, vlan, dns, mtu, ipv6, gw6)


def _ipv6(r: Reader, n: dict[str, Any], path: str) -> ipaddress.IPv6Network | None:
    if n.get("ipv6") is None:
        return None
    try:
        ipv6 = ipaddress.IPv6Network(str(n["ipv6"]), strict=True)
    except ValueError as e:
        r.err(n, "ipv6", f"{path}.ipv6", f"malformed IPv6 prefix: {e}")
        return None
    if ipv6.prefixlen > 124:
        r.err(n, "ipv6", f"{path}.ipv6", f"prefix {ipv6} is too long for hosts (at most /124)")
    return ipv6


def _gateway6(r: Reader, n: dict[str, Any], path: str,
              ipv6: ipaddress.IPv6Network | None) -> ipaddress.IPv6Address | None:
    if n.get("gateway6") is None:
        return None
    gw6 = r.address6(n, "gateway6", f"{path}.gateway6")
    if gw6 is not None and (ipv6 is None or gw6 not in ipv6):
        r.err(n, "gateway6", f"{path}.gateway6",
              f"{gw6} is not on the network's ipv6 prefix ({ipv6})")
    return gw6


def on_networks(r: Reader, am: dict[str, Any] | None, path: str, networks: dict[str, Network]
                ) -> Iterator[tuple[Any, Network, IPv4Address, str]]:
    """(key, network, address, key path) of each entry of ``am`` (network name -> IPv4
    address) whose network is known and whose address is a host address on it."""
    for net_name in am or {}:
        apath = f"{path}.{net_name}"
        net = networks.get(str(net_name))
        if net is None:
            r.unknown(am, net_name, apath, "network", net_name)
            continue
        a = r.address(am, net_name, apath)
        if a is not None and r.in_network(am, net_name, apath, a, net.cidr):
            yield net_name, net, a, apath


def _overlaps(r: Reader, section: Any, nets: list[Network]) -> None:
    for i, na in enumerate(nets):
        for nb in nets[i + 1 :]:
            if na.cidr.overlaps(nb.cidr):
                r.err(section, nb.name, f"networks.{nb.name}.cidr",
                      f"{nb.cidr} overlaps network {na.name} ({na.cidr})")
            if na.ipv6 is not None and nb.ipv6 is not None and na.ipv6.overlaps(nb.ipv6):
                r.err(section, nb.name, f"networks.{nb.name}.ipv6",
                      f"{nb.ipv6} overlaps network {na.name} ({na.ipv6})")
