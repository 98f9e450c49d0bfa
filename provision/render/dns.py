"""DNS records for the cluster: every host address (forward and reverse) and every VIP."""

from __future__ import annotations

from dataclasses import dataclass

from ..inventory.model import Inventory


@dataclass(frozen=True, order=True)
class Record:
    name: str  # fully qualified, no trailing dot, lower case
    type: str  # A | AAAA | PTR
    value: str  # an address for A and AAAA; a fully qualified name for PTR


def host_fqdn(inv: Inventory, host: str, network: str | None = None) -> str:
    """w101.<domain> on a host's first network, w101.<network>.<domain> on others."""
    d = inv.cluster.domain
    return f"{host}.{network}.{d}" if network else f"{host}.{d}"


def reverse_name(address: str) -> str:
    return ".".join(reversed(str(address).split("."))) + ".in-addr.arpa"


def dns_records(inv: Inventory) -> list[Record]:
    """Forward and reverse records in a stable order (the zone's contents)."""
    d = inv.cluster.domain
    out: list[Record] = []
    for h in inv.hosts.values():
        for i, itf in enumerate(h.interfaces):
            fqdn = host_fqdn(inv, h.name, None if i == 0 else itf.network.name)
            out.append(Record(fqdn, "A", str(itf.address)))
            if i == 0:
                # every network also has the qualified name, so w101.inside works too
                out.append(Record(host_fqdn(inv, h.name, itf.network.name), "A",
                                  str(itf.address)))
            out.append(Record(reverse_name(str(itf.address)), "PTR", fqdn))
            if itf.address6 is not None:
                out.append(Record(fqdn, "AAAA", str(itf.address6)))
                if i == 0:
                    out.append(Record(host_fqdn(inv, h.name, itf.network.name), "AAAA",
                                      str(itf.address6)))
                out.append(Record(itf.address6.reverse_pointer, "PTR", fqdn))
    for role in inv.roles:
        for h in inv.hosts_of_role(role):
            out.append(Record(f"{role}.{d}", "A", str(h.primary_interface.address)))
    for m in inv.masters:
        out.append(Record(f"masters.{d}", "A", str(m.primary_interface.address)))
    vip_ptr: set[str] = set()
    for vs in inv.virtual_services.values():
        out.append(Record(f"{vs.name}.{d}", "A", str(vs.vip)))
        if str(vs.vip) not in vip_ptr:  # one PTR per VIP: the first service named on it
            vip_ptr.add(str(vs.vip))
            out.append(Record(reverse_name(str(vs.vip)), "PTR", f"{vs.name}.{d}"))
    seen: set[Record] = set()
    unique = []
    for r in out:
        if r not in seen:
            seen.add(r)
            unique.append(r)
    return unique
