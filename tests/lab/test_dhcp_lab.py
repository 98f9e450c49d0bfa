"""The DHCP service with real clients in namespaces: `dsas serve --only dhcp` against
busybox udhcpc, ISC dhclient, ISC dhcrelay, dnsmasq (ProxyDHCP beside it) and a PXE
client made of our codec."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from lab.testing import Lab, Netns, require_tool
from tests.support.dhcp_lab import (
    DSAS,
    Server,
    last_event,
    set_mac,
    udhcpc_once,
    udhcpc_script,
    wait_for_value,
)
from tests.support.dhcp_support import OLD_MAC, UNKNOWN_MAC, W1_MAC, W2_MAC
from tests.support.paths import SUPPORT

CLIENT = str(SUPPORT / "dhcp_client.py")
LAN = IPv4Network("198.18.0.0/24")
INVENTORY_ADDRESSES = {IPv4Address(a) for a in ("198.18.0.1", "198.18.0.11", "198.18.0.12",
                                                "198.18.0.21", "198.18.0.254")}


@pytest.fixture
def pair(lab: Lab, tmp_path: Path) -> Iterator[tuple[Server, Netns, str]]:
    """A server namespace (198.18.0.1/24) and a bare client namespace on one veth."""
    srv, cli = lab.netns("dsrv"), lab.netns("dcli")
    sif, cif = lab.veth(srv, cli, "198.18.0.1/24", None)
    server = Server(lab, srv, sif, tmp_path)
    yield server, cli, cif
    server.stop()


def test_udhcpc_and_dhclient_get_their_inventory_address_and_name(
        pair: tuple[Server, Netns, str], tmp_path: Path) -> None:
    server, cli, cif = pair
    server.start()
    set_mac(cli, cif, W1_MAC)
    lease = udhcpc_once(cli, cif, tmp_path)
    assert lease is not None, server.log()
    assert lease["ip"] == "198.18.0.11" and lease["hostname"] == "w1"
    assert lease["domain"] == "lab.example" and lease["router"] == "198.18.0.254"
    assert lease["serverid"] == "198.18.0.1"

    dhclient = require_tool("dhclient")
    set_mac(cli, cif, W2_MAC)
    out = tmp_path / "dhclient.out"
    script = tmp_path / "dhclient.sh"
    script.write_text(f'#!/bin/sh\necho "$reason ip=$new_ip_address '
                      f'hostname=$new_host_name" >> {out}\n')
    script.chmod(0o755)
    proc = cli.popen([dhclient, "-d", "-1", "-sf", str(script), "-lf",
                      str(tmp_path / "dhclient.leases"), "-pf", str(tmp_path / "dhclient.pid"),
                      cif], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bound = wait_for_value(lambda: last_event(out, "BOUND"), 20, "dhclient BOUND")
    finally:
        server.lab.stop(proc)
    assert bound == {"ip": "198.18.0.12", "hostname": "w2"}


def test_unknown_machine_gets_nothing_then_a_pool_address_with_discovery(
        pair: tuple[Server, Netns, str], tmp_path: Path) -> None:
    server, cli, cif = pair
    set_mac(cli, cif, UNKNOWN_MAC)
    server.start()
    assert udhcpc_once(cli, cif, tmp_path, tries=2) is None
    assert f"ignoring unknown machine mac={UNKNOWN_MAC}" in server.log()
    server.stop()
    server.args = ["--discovery"]
    server.start()
    lease = udhcpc_once(cli, cif, tmp_path)
    assert lease is not None, server.log()
    ip = IPv4Address(lease["ip"])
    assert ip in LAN and ip not in INVENTORY_ADDRESSES and lease["hostname"] == ""
    listing = subprocess.run([DSAS, "discovered", "--state-dir", str(tmp_path / "state")],
                             capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0, listing.stderr
    assert UNKNOWN_MAC in listing.stdout and str(ip) in listing.stdout


def test_renew_after_restart_keeps_the_address(pair: tuple[Server, Netns, str],
                                               tmp_path: Path, lab: Lab) -> None:
    server, cli, cif = pair
    server.args = ["--discovery"]
    server.start()
    set_mac(cli, cif, UNKNOWN_MAC)
    script, out = udhcpc_script(tmp_path, configure=True)
    udhcpc = cli.popen([require_tool("udhcpc"), "-f", "-i", cif, "-s", str(script), "-t", "5",
                        "-T", "1", "-A", "1"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    first = wait_for_value(lambda: last_event(out, "bound"), 15, "first lease")
    server.stop()
    server.start()
    os.kill(udhcpc.pid, signal.SIGUSR1)  # udhcpc: renew now (unicast REQUEST, ciaddr set)
    renewed = wait_for_value(lambda: last_event(out, "renew"), 15, "renewal")
    assert renewed["ip"] == first["ip"]
    # busybox sends its SIGUSR1 renewal broadcast: REBINDING to the server (RFC 2131 4.3.2)
    assert re.search(rf"dhcp ACK {re.escape(first['ip'])} .* state=(renewing|rebinding) ",
                     server.log().split("service dhcp started")[-1]), server.log()
    lab.stop(udhcpc)
    cli.run(["ip", "addr", "flush", "dev", cif])
    # The lease survived the restart: another machine does not get that address.
    set_mac(cli, cif, "52:54:00:00:ee:77")
    lease = udhcpc_once(cli, cif, tmp_path)
    assert lease is not None and lease["ip"] != first["ip"], (lease, first)


def test_relay_gets_the_address_on_the_client_subnet(lab: Lab, tmp_path: Path) -> None:
    dhcrelay = require_tool("dhcrelay")
    srv, relay, cli = lab.netns("dsrv"), lab.netns("drly"), lab.netns("dcli")
    sif, rup = lab.veth(srv, relay, "198.18.0.1/24", "198.18.0.2/24")
    rdown, cif = lab.veth(relay, cli, "198.18.1.1/24", None)
    srv.run(["ip", "route", "add", "198.18.1.0/24", "via", "198.18.0.2"])
    server = Server(lab, srv, sif, tmp_path)
    server.start()
    relay.popen([dhcrelay, "-d", "-4", "-id", rdown, "-iu", rup, "198.18.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    relay.wait_port(67)  # dhcrelay listens: it relays from now on
    set_mac(cli, cif, W1_MAC)
    lease = udhcpc_once(cli, cif, tmp_path, tries=4)
    server.stop()
    assert lease is not None, server.log()
    assert lease["ip"] == "198.18.1.11" and lease["router"] == "198.18.1.1"
    assert lease["hostname"] == "w1"


def pxe_client(ns: Netns, iface: str, mac: str, *args: str) -> list[dict[str, Any]]:
    set_mac(ns, iface, mac)
    out = ns.run([sys.executable, CLIENT, iface, mac, *args], timeout=30, check=False)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("mac,profile,expected", [
    (W1_MAC, "bios", "undionly.kpxe"),
    (W1_MAC, "efi7", "ipxe.efi"),
    (W1_MAC, "efi9", "ipxe.efi"),
    (W1_MAC, "ipxe", "http://198.18.0.1/hosts/w1/boot.ipxe"),
    (OLD_MAC, "ipxe", "pxelinux.0"),
])
def test_boot_file_choice_on_the_wire(pair: tuple[Server, Netns, str], mac: str, profile: str,
                                      expected: str) -> None:
    server, cli, cif = pair
    server.start()
    replies = pxe_client(cli, cif, mac, "--profile", profile, "--request")
    assert [r["type"] for r in replies] == ["OFFER", "ACK"], server.log()
    for r in replies:
        assert r["file"] == expected and r["opt67"] == expected + "\0"
        assert r["siaddr"] == "198.18.0.1" and r["opt66"] == "198.18.0.1"
        assert r["source"] == "198.18.0.1"


def test_proxy_dhcp_beside_dnsmasq(lab: Lab, tmp_path: Path) -> None:
    dnsmasq = require_tool("dnsmasq")
    sw, srv, other, cli = (lab.netns("dsw"), lab.netns("dsrv"), lab.netns("dmsq"),
                           lab.netns("dcli"))
    lab.bridge(sw, "br0")
    sif = lab.plug(sw, "br0", srv, "198.18.0.1/24")
    oif = lab.plug(sw, "br0", other, "198.18.0.2/24")
    cif = lab.plug(sw, "br0", cli)
    other.popen([dnsmasq, "-d", "-k", "--conf-file=/dev/null", "--port=0",
                 f"--interface={oif}", "--bind-interfaces", "--no-ping",
                 "--dhcp-range=198.18.0.100,198.18.0.150,255.255.255.0,120",
                 f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}", "--pid-file="],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    other.wait_port(67)
    server = Server(lab, srv, sif, tmp_path, ["--proxy"])
    server.start()
    replies = pxe_client(cli, cif, W1_MAC, "--profile", "bios", "--offers", "2", "--wait", "4",
                         "--proxy-request", "198.18.0.1")
    server.stop()
    by = {(r["source"], r["type"], r.get("port", 67)): r for r in replies}
    address = by[("198.18.0.2", "OFFER", 67)]
    proxy = by[("198.18.0.1", "OFFER", 67)]
    assert IPv4Address(address["yiaddr"]) in LAN and address["file"] == ""
    assert proxy["yiaddr"] == "0.0.0.0" and proxy["opt60"] == "PXEClient"
    assert proxy["file"] == "undionly.kpxe" and proxy["siaddr"] == "198.18.0.1"
    ack = by[("198.18.0.2", "ACK", 67)]
    assert ack["yiaddr"] == address["yiaddr"]
    boot = by[("198.18.0.1", "ACK", 4011)]
    assert boot["yiaddr"] == "0.0.0.0" and boot["file"] == "undionly.kpxe"


