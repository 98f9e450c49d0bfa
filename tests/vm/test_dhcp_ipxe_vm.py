"""The iPXE ROM in a QEMU guest takes its address from `dsas serve --only dhcp` (also
beside dnsmasq as ProxyDHCP) and follows its boot URL (the other DHCP clients are in
tests/lab/test_dhcp_lab.py)."""

from __future__ import annotations

import re
import subprocess
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from lab.testing import Lab, require_tool
from tests.support.dhcp_lab import (
    Server,
    wait_for_value,
)
from tests.support.dhcp_support import W1_MAC


@pytest.mark.parametrize("proxy", [False, True], ids=["dhcp", "proxy-beside-dnsmasq"])
def test_ipxe_rom_takes_an_address_and_follows_its_boot_url(lab: Lab, tmp_path: Path,
                                                            proxy: bool) -> None:
    """Real firmware: a SeaBIOS guest's iPXE ROM gets an address (w1's from us, or one
    from dnsmasq with us as ProxyDHCP) and then asks us for its iPXE script over HTTP."""
    from lab.qemu import Guest, GuestSpec

    require_tool("qemu-system-x86_64")
    srv = lab.netns("dsrv")
    lab.bridge(srv, "br0", "198.18.0.1/24")
    tap = lab.tap(srv, "br0")
    if proxy:
        other = lab.netns("dmsq")
        oif = lab.plug(srv, "br0", other, "198.18.0.2/24")
        other.popen([require_tool("dnsmasq"), "-d", "-k", "--conf-file=/dev/null", "--port=0",
                     f"--interface={oif}", "--bind-interfaces", "--no-ping",
                     "--dhcp-range=198.18.0.100,198.18.0.150,255.255.255.0,120",
                     f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}", "--pid-file="],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        other.wait_port(67)
    server = Server(lab, srv, "br0", tmp_path, ["--proxy"] if proxy else [])
    server.start()
    dump = tmp_path / "br0.txt"
    dump_err = tmp_path / "tcpdump.err"
    with open(dump, "w") as out, open(dump_err, "w") as err:
        srv.popen([require_tool("tcpdump"), "-l", "-n", "-i", "br0",
                   "tcp port 80 or udp port 69"], stdout=out, stderr=err)
    wait_for_value(lambda: "listening on" in dump_err.read_text(), 15, "tcpdump to listen")
    guest = Guest(lab, srv, GuestSpec("w1", [W1_MAC], firmware="bios"), [tap], tmp_path / "vm")
    guest.start()
    try:
        line = wait_for_value(lambda: next((x for x in dump.read_text().splitlines()
                                       if ".80: Flags [S]" in x or ".69: " in x), None),
                         60, "the guest's first boot-file request")
    finally:
        guest.stop()
        server.stop()
    source = IPv4Address(line.split()[2].rsplit(".", 1)[0])
    assert " > 198.18.0.1.80: " in line, line  # HTTP to us: the URL from our reply
    if proxy:
        assert source in IPv4Network("198.18.0.96/27"), line  # dnsmasq's range
        assert "OFFER 0.0.0.0 host=w1" in server.log()  # we never gave an address
        assert not re.search(r"(OFFER|ACK) 198\.", server.log())
    else:
        assert source == IPv4Address("198.18.0.11"), line
        assert "ACK 198.18.0.11 host=w1" in server.log()
