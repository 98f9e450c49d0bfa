"""The DNS service against hostile TCP clients in the lab (issue 13 item 5): connections
that trickle a byte now and then, from one address, while a real dig asks from another."""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import time

from lab.testing import require_tool
from provision.services import dns as dns_service
from tests.support.dns_helpers import DOMAIN
from tests.support.dns_lab import CLIENT, SERVER, Net, wait_answering, write_inventory
from tests.support.hostile import LOG_LINE, log_problems
from tests.support.netns_thread import in_netns

OTHER_CLIENT = "198.18.0.51"  # a second address of the client namespace
TRICKLERS = 64  # as many as the server has TCP slots
TRICKLE_EVERY = 3.0  # seconds between two bytes of one connection (the idle timeout is 10)
DEADLINE = 10.0  # dns.TCP_MESSAGE: the bound the server must keep


def _closed(sock: socket.socket) -> bool:
    """Has the server closed this connection (EOF or reset waiting to be read)?"""
    ready, _, _ = select.select([sock], [], [], 0)
    if not ready:
        return False
    try:
        return sock.recv(64) == b""
    except OSError:
        return True


def _dig_tcp(net: Net, source: str) -> subprocess.CompletedProcess[str]:
    return net.client.run([require_tool("dig"), f"@{SERVER}", "-b", source, "+tcp", "+short",
                           "+time=3", "+tries=1", f"w101.{DOMAIN}"], check=False, timeout=20)


def test_trickling_tcp_clients_lose_their_slots_and_another_address_is_answered(
        net: Net) -> None:
    net.client.run(["ip", "addr", "add", f"{OTHER_CLIENT}/22", "dev",
                    _client_iface(net)])
    proc = net.serve(write_inventory(net.work / "c.yaml"), "--bind", SERVER)
    wait_answering(net.client, SERVER, proc)

    def connect() -> list[socket.socket]:
        out: list[socket.socket] = []
        try:
            for _ in range(TRICKLERS):
                s = socket.create_connection((SERVER, 53), timeout=5,
                                             source_address=(CLIENT, 0))
                out.append(s)
                try:
                    s.sendall(b"\x00")  # the first byte of a length prefix, then nothing
                except OSError:
                    pass  # refused over the per-client cap: closed by the server already
        except BaseException:
            for s in out:  # never leave a socket for the garbage collector to warn about
                s.close()
            raise
        return out

    conns = in_netns(net.client.name, connect)
    try:
        open_ = list(conns)
        deadline = time.monotonic() + 3
        while len(open_) > dns_service.TCP_PER_CLIENT and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded: until the server refused those over the cap, 3 s
            open_ = [s for s in open_ if not _closed(s)]
        # While they trickle, a real client from another address is answered over TCP.
        dig = _dig_tcp(net, OTHER_CLIENT)
        assert dig.returncode == 0 and dig.stdout.strip() == "198.18.1.1", (
            f"dig +tcp from {OTHER_CLIENT} not answered while {len(open_)} trickling "
            f"connections are open: {dig.stdout}{dig.stderr}")
        assert len(open_) < TRICKLERS  # one address got only its share of the slots
        started = time.monotonic()
        rounds = 0
        while open_ and rounds < 8:  # bounded: 8 x 3 s; the server's bound is 10 s
            time.sleep(TRICKLE_EVERY)
            rounds += 1
            still = []
            for s in open_:
                if _closed(s):
                    continue
                try:
                    s.send(b"\x1d")  # one more byte, just in time for a per-recv timeout
                    still.append(s)
                except OSError:
                    pass
            open_ = still
        held = time.monotonic() - started
        assert not open_, f"{len(open_)} trickling connections still open after {held:.0f}s"
        assert rounds <= int(DEADLINE // TRICKLE_EVERY) + 2, rounds  # closed within the bound
        assert _dig_tcp(net, CLIENT).stdout.strip() == "198.18.1.1"  # their slots came back
    finally:
        for s in conns:
            s.close()
    assert proc.poll() is None
    net.lab.stop(proc)
    log = next(net.work.glob("serve-*.log"))
    assert "tcp-client-busy" in log.read_text()
    assert [ln for ln in log_problems(log) if "Traceback" in ln] == []


def _client_iface(net: Net) -> str:
    out = net.client.run(["ip", "-o", "-4", "addr", "show"], timeout=10).stdout
    return next(line.split()[1] for line in out.splitlines() if CLIENT in line)


def test_descriptor_exhaustion_degrades_dns_tcp_only_counted_and_logged_once(
        net: Net) -> None:
    """With the process out of descriptors, DNS refuses TCP (logged once per interval) and
    goes on answering UDP; TCP comes back once descriptors are free again."""
    prlimit = require_tool("prlimit")
    proc = net.serve(write_inventory(net.work / "c.yaml"), "--bind", SERVER)
    wait_answering(net.client, SERVER, proc)
    fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    soft = subprocess.run([prlimit, "--pid", str(proc.pid), "--nofile", "--raw", "-o", "SOFT",
                           "--noheadings"], check=True, timeout=10, capture_output=True,
                          text=True).stdout.strip()
    subprocess.run([prlimit, "--pid", str(proc.pid), f"--nofile={fds + 2}:"], check=True,
                   timeout=10)  # the soft limit only: it can be raised again

    def connect() -> list[socket.socket]:
        out: list[socket.socket] = []
        try:
            for _ in range(6):  # the kernel completes them; accept(2) gets EMFILE
                out.append(socket.create_connection((SERVER, 53), timeout=5,
                                                    source_address=(CLIENT, 0)))
        except BaseException:
            for s in out:
                s.close()
            raise
        return out

    conns = in_netns(net.client.name, connect)
    log = net.work / "serve-0.log"
    try:
        deadline = time.monotonic() + 10
        while "dns: accept from" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # bounded: 10 s
        text = log.read_text()
        assert "Too many open files" in text, text
        udp = net.client.run([require_tool("dig"), f"@{SERVER}", "+short", "+time=2",
                              "+tries=1", f"w101.{DOMAIN}"], check=False, timeout=20)
        assert udp.stdout.strip() == "198.18.1.1", udp.stdout + udp.stderr
        assert proc.poll() is None
        assert log.read_text().count("dns: accept from") == 1  # once per interval, not a flood
    finally:
        for s in conns:
            s.close()
    subprocess.run([prlimit, "--pid", str(proc.pid), f"--nofile={soft}:"], check=True,
                   timeout=10)
    assert _dig_tcp(net, CLIENT).stdout.strip() == "198.18.1.1"
    assert proc.poll() is None
    assert [ln for ln in log_problems(log) if "Traceback" in ln] == []


def test_query_names_in_the_log_are_escaped(net: Net) -> None:
    """A forwarded query that fails is logged with its name: a newline in a label (any
    byte may be in one) must not forge a log line."""
    proc = net.serve(write_inventory(net.work / "c.yaml"), "--bind", SERVER,
                     "--dns-forward", "198.18.200.2:53", "--dns-forward-timeout", "0.5")
    wait_answering(net.client, SERVER, proc)  # nothing listens at the forwarder
    label = b"evil\n2026-01-01 00:00:00,000 CRITICAL dns: fake"  # 47 bytes: one label
    wire = (struct.pack("!HHHHHH", 77, 0x0100, 1, 0, 0, 0) + bytes([len(label)]) + label
            + b"\x07example\x03org\x00" + struct.pack("!HH", 1, 1))

    def ask() -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(wire, (SERVER, 53))
            return s.recv(4096)

    reply = in_netns(net.client.name, ask)
    assert reply[:2] == struct.pack("!H", 77) and reply[3] & 0xF == 2  # SERVFAIL
    log = net.work / "serve-0.log"
    deadline = time.monotonic() + 10
    while "no answer in time" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # bounded: 10 s
    text = log.read_text()
    assert "for evil\\x0a2026-01-01 00:00:00,000 CRITICAL dns: fake.example.org." in text, text
    levels = [m.group(1) for m in map(LOG_LINE.match, text.splitlines()) if m]
    assert "CRITICAL" not in levels, text
    assert log_problems(log) == [], text
