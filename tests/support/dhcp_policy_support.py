"""The DHCP policy driven with encoded packets: an inventory, a link, a clock and
run() (test_dhcp_policy, test_dhcp_decisions, test_json_output)."""

from __future__ import annotations

from ipaddress import IPv4Network

from provision.inventory import loads
from provision.policy.dhcp import (
    Decision,
    DhcpPolicy,
    Link,
)
from provision.protocol.dhcp import decode, encode
from tests.support.dhcp_support import (
    INVENTORY,
    SERVER,
    client_packet,
)

INV = loads(INVENTORY, "lab.yaml")


LAN = Link("eth0", SERVER, IPv4Network("198.18.0.0/24"))


T0 = 1_000_000.0


def run(p: DhcpPolicy, mtype: int, mac: str, now: float = T0, link: Link = LAN,
        **kw: object) -> Decision:
    pkt = client_packet(mtype, mac, **kw)  # type: ignore[arg-type]
    return p.handle(decode(encode(pkt)), link, now)  # through the codec, as on the wire
