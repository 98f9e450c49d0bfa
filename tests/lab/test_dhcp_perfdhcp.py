"""No address is given to two machines under perfdhcp load (issue 20): Kea's perfdhcp
runs thousands of 4-way exchanges against `dsas serve` while a packet socket in the
client namespace records every ACK on the wire; then no address was ACKed to two
MACs, and the lease store holds each MAC's last ACKed address."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import struct
import threading
from pathlib import Path

import pytest

from lab.testing import Lab, require_tool, wait_for
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import BOOTREPLY, DhcpDecodeError, decode
from provision.services.dhcp_steer import worker_of
from tests.support.dhcp_lab import Server
from tests.support.netns_thread import in_netns

RELAY = "198.18.0.2"  # perfdhcp acts as a relay: giaddr is its address, on network lan
CLIENTS = 400  # more than the pool's ~240 free addresses: some must wait for a free one
ETH_P_IP = 0x0800


def _ack_sniffer(sock: socket.socket, acks: list[tuple[str, str]],
                 stop: threading.Event) -> None:
    """Every DHCPACK seen on the client's link: (address, MAC), in order."""
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            continue
        if len(frame) < 14 + 20 + 8 or frame[14 + 9] != socket.IPPROTO_UDP:
            continue
        ihl = (frame[14] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", frame, 14 + ihl)
        if sport != 67 or dport != 67:
            continue
        try:
            p = decode(frame[14 + ihl + 8:])
        except DhcpDecodeError:
            continue
        if p.op == BOOTREPLY and p.message_type == o.ACK:
            acks.append((str(p.yiaddr), p.mac))


@pytest.mark.parametrize("workers", [1, 2])
def test_no_address_is_acked_to_two_macs_under_perfdhcp(lab: Lab, tmp_path: Path,
                                                        workers: int) -> None:
    perfdhcp = require_tool("perfdhcp")
    srv, cli = lab.netns("pfsrv"), lab.netns("pfcli")
    sif, cif = lab.veth(srv, cli, "198.18.0.1/24", f"{RELAY}/24")
    server = Server(lab, srv, sif, tmp_path)
    server.args = ["--discovery", "--discovery-rate", "0", "--dhcp-workers", str(workers)]

    def packet_socket() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.bind((cif, ETH_P_IP))
        return s

    server.start()
    try:
        if workers > 1:
            wait_for(lambda: f"dhcp: {workers} workers serve" in server.log(), 30,
                     "the DHCP workers")
        sock = in_netns(cli.name, packet_socket)
        acks: list[tuple[str, str]] = []
        stop = threading.Event()
        sniffer = threading.Thread(target=_ack_sniffer, args=(sock, acks, stop), daemon=True)
        sniffer.start()
        try:
            out = cli.run([perfdhcp, "-4", "-l", RELAY, "-r", "500", "-p", "6", "-R",
                           str(CLIENTS), "-s", "5", "-d", "2", "198.18.0.1"], timeout=60,
                          check=False)
        finally:
            stop.set()
            sniffer.join(timeout=5)
            sock.close()
    finally:
        server.stop()
    text = out.stdout + out.stderr
    assert "received packets" in text, text[-2000:]
    holders: dict[str, set[str]] = {}
    for ip, mac in acks:
        holders.setdefault(ip, set()).add(mac)
    # perfdhcp repeats its clients: hundreds of ACKs for at most CLIENTS addresses
    assert len(acks) >= CLIENTS, f"only {len(acks)} ACKs seen:\n{text[-1500:]}"
    twice = {ip: macs for ip, macs in holders.items() if len(macs) > 1}
    assert not twice, f"addresses ACKed to two MACs: {sorted(twice.items())[:5]}"
    last = {mac: ip for ip, mac in acks}
    conn = sqlite3.connect(tmp_path / "state" / "state.db")
    try:
        stored = {mac: str(o.IPv4Address(ip)) for ip, mac in conn.execute(
            "SELECT ip, mac FROM dhcp_leases WHERE state = 'bound'")}
    finally:
        conn.close()
    if workers > 1:  # each worker gave its own share, each machine from one worker
        assert {int(o.IPv4Address(ip)) % workers for ip, _ in acks} == set(range(workers))
        for ip, mac in acks:
            k = worker_of(bytes.fromhex(mac.replace(":", "")), workers)
            assert int(o.IPv4Address(ip)) % workers == k, (ip, mac)
    wrong = {mac: (ip, stored.get(mac)) for mac, ip in last.items() if stored.get(mac) != ip}
    assert not wrong, f"{len(wrong)} ACKed leases not in the store as ACKed: " \
                      f"{sorted(wrong.items())[:5]}"


def test_a_dead_worker_stops_the_serve_and_the_others(lab: Lab, tmp_path: Path) -> None:
    srv, cli = lab.netns("pwsrv"), lab.netns("pwcli")
    sif, _ = lab.veth(srv, cli, "198.18.0.1/24", f"{RELAY}/24")
    server = Server(lab, srv, sif, tmp_path)
    server.args = ["--discovery", "--dhcp-workers", "3"]
    server.start()
    try:
        line = wait_for(lambda: re.search(r"dhcp: 3 workers serve .*\(pids (\d+),(\d+) ",
                                          server.log()), 30, "the DHCP workers")
        pids = [int(line.group(1)), int(line.group(2))]
        os.kill(pids[0], signal.SIGKILL)
        assert server.proc is not None
        assert server.proc.wait(timeout=30) == 1  # the DHCP service is dead: serve stops
        assert "service(s) died: dhcp" in server.log()
        wait_for(lambda: not Path(f"/proc/{pids[1]}").exists(), 15, "the other worker gone")
    finally:
        server.stop()
