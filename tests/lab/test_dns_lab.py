"""The DNS service for real: `dsas serve --only dns` in a namespace, dig and dnsperf as clients.

Topology (all in 198.18.0.0/15):

    client 198.18.0.50/22 ── master 198.18.0.1/22 (+198.18.0.3)   ── upstream 198.18.200.2
                                      198.18.200.1/24                   (dnsmasq, forwarding)
"""

from __future__ import annotations

import ipaddress
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from typing import Any

import pytest
from dnslib import DNSRecord

from lab.testing import read_until, require_tool
from provision.services import dns as dns_service
from provision.services.base import ServeContext
from tests.support.dns_helpers import DOMAIN, inventory, query, raw_header
from tests.support.dns_lab import (
    SERVER,
    SERVER2,
    SILENT,
    UPSTREAM,
    Net,
    dig,
    inside,
    wait_answering,
    write_inventory,
)

UPSTREAM_NAME = "ext.upstream.test"
UPSTREAM_ADDR = "198.18.200.77"


def section(reply: dict[str, Any], name: str) -> list[list[str]]:
    return [rr.split() for rr in reply.get(f"{name}_SECTION", [])]


def flags(reply: dict[str, Any]) -> set[str]:
    return set(str(reply["flags"]).split())


def test_answers_flags_sections_and_ttls_over_udp_and_tcp(net: Net) -> None:
    proc = net.serve(write_inventory(net.work / "c.yaml"), "--bind", SERVER)
    wait_answering(net.client, SERVER, proc)
    for transport in ("+notcp", "+tcp"):
        r = dig(net.client, SERVER, "W101.Lab.Test", transport, "+norec")
        assert r["protocol"] == ("TCP" if transport == "+tcp" else "UDP")
        assert r["status"] == "NOERROR" and flags(r) == {"qr", "aa"}
        assert section(r, "ANSWER") == [["W101.Lab.Test.", "300", "IN", "A", "198.18.1.1"]]
        assert r["OPT_PSEUDOSECTION"]["EDNS"]["udp"] == 1232
    r = dig(net.client, SERVER, "-x", "198.19.0.11")
    assert section(r, "ANSWER")[0][3:] == ["PTR", f"lvs1.outside.{DOMAIN}."]
    assert "aa" in flags(r) and "ra" not in flags(r)
    r = dig(net.client, SERVER, f"web.{DOMAIN}")
    assert sorted(a[4] for a in section(r, "ANSWER")) == ["198.18.1.1", "198.18.1.2",
                                                          "198.18.1.3"]
    assert {a[1] for a in section(r, "ANSWER")} == {"30"}
    r = dig(net.client, SERVER, DOMAIN, "NS")
    assert sorted(a[4] for a in section(r, "ANSWER")) == [f"m1.{DOMAIN}.", f"m2.{DOMAIN}."]
    assert sorted(a[4] for a in section(r, "ADDITIONAL")) == ["198.18.0.1", "198.18.0.2"]


def test_negative_answers_carry_the_soa_and_foreign_names_are_refused(net: Net) -> None:
    proc = net.serve(write_inventory(net.work / "c.yaml"), "--bind", SERVER)
    wait_answering(net.client, SERVER, proc)
    nx = dig(net.client, SERVER, f"nope.{DOMAIN}")
    assert nx["status"] == "NXDOMAIN" and "aa" in flags(nx) and nx["ANSWER"] == 0
    soa = section(nx, "AUTHORITY")
    assert len(soa) == 1 and soa[0][:4] == [f"{DOMAIN}.", "60", "IN", "SOA"]
    serial = int(soa[0][6])
    for name, qtype in ((f"w101.{DOMAIN}", "MX"), (f"inside.{DOMAIN}", "A")):
        nodata = dig(net.client, SERVER, name, qtype)
        assert nodata["status"] == "NOERROR" and nodata["ANSWER"] == 0, name
        assert [a[3] for a in section(nodata, "AUTHORITY")] == ["SOA"]
        assert int(section(nodata, "AUTHORITY")[0][6]) == serial
    ptr = dig(net.client, SERVER, "-x", "198.18.3.99")
    assert ptr["status"] == "NXDOMAIN"
    assert section(ptr, "AUTHORITY")[0][0] == "3.18.198.in-addr.arpa."
    for args in (("example.org",), ("example.org", "+tcp"), ("-x", "198.18.100.1")):
        ref = dig(net.client, SERVER, *args)
        assert ref["status"] == "REFUSED" and "aa" not in flags(ref), args


def test_a_large_role_is_truncated_over_udp_and_dig_retries_over_tcp(net: Net) -> None:
    proc = net.serve(write_inventory(net.work / "c.yaml", web_hosts=120), "--bind", SERVER)
    wait_answering(net.client, SERVER, proc)
    tc = dig(net.client, SERVER, f"web.{DOMAIN}", "+ignore")  # do not retry: show the TC
    assert "tc" in flags(tc) and tc["ANSWER"] == 0 and tc["protocol"] == "UDP"
    full = dig(net.client, SERVER, f"web.{DOMAIN}")  # dig retries over TCP on TC
    assert full["protocol"] == "TCP"  # we did not ask for TCP: dig switched on TC
    assert full["ANSWER"] == 120 and "tc" not in flags(full)
    small = dig(net.client, SERVER, f"w101.{DOMAIN}", "+noedns")
    assert "tc" not in flags(small) and small["ANSWER"] == 1


def test_forwarding_to_a_second_server_and_servfail_when_it_is_down(net: Net) -> None:
    hosts = net.work / "upstream-hosts"
    hosts.write_text(f"{UPSTREAM_ADDR} {UPSTREAM_NAME}\n")
    upstream = net.upstream.popen(
        [require_tool("dnsmasq"), "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts",
         f"--addn-hosts={hosts}", f"--listen-address={UPSTREAM}", "--bind-interfaces",
         f"--pid-file={net.work / 'dnsmasq.pid'}", "--user=root"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    net.upstream.wait_port(53)
    proc = net.serve(write_inventory(net.work / "c.yaml"), "--bind", SERVER,
                     "--dns-forward", UPSTREAM, "--dns-forward-timeout", "1")
    wait_answering(net.client, SERVER, proc)
    for transport in ("+notcp", "+tcp"):
        r = dig(net.client, SERVER, UPSTREAM_NAME, transport)
        assert r["status"] == "NOERROR", transport
        assert section(r, "ANSWER")[0][4] == UPSTREAM_ADDR
        assert "aa" not in flags(r) and "ra" in flags(r)
    own = dig(net.client, SERVER, f"w101.{DOMAIN}")
    assert "aa" in flags(own) and "ra" in flags(own)  # we recurse now: RA is honest
    net.lab.stop(upstream)  # down: port unreachable, SERVFAIL at once
    for transport in ("+notcp", "+tcp"):
        r = dig(net.client, SERVER, UPSTREAM_NAME, transport, "+time=4")
        assert r["status"] == "SERVFAIL" and r["QUESTION_SECTION"], transport
    # silent: a server that reads and never answers; SERVFAIL after our 1 s timeout
    net.upstream.popen([sys.executable, "-c", SILENT, UPSTREAM])
    net.upstream.wait_port(53, "tcp")
    for transport in ("+notcp", "+tcp"):
        r = dig(net.client, SERVER, UPSTREAM_NAME, transport, "+time=4")
        # An answer at all means our 1 s forward timeout fired within dig's 4 s (+tries=1).
        assert r["status"] == "SERVFAIL" and r["QUESTION_SECTION"], transport
    assert dig(net.client, SERVER, f"w102.{DOMAIN}")["status"] == "NOERROR"


def test_sighup_reload_without_dropping_queries_and_per_interface_binding(net: Net) -> None:
    dnsperf = require_tool("dnsperf")
    inv = write_inventory(net.work / "c.yaml")
    proc = net.serve(inv, "--interface", net.master_if)
    wait_answering(net.client, SERVER, proc)
    # both addresses of the interface answer; the other interface's address does not
    assert dig(net.client, SERVER2, f"w101.{DOMAIN}")["ANSWER"] == 1
    other = net.upstream.run(["dig", "@198.18.200.1", "+time=1", "+tries=1", f"m1.{DOMAIN}"],
                             check=False)
    assert other.returncode == 9, other.stdout  # 9: no reply
    before = int(section(dig(net.client, SERVER, DOMAIN, "SOA"), "ANSWER")[0][6])
    queries = net.work / "queries"
    queries.write_text("".join(f"{n}.{DOMAIN} A\n" for n in ("w101", "web", "m1", "masters"))
                       + f"1.1.18.198.in-addr.arpa PTR\n{DOMAIN} SOA\n")
    # stdbuf: dnsperf's status lines as they happen, not at exit (stdout is a pipe).
    load = net.client.popen(["stdbuf", "-oL", dnsperf, "-s", SERVER, "-d", str(queries),
                             "-l", "6", "-Q", "400", "-t", "2"], stdout=subprocess.PIPE, text=True)
    early = read_until(load, lambda t: "Started at" in t, 20, "dnsperf to start sending")
    write_inventory(inv, db_ip="198.18.3.31")  # the db-read VIP moves
    assert load.poll() is None  # the load runs across the reload
    proc.send_signal(signal.SIGHUP)
    new = None
    for _ in range(40):  # bounded: the supervisor polls once a second
        r = dig(net.client, SERVER, f"db-read.{DOMAIN}")
        new = section(r, "ANSWER")[0][4]
        if new == "198.18.3.31":
            break
        time.sleep(0.25)
    assert new == "198.18.3.31"
    assert load.poll() is None  # still sending after the new zone answered
    after = int(section(dig(net.client, SERVER, DOMAIN, "SOA"), "ANSWER")[0][6])
    assert after > before
    out, _ = load.communicate(timeout=30)
    out = early + out
    lost = [ln for ln in out.splitlines() if "Queries lost" in ln]
    sent = [ln for ln in out.splitlines() if "Queries sent" in ln]
    completed = [ln for ln in out.splitlines() if "Queries completed" in ln]
    assert lost and lost[0].split()[2] == "0", out
    # Every query sent was answered (the rate dnsperf reached is bench/dns.py's business).
    assert sent and completed and completed[0].split()[2] == sent[0].split()[2], out
    assert int(sent[0].split()[2]) > 0, out
    assert re.search(r"Response codes:\s+NOERROR \d+ \(100.00%\)\n", out), out
    assert proc.poll() is None


# -- the service in this process, its sockets in the lab's namespaces ---------------


def exchange(sock: socket.socket, data: bytes) -> bytes | None:
    sock.send(data)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return None


@pytest.mark.parametrize("batch", [True, False], ids=["recvmmsg", "recvfrom"])
def test_bad_packets_are_answered_or_dropped_counted_and_the_service_lives(
        net: Net, batch: bool) -> None:
    ctx = ServeContext(inventory=inventory(3), interfaces=[], state_dir=net.work / "st",
                       boot_root=net.work, bind_address=ipaddress.IPv4Address(SERVER))
    svc = dns_service.DnsService(ctx, batch=batch)
    with inside(net.master):
        svc.start()
    try:
        with inside(net.client):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tcp = socket.create_connection((SERVER, 53), timeout=2)
        with udp, tcp:
            udp.settimeout(0.5)
            udp.connect((SERVER, 53))
            good = bytes(query(f"w101.{DOMAIN}", ident=11).pack())
            assert exchange(udp, b"\x00\x01\x02") is None  # short: dropped
            assert exchange(udp, good + b"\0" * 2000) is None  # oversized: dropped
            reply = exchange(udp, good)
            assert reply is not None and DNSRecord.parse(reply).header.id == 11
            assert exchange(udp, reply) is None  # a response: dropped, no ping-pong
            bad = exchange(udp, raw_header(ident=12) + b"\x05ab")
            assert bad is not None and bad[:2] == b"\x00\x0c" and bad[3] & 0xF == 1  # FORMERR
            two = exchange(udp, raw_header(ident=13, qd=2) + good[12:] * 2)
            assert two is not None and two[3] & 0xF == 1
            upd = exchange(udp, raw_header(ident=14, flags=5 << 11) + good[12:])
            assert upd is not None and upd[3] & 0xF == 4  # NOTIMP
            tcp.sendall(struct.pack("!H", len(good)) + good)
            assert len(tcp.recv(4096)) > 2
            tcp.sendall(b"\x7f\xff")  # a 32767-byte query: the connection is closed
            assert tcp.recv(10) == b""
            assert exchange(udp, good) is not None  # still serving
        assert svc.alive()
        m = ctx.metrics
        assert m.get(dns_service.M_DROPPED, reason="short") == 1
        assert m.get(dns_service.M_DROPPED, reason="oversized") == 2  # one UDP, one TCP
        assert m.get(dns_service.M_DROPPED, reason="response") == 1
        assert m.get(dns_service.M_MALFORMED, reason="malformed") == 1
        assert m.get(dns_service.M_QUERIES, rcode="NOERROR") == 3
        assert m.get(dns_service.M_QUERIES, rcode="FORMERR") == 1
        assert m.get(dns_service.M_QUERIES, rcode="NOTIMP") == 1
        first = svc.serial
        svc.reload(inventory(3, db_ip="198.18.3.31"))
        svc.reload(inventory(3, db_ip="198.18.3.32"))  # twice in one second: still increasing
        assert svc.serial == first + 2 or svc.serial > first + 2
        answer = svc.responder.zone.lookup(f"db-read.{DOMAIN}")
        assert str(answer.rr[0].rdata) == "198.18.3.32"
    finally:
        threads = list(svc._threads)
        svc.stop()
    # shutdown() woke the loops: every thread ended within stop()'s join, none left behind.
    assert threads and not [t.name for t in threads if t.is_alive()]
    assert not svc.alive()
