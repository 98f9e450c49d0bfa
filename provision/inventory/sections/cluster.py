"""cluster: the cluster's name and DNS domain, its masters and their addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

from ..model import Cluster, Host, IPv4Address, MasterPair, Network
from ..reader import DOMAIN, LABEL, Reader
from .masters import build_pair

KEYS = {"name", "domain", "master_address", "master_address6", "masters", "http_port",
        "kernel_args", "templates"}
REQUIRED = ("name", "domain", "master_address", "masters")


def cluster(r: Reader, data: dict[str, Any], networks: dict[str, Network],
            hosts: dict[str, Host]) -> Cluster | None:
    c = r.mapping(data, "cluster", "cluster", KEYS, REQUIRED)
    if c is None:
        return None
    name = r.string(c, "name", "cluster", pattern=LABEL, what="cluster name")
    domain = r.string(c, "domain", "cluster", pattern=DOMAIN, what="DNS domain")
    master = _master_address(r, c, networks)
    primary, secondary, pair = _masters(r, c, master, hosts)
    port = r.integer(c, "http_port", "cluster", 1, 65535, 80)
    templates = r.string(c, "templates", "cluster")
    master6 = master_address6(r, c, networks)
    if not (name and domain and master and primary and port):
        return None
    return Cluster(name, domain, master, primary, secondary, port,
                   r.kernel_args(c, "cluster"), templates, master6, pair)


def _master_address(r: Reader, c: dict[str, Any],
                    networks: dict[str, Network]) -> IPv4Address | None:
    master = r.address(c, "master_address", "cluster.master_address")
    if master is not None and networks and not r.broken.get("network") \
            and not any(master in n.cidr for n in networks.values()):
        r.err(c, "master_address", "cluster.master_address",
              f"{master} is in no network of the inventory")
    return master


def _masters(r: Reader, c: dict[str, Any], vip: IPv4Address | None, hosts: dict[str, Host]
             ) -> tuple[str | None, str | None, MasterPair | None]:
    ms = r.mapping(c, "masters", "cluster.masters", {"primary", "secondary", "pair"},
                   ("primary",))
    if ms is None:
        return None, None, None
    for key in ("primary", "secondary"):
        v = ms.get(key)
        if v is not None and str(v) not in hosts:
            r.unknown(ms, key, f"cluster.masters.{key}", "host", v)
    primary = str(ms.get("primary")) if ms.get("primary") else None
    secondary = str(ms["secondary"]) if ms.get("secondary") else None
    return primary, secondary, build_pair(r, ms, vip, primary, secondary, hosts)  # issue 18


def master_address6(r: Reader, c: dict[str, Any],
                    networks: dict[str, Network]) -> ipaddress.IPv6Address | None:
    """cluster.master_address6: the master's address on an inventory IPv6 prefix."""
    if c.get("master_address6") is None:
        return None
    path = "cluster.master_address6"
    a = r.address6(c, "master_address6", path)
    if a is None:
        return None
    if networks and not r.broken.get("network") and not any(
            n.ipv6 is not None and a in n.ipv6 for n in networks.values()):
        r.err(c, "master_address6", path, f"{a} is in no network's ipv6 prefix")
        return None
    return a
