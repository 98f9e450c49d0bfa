"""What a DHCP reply on one network carries whoever asks: the network's options, the
lease-time options, and the discovery pool (every address nothing else claims)."""

from __future__ import annotations

from ipaddress import IPv4Address

from ..inventory.model import Inventory, Network
from ..protocol import dhcp_options as o
from .leases import Pool


def lease_options(t: int) -> dict[int, bytes]:
    """Options 51, 58 and 59 for a lease of ``t`` seconds."""
    return {o.LEASE_TIME: o.u32(t),
            o.RENEWAL_TIME: o.u32(t // 2),  # RFC 2131 4.4.5 defaults
            o.REBINDING_TIME: o.u32(t * 7 // 8)}


def network_options(net: Network) -> dict[int, bytes]:
    """The options every reply on ``net`` carries: mask, broadcast, router, DNS, MTU."""
    opts = {o.SUBNET_MASK: net.netmask.packed,
            o.BROADCAST_ADDRESS: net.cidr.broadcast_address.packed}
    if net.gateway is not None:
        opts[o.ROUTER] = net.gateway.packed
    if net.dns:
        opts[o.DNS_SERVERS] = o.ips(net.dns)
    if net.mtu:
        opts[26] = o.u16(net.mtu)  # RFC 2132 5.1 interface MTU
    return opts


def build_pool(inv: Inventory, net: Network, server_addresses: list[IPv4Address]) -> Pool:
    """Every address of the network that nothing else claims."""
    excluded = {int(a) for h in inv.hosts.values() for a in h.addresses.values()}
    excluded |= {int(a) for a in net.dns} | {int(a) for a in server_addresses}
    excluded.add(int(inv.cluster.master_address))
    if net.gateway is not None:
        excluded.add(int(net.gateway))
    for pair in inv.lvs_pairs.values():
        excluded |= {int(a) for a in pair.gateway_vips.values()}
    excluded |= {int(vs.vip) for vs in inv.virtual_services.values()}
    first = int(net.cidr.network_address) + 1
    last = int(net.cidr.broadcast_address) - 1
    return Pool(net.name, first, max(first, last),
                {x for x in excluded if first <= x <= last})
