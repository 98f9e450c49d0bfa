"""Netboot over IPv6 only (issue 22): a ``netboot6`` host's boot files name the master's
IPv6 address (``cluster.master_address6``); TFTP and HTTP listen there too; the RA sets
M when DHCPv6 runs; a report from the host's IPv6 address is accepted. The real clients
(curl over HTTP and TFTP, rdisc6) are in tests/lab/test_ipv6_netboot_lab.py, the guest
that boots this way to ``ready`` in tests/vm/test_firmware_lab.py (w108).
"""

from __future__ import annotations

import json
from ipaddress import IPv6Network

import pytest

from provision.inventory import loads
from provision.inventory.errors import InventoryError
from provision.policy.httpfiles import BadEvent, parse_event
from provision.render import render_host
from provision.services.ra import router_advertisement, solicitor_mac, wants_dhcp6
from tests.support.netboot6_support import INVENTORY, MASTER6


def test_a_netboot6_hosts_boot_files_name_the_masters_ipv6_address() -> None:
    inv = loads(INVENTORY, "lab.yaml")
    w1, w2 = inv.hosts["w1"], inv.hosts["w2"]
    assert w1.netboot6 and not w2.netboot6
    ipxe = render_host(inv, w1, "ipxe")
    assert f"kernel http://[{MASTER6}]/images/base/v1/vmlinuz " in ipxe, ipxe
    assert f"initrd http://[{MASTER6}]/images/base/v1/initrd.img" in ipxe
    assert f"dsas.url=http://[{MASTER6}]/hosts/w1/dsas.conf" in ipxe
    assert f"dsas.master=http://[{MASTER6}] " in ipxe
    # the initramfs has no DHCPv6 client and the RA no autonomous flag: the address
    # comes on the command line
    assert "dsas.ip6=2001:db8:18::11/64 dsas.gw6=2001:db8:18::fe" in ipxe
    assert "198.18.0.1" not in ipxe
    conf = render_host(inv, w1, "dsas.conf")
    assert f"MASTER_URL='http://[{MASTER6}]'" in conf or \
        f"MASTER_URL=http://[{MASTER6}]" in conf, conf
    # an IPv4 host is unchanged
    assert "http://198.18.0.1/images/base/v1/vmlinuz" in render_host(inv, w2, "ipxe")
    assert "dsas.ip6" not in render_host(inv, w2, "ipxe")


@pytest.mark.parametrize("change,message", [
    ((f'  master_address6: "{MASTER6}"\n', ""), "netboot6 needs cluster.master_address6"),
    ((f'master_address6: "{MASTER6}"', 'master_address6: "2001:db8:99::1"'),
     "is in no network's ipv6 prefix"),
    ((f'master_address6: "{MASTER6}"', 'master_address6: "198.18.0.1"'),
     "malformed IPv6 address"),
    (("netboot6: true", "netboot6: yes please"), "must be true or false"),
    (('addresses6: {lan: "2001:db8:18::11"}, netboot6', "netboot6"),
     "netboot6 needs an addresses6 on the boot network lan"),
])
def test_inventory_refuses_a_bad_netboot6(change: tuple[str, str], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        loads(INVENTORY.replace(*change, 1), "lab.yaml")


def test_a_report_from_the_hosts_ipv6_address_is_accepted() -> None:
    inv = loads(INVENTORY, "lab.yaml")
    body = json.dumps({"host": "w1", "stage": "ready"}).encode()
    ev = parse_event(body, "2001:db8:18::11", inv)
    assert ev.host == "w1" and ev.address == "2001:db8:18::11"
    assert parse_event(json.dumps({"stage": "ready"}).encode(), "2001:db8:18::11",
                       inv).host == "w1"  # found by its IPv6 address
    with pytest.raises(BadEvent, match="is not w1's address"):
        parse_event(body, "2001:db8:18::99", inv)
    with pytest.raises(BadEvent, match="2001:db8:18::1 is m01, not w1"):
        parse_event(body, "2001:db8:18::1", inv)
    assert parse_event(body, "::ffff:198.18.0.11", inv).address == "198.18.0.11"


def test_the_ra_sets_managed_only_where_dhcpv6_has_a_prefix() -> None:
    prefixes = [IPv6Network("2001:db8:18::/64")]
    assert router_advertisement(prefixes, managed=True)[5] == 0x80  # M
    assert router_advertisement(prefixes, managed=False)[5] == 0
    assert router_advertisement([], managed=True)[5] == 0  # no prefix: "no router here"


def test_managed_only_for_a_host_with_an_ipv6_address_on_the_link() -> None:
    """iPXE of a host with no IPv6 address, told M, solicits DHCPv6 for ~16 s per stage
    (answered "no addresses"): only a host DHCPv6 can serve is told M."""
    inv = loads(INVENTORY, "lab.yaml")
    prefixes = [IPv6Network("2001:db8:18::/64")]
    rs = bytes([133, 0, 0, 0, 0, 0, 0, 0])
    sllao = bytes([1, 1, 0x52, 0x54, 0, 0, 1, 2])  # w2's MAC
    assert solicitor_mac(rs + sllao, "fe80::1") == "52:54:00:00:01:02"
    assert solicitor_mac(rs, "fe80::5054:ff:fe00:101%br0") == "52:54:00:00:01:01"  # EUI-64
    assert solicitor_mac(rs + bytes([1, 0, 0, 0]), "fe80::1") is None  # zero length: stop
    assert solicitor_mac(rs, "::") is None
    assert wants_dhcp6(inv, "52:54:00:00:01:01", prefixes)  # w1: 2001:db8:18::11
    assert not wants_dhcp6(inv, "52:54:00:00:01:02", prefixes)  # w2: no IPv6 address
    assert not wants_dhcp6(inv, "52:54:00:99:99:99", prefixes)  # not in the inventory
    assert not wants_dhcp6(inv, None, prefixes)
    assert not wants_dhcp6(inv, "52:54:00:00:01:01", [IPv6Network("2001:db8:99::/64")])


