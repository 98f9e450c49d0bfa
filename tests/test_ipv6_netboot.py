"""Netboot over IPv6 only (issue 22): a ``netboot6`` host's boot files name the master's
IPv6 address (``cluster.master_address6``); TFTP and HTTP listen there too; the RA sets
M when DHCPv6 runs; a report from the host's IPv6 address is accepted. Units, then real
clients (curl over HTTP and TFTP, rdisc6) in a lab namespace with no IPv4 address.
The guest that boots this way to ``ready`` is in test_firmware_lab.py (w108).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from ipaddress import IPv6Network
from pathlib import Path

import pytest

from lab.testing import Lab, Netns, require_tool
from provision.inventory import loads
from provision.inventory.errors import InventoryError
from provision.policy.httpfiles import BadEvent, parse_event
from provision.render import render_host
from provision.services.ra import router_advertisement, solicitor_mac, wants_dhcp6
from tests.support.ipv6_support import INVENTORY as BASE

MASTER6 = "2001:db8:18::1"
INVENTORY = BASE.replace(
    "  masters: {primary: m01}\n",
    f'  masters: {{primary: m01}}\n  master_address6: "{MASTER6}"\n', 1).replace(
    '       addresses6: {lan: "2001:db8:18::11"}}\n',
    '       addresses6: {lan: "2001:db8:18::11"}, netboot6: true}\n', 1)


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


def test_tftp_http_and_reports_over_ipv6_only(lab: Lab, tmp_path: Path) -> None:
    """A client with only the host's IPv6 address (no IPv4 on its side of the link):
    boot.ipxe (found by its IPv6 address) and a file over HTTP, the same file over TFTP,
    a ready report; rdisc6 sees the M flag (from w1's MAC; not from an unknown one)."""
    curl, rdisc6 = require_tool("curl"), require_tool("rdisc6")
    inv = tmp_path / "lab.yaml"
    inv.write_text(INVENTORY)
    boot = tmp_path / "boot"
    (boot / "images" / "base" / "v1").mkdir(parents=True)
    payload = bytes(range(256)) * 40  # several TFTP blocks
    (boot / "ipxe.efi").write_bytes(payload)
    srv, cli = lab.netns("nb6"), lab.netns("nb6c")
    lab.bridge(srv, "br0", "198.18.0.1/24")
    srv.run(["ip", "-6", "addr", "add", f"{MASTER6}/64", "dev", "br0", "nodad"])
    ifc = lab.plug(srv, "br0", cli, "198.18.0.9/24")
    cli.run(["ip", "link", "set", ifc, "down"])
    cli.run(["ip", "link", "set", ifc, "address", "52:54:00:00:01:01"])  # w1's
    cli.run(["ip", "link", "set", ifc, "up"])
    cli.run(["ip", "-4", "addr", "flush", "dev", ifc])
    cli.run(["ip", "-6", "addr", "add", "2001:db8:18::11/64", "dev", ifc, "nodad"])
    log = tmp_path / "serve.log"
    with log.open("wb") as f:
        serve = srv.popen([sys.executable, "-m", "provision", "serve", "--only",
                           "tftp,http,ra,dhcp6", "--interface", "br0", "-i", str(inv),
                           "--state-dir", str(tmp_path / "state"), "--boot-root", str(boot),
                           "-v"], stdout=f, stderr=subprocess.STDOUT)
    srv.wait_port(80, "tcp")
    srv.wait_port(69, "udp")
    try:
        base = f"http://[{MASTER6}]"
        out = cli.run([curl, "-gfsS", "-m", "10", f"{base}/boot.ipxe"], check=False,
                      timeout=20)
        assert out.returncode == 0, out.stderr + log.read_text()[-2000:]
        assert f"dsas.url={base}/hosts/w1/dsas.conf" in out.stdout, out.stdout
        got = cli.run([curl, "-gfsS", "-m", "10", "-o", str(tmp_path / "h"),
                       f"{base}/ipxe.efi"], check=False, timeout=20)
        assert got.returncode == 0 and (tmp_path / "h").read_bytes() == payload, got.stderr
        got = cli.run([curl, "-gfsS", "-m", "20", "-o", str(tmp_path / "t"),
                       f"tftp://[{MASTER6}]/ipxe.efi"], check=False, timeout=30)
        assert got.returncode == 0, got.stderr + log.read_text()[-2000:]
        assert (tmp_path / "t").read_bytes() == payload
        missing = cli.run([curl, "-gfsS", "-m", "10", "-o", "/dev/null",
                           f"tftp://[{MASTER6}]/nothing-here"], check=False, timeout=20)
        assert missing.returncode != 0  # the TFTP error came back over IPv6
        report = cli.run([curl, "-gfsS", "-m", "10", "-H", "Content-Type: application/json",
                          "--data", '{"host": "w1", "stage": "ready"}',
                          f"{base}/api/v1/events"], check=False, timeout=20)
        assert report.returncode == 0, report.stderr + log.read_text()[-2000:]
        def rdisc(ns: Netns, ifname: str) -> str:
            deadline = time.monotonic() + 10  # until its link-local address is usable
            while ns.run(["ip", "-6", "addr", "show", "dev", ifname, "tentative"]).stdout:
                assert time.monotonic() < deadline, "link-local address still tentative"
                time.sleep(0.1)
            out = None
            for _ in range(20):
                out = ns.run([rdisc6, "-1", "-w", "500", ifname], check=False, timeout=10)
                if out.returncode == 0:
                    break
            assert out is not None and out.returncode == 0, out.stdout + out.stderr
            return out.stdout

        text = rdisc(cli, ifc)
        assert re.search(r"Stateful address conf\.\s+:\s+Yes", text), text
        assert "2001:db8:18::/64" in text
        other = lab.netns("nb6o")  # a MAC that is nobody's in the inventory
        oifc = lab.plug(srv, "br0", other, "198.18.0.10/24")
        text = rdisc(other, oifc)
        assert re.search(r"Stateful address conf\.\s+:\s+No", text), text
        assert "2001:db8:18::/64" in text  # the prefix is still on-link
        assert serve.poll() is None
        text = log.read_text()
        assert "tftp: served ipxe.efi to 2001:db8:18::11 (host=w1)" in text, text[-3000:]
        assert "Traceback" not in text
    finally:
        lab.stop(serve)
