"""IPv6 in the inventory, DNS (AAAA and ip6.arpa PTR), dsas.conf and dsas-init, and the
prefix in router advertisements. rdisc6 and dig against `dsas serve` in a lab namespace
are in tests/lab/test_ipv6_lab.py; a dual-stack guest answering ping on both addresses is
in tests/vm/test_firmware_lab.py.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Network

import pytest

from provision.inventory import loads
from provision.inventory.errors import InventoryError
from provision.policy.dns import Zone, reverse_zones6
from provision.render import render_host
from provision.services.ra import link_prefixes, router_advertisement
from tests.support.dsas_init_support import Machine, conf
from tests.support.ipv6_support import INVENTORY


def test_inventory_takes_a_prefix_per_network_and_an_address_per_host() -> None:
    inv = loads(INVENTORY, "lab.yaml")
    assert inv.networks["lan"].ipv6 == IPv6Network("2001:db8:18::/64")
    w1 = inv.hosts["w1"]
    assert w1.interfaces[0].cidr6 == "2001:db8:18::11/64" and w1.interfaces[1].cidr6 == ""
    assert inv.hosts["w2"].interfaces[0].address6 is None


@pytest.mark.parametrize("change,message", [
    (('far: {cidr: 198.18.1.0/24, vlan: 3,',
      'far: {cidr: 198.18.1.0/24, ipv6: "2001:db8:18::/48", vlan: 3,'), "overlaps network lan"),
    (('lan: "2001:db8:18::11"', 'lan: "2001:db8:19::11"'), "is not a host address of"),
    (('lan: "2001:db8:18::11"', 'lan: "2001:db8:18::1"'), "already used by host m01"),
    (('lan: "2001:db8:18::11"', 'lan: "2001:db8:18::zz"'), "malformed IPv6 address"),
    (('addresses6: {lan: "2001:db8:18::11"}', 'addresses6: {far: "2001:db8:18::11"}'),
     "network far has no ipv6 prefix"),
    (('gateway6: "2001:db8:18::fe"', 'gateway6: "2001:db8:99::fe"'), "not on the network's ipv6"),
    (('ipv6: "2001:db8:18::/64"', 'ipv6: "2001:db8:18::1/64"'), "malformed IPv6 prefix"),
])
def test_inventory_refuses_bad_ipv6(change: tuple[str, str], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        loads(INVENTORY.replace(*change, 1), "lab.yaml")


def test_dns_answers_aaaa_and_ip6_arpa_ptr() -> None:
    zone = Zone(loads(INVENTORY, "lab.yaml"), serial=7)
    for name in ("w1.lab.example", "w1.lan.lab.example"):
        r = zone.lookup(name, "AAAA")
        assert [str(rr.rdata) for rr in r.rr] == ["2001:db8:18::11"], name
    assert [str(rr.rdata) for rr in zone.lookup("w1.lab.example", "A").rr] == ["198.18.0.11"]
    ptr = "1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    r = zone.lookup(ptr, "PTR")
    assert [str(rr.rdata) for rr in r.rr] == ["w1.lab.example."] and r.header.aa == 1
    apex = "0.0.0.0.8.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    assert zone.lookup(apex, "SOA").rr
    assert not zone.lookup("w2.lab.example", "AAAA").rr  # NODATA: w2 has no IPv6
    assert reverse_zones6([IPv6Network("2001:db8:18::/62")]) == [
        f"{n}.0.0.0.8.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa" for n in "0123"]


def test_dsas_conf_carries_ipv6_addresses_and_gateway() -> None:
    inv = loads(INVENTORY, "lab.yaml")
    text = render_host(inv, inv.hosts["w1"], "dsas.conf")
    assert "IP6ADDRESS0=2001:db8:18::11/64\nGATEWAY6[0]=2001:db8:18::fe\n" in text
    assert "IP6ADDRESS1" not in text
    assert "IP6ADDRESS" not in render_host(inv, inv.hosts["w2"], "dsas.conf")


def test_dsas_init_applies_ipv6_address_and_route(machine: Machine) -> None:
    out = machine.run(conf(IP6ADDRESS0="2001:db8:18::21/64", **{"GATEWAY6[0]": "2001:db8:18::fe"}))
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = machine.commands()
    assert "ip -6 addr add 2001:db8:18::21/64 dev bond0 nodad" in cmds
    assert "ip -6 route replace default via 2001:db8:18::fe dev bond0" in cmds
    assert "bond0=2001:db8:18::21/64" in out.stdout
    bad = machine.run(conf(IP6ADDRESS0="2001:db8:18::21"))
    assert bad.returncode != 0 and "IP6ADDRESS0" in bad.stdout


def test_router_advertisement_carries_the_prefix_on_link_without_autoconf() -> None:
    inv = loads(INVENTORY, "lab.yaml")
    prefixes = link_prefixes(inv, IPv4Address("198.18.0.1"))
    assert prefixes == [IPv6Network("2001:db8:18::/64")]
    assert link_prefixes(inv, IPv4Address("198.18.1.1")) == []
    ra = router_advertisement(prefixes)
    assert len(ra) == 16 + 32 and ra[6:8] == b"\x00\x00"  # still not a default router
    kind, length, plen, flags, valid, preferred, _, prefix = struct.unpack(
        "!BBBBIII16s", ra[16:])
    assert (kind, length, plen) == (3, 4, 64)
    assert flags == 0x80 and valid > 0 and preferred > 0  # L, not A
    assert prefix == IPv6Network("2001:db8:18::/64").network_address.packed


