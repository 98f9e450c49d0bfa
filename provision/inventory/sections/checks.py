"""Checks across sections, once each is translated: DNS names, where LVS hosts live,
and the IPv6 netboot's need of the master's IPv6 address."""

from __future__ import annotations

from typing import Any

from ..errors import Problem
from ..model import Cluster, Host
from ..reader import Reader, line_of
from .known import Known

SECTION_OF = {"network": "networks", "host": "hosts", "role": "roles",
              "virtual service": "virtual_services"}


def cross_checks(r: Reader, known: Known) -> None:
    _unique_names(r, known)
    _lvs_hosts_on_vip_networks(r, known)


def _unique_names(r: Reader, known: Known) -> None:
    """Hosts, roles, virtual services and networks share the cluster's DNS names."""
    owners: dict[str, str] = {"masters": "the masters' name"}
    for kind, names in (("network", known.networks), ("host", known.hosts),
                        ("role", known.roles), ("virtual service", known.virtual_services)):
        for n in names:
            if n in owners:
                section = SECTION_OF[kind]
                r.problems.append(Problem(
                    r.file, line_of(r.data.get(section), n), f"{section}.{n}",
                    f"the name {n!r} is already {owners[n]} (DNS names must be unique)"))
            else:
                owners[n] = f"{kind} {n!r}"


def _lvs_hosts_on_vip_networks(r: Reader, known: Known) -> None:
    """Every LVS host must be on the networks its VIPs live on."""
    for vs in known.virtual_services.values():
        pair = known.pairs.get(vs.pair)
        if pair is None:
            continue
        vnet = next((n for n in known.networks.values() if vs.vip in n.cidr), None)
        if vnet is None:
            continue  # reported by lvs_checks
        for h in pair.directors:
            host = known.hosts.get(h)
            if host is not None and vnet.name not in host.addresses:
                r.problems.append(Problem(
                    r.file, _vs_line(r, vs.name), f"virtual_services.{vs.name}.vip",
                    f"LVS host {h} has no address on network {vnet.name}, where {vs.vip} "
                    "lives"))


def _vs_line(r: Reader, name: str) -> int | None:
    section = r.data.get("virtual_services")
    return line_of(section.get(name), "vip") if isinstance(section, dict) else None


def netboot6_refused(r: Reader, data: dict[str, Any], cluster: Cluster,
                     hosts: dict[str, Host]) -> bool:
    """Hosts that boot over IPv6 need cluster.master_address6 (their boot files name it):
    True (each reported) when some do and it is not set."""
    if cluster.master_address6 is not None:
        return False
    for h in hosts.values():
        if h.netboot6:
            hm = (data.get("hosts") or {}).get(h.name) or {}
            r.err(hm, "netboot6", f"hosts.{h.name}.netboot6",
                  "netboot6 needs cluster.master_address6 (the master's IPv6 "
                  "address, which its boot files name)")
    return any(h.netboot6 for h in hosts.values())
