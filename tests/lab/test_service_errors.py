"""Service error paths no other test reaches (issue 24 items 7 and 8): the DHCP lease
commit failing, the policy raising, a send failing; DNS with its TCP slots full, an
idle TCP client, a full forward queue; an HTTP client aborting mid-transfer, and the
ETag of a kernel rewritten at the same size. Real sockets in lab namespaces."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sqlite3
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from dnslib import DNSRecord

from lab.testing import Lab, wait_for
from provision.policy.leases import BOUND, LeasePut
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import encode
from provision.services import dns as dns_service
from provision.services.base import ServeContext
from provision.state.leases import LeaseJournal
from tests.support.bootfiles_lab import CLI, HTTP, SRV, start_lab
from tests.support.dhcp_served import Served
from tests.support.dhcp_support import IPXE_ROM, SERVER, W1_MAC, client_packet
from tests.support.dns_helpers import DOMAIN, inventory, query
from tests.support.dns_lab import SERVER as DNS_SERVER
from tests.support.dns_lab import SILENT, UPSTREAM, Net, inside

# -- DHCP ---------------------------------------------------------------------------

def _offer(served: Served, mac: str) -> tuple[int, str]:
    disc = client_packet(o.DISCOVER, mac, broadcast=True)
    served.send(encode(disc))
    got = served.replies(disc.xid)
    assert got and got[0].message_type == o.OFFER, got
    return disc.xid, str(got[0].yiaddr)


def test_lease_commit_failure_withholds_the_ack_and_the_next_request_is_served(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    mac = "52:54:00:00:ee:51"
    real_commit = LeaseJournal.commit
    failed: list[int] = []

    def commit_failing_once(self: LeaseJournal, changes: list[Any], now: float) -> None:
        binds = [c for c in changes if isinstance(c, LeasePut) and c.lease.state == BOUND]
        if binds and not failed:
            failed.append(len(changes))
            raise sqlite3.OperationalError("disk I/O error")
        real_commit(self, changes, now)

    monkeypatch.setattr(LeaseJournal, "commit", commit_failing_once)
    m = served.ctx.metrics
    xid, ip = _offer(served, mac)
    req = client_packet(o.REQUEST, mac, xid=xid, broadcast=True, requested=ip, server=SERVER)
    served.send(encode(req))
    wait_for(lambda: m.get("dsas_dhcp_store_errors_total") == 1, 10, "the failed commit")
    # The commit failed, so the ACK that waited for it never leaves.
    assert served.replies(xid, wait=1.0) == []
    assert m.get("dsas_dhcp_sent_total", type="ACK") == 0
    again = client_packet(o.REQUEST, mac, broadcast=True, requested=ip, server=SERVER)
    served.send(encode(again))
    ack = served.replies(again.xid, wait=5)
    assert ack and ack[0].message_type == o.ACK and str(ack[0].yiaddr) == ip
    db = sqlite3.connect(served.ctx.store.path)
    rows = db.execute("SELECT mac, state FROM dhcp_leases WHERE ip = ?",
                      (int(ipaddress.IPv4Address(ip)),)).fetchall()
    db.close()
    assert rows == [(mac, "bound")]
    assert served.svc.alive()


def test_a_policy_exception_drops_that_request_only(served: Served,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    policy = served.svc.policy
    assert policy is not None
    real_handle = policy.handle
    bad_mac = "52:54:00:00:ee:66"

    def handle(req: Any, link: Any, now: float) -> Any:
        if req.mac == bad_mac:
            raise KeyError("a bug in the policy")
        return real_handle(req, link, now)

    monkeypatch.setattr(policy, "handle", handle)
    bad = client_packet(o.DISCOVER, bad_mac, broadcast=True)
    served.send(encode(bad))
    m = served.ctx.metrics
    wait_for(lambda: m.get("dsas_dhcp_dropped_total", reason="internal_error") == 1, 10,
             "the internal_error drop")
    assert served.replies(bad.xid, wait=0.5) == []
    good = client_packet(o.DISCOVER, W1_MAC, broadcast=True, extra=IPXE_ROM)
    served.send(encode(good))
    offers = served.replies(good.xid)
    assert offers and str(offers[0].yiaddr) == "198.18.0.11"
    assert served.svc.alive()


class _FailingSends:
    """A socket whose next ``n`` sendto calls fail as a full or unreachable link would."""

    def __init__(self, sock: socket.socket, n: int) -> None:
        self._sock, self.left = sock, n

    def sendto(self, *args: Any) -> int:
        if self.left > 0:
            self.left -= 1
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        return self._sock.sendto(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def test_a_send_error_is_counted_and_the_next_reply_goes_out(served: Served) -> None:
    eps = served.svc._endpoints
    assert eps
    failing = _FailingSends(eps[0].sock, 1)
    eps[0].sock = failing  # type: ignore[assignment]
    m = served.ctx.metrics
    first = client_packet(o.DISCOVER, W1_MAC, broadcast=True)
    served.send(encode(first))
    wait_for(lambda: m.get("dsas_dhcp_send_errors_total") == 1, 10, "the send error")
    assert failing.left == 0 and served.replies(first.xid, wait=0.5) == []
    second = client_packet(o.DISCOVER, W1_MAC, broadcast=True)
    served.send(encode(second))
    got = served.replies(second.xid)
    assert got and got[0].message_type == o.OFFER
    # counters reach the registry on the loop's next flush (every 0.1 s), not per packet
    wait_for(lambda: m.get("dsas_dhcp_sent_total", type="OFFER") == 1, 10, "the OFFER counted")
    assert served.svc.alive()


# -- DNS ----------------------------------------------------------------------------

def _dns(net: Net, monkeypatch: pytest.MonkeyPatch, forwarders: tuple[str, ...] = (),
         forward_timeout: float = 2.0, **limits: Any) -> dns_service.DnsService:
    for name, value in limits.items():
        monkeypatch.setattr(dns_service, name, value)
    ctx = ServeContext(inventory=inventory(3), interfaces=[], state_dir=net.work / "st",
                       boot_root=net.work, bind_address=ipaddress.IPv4Address(DNS_SERVER))
    svc = dns_service.DnsService(ctx, tuple(dns_service.Upstream.parse(f) for f in forwarders),
                                 forward_timeout)
    with inside(net.master):
        svc.start()
    return svc


def _tcp(net: Net) -> socket.socket:
    with inside(net.client):
        s = socket.create_connection((DNS_SERVER, 53), timeout=5)
    return s


def _tcp_ask(s: socket.socket, name: str, ident: int) -> DNSRecord | None:
    q = bytes(query(name, ident=ident).pack())
    s.sendall(struct.pack("!H", len(q)) + q)
    head = s.recv(2)
    if len(head) < 2:
        return None
    (n,) = struct.unpack("!H", head)
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return DNSRecord.parse(data)


def test_dns_tcp_slots_full_closes_the_newcomer_and_frees_on_close(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = _dns(net, monkeypatch, TCP_CLIENTS=2)
    m = svc.ctx.metrics
    try:
        held = [_tcp(net) for _ in range(2)]
        for i, s in enumerate(held):  # both are served: both hold a slot
            r = _tcp_ask(s, f"w101.{DOMAIN}", 20 + i)
            assert r is not None and r.header.id == 20 + i
        late = _tcp(net)
        late.settimeout(5)
        assert late.recv(10) == b""  # closed at once: no slot
        late.close()
        wait_for(lambda: m.get(dns_service.M_DROPPED, reason="tcp-busy") >= 1, 10,
                 "the tcp-busy drop")
        held.pop().close()  # a slot frees
        again = wait_for(lambda: _retry_tcp(net, 30), 10, "a free TCP slot")
        assert again.header.id == 30
        for s in held:
            s.close()
        with inside(net.client):  # UDP was never affected
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with u:
            u.settimeout(5)
            u.sendto(bytes(query(f"w101.{DOMAIN}", ident=31).pack()), (DNS_SERVER, 53))
            assert DNSRecord.parse(u.recv(4096)).header.id == 31
        assert svc.alive()
    finally:
        svc.stop()


def _retry_tcp(net: Net, ident: int) -> DNSRecord | None:
    s = _tcp(net)
    try:
        return _tcp_ask(s, f"w101.{DOMAIN}", ident)
    except OSError:
        return None
    finally:
        s.close()


def test_dns_idle_tcp_client_is_closed_and_its_slot_freed(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    # TCP_MESSAGE bounds each whole message, idle wait included (it is TCP_IDLE by default)
    svc = _dns(net, monkeypatch, TCP_CLIENTS=1, TCP_IDLE=0.5, TCP_MESSAGE=0.5)
    try:
        with _tcp(net) as idle:
            idle.settimeout(10)
            assert idle.recv(10) == b""  # the server closed the silent connection
        r = wait_for(lambda: _retry_tcp(net, 40), 10, "the idle client's slot")
        assert r.header.id == 40
        # A client that sent half a length prefix is idle too.
        wait_for(lambda: svc._tcp_slots._value == 1, 10,  # type: ignore[attr-defined]
                 "the last client's slot to be released")
        with _tcp(net) as half:
            half.settimeout(10)
            half.sendall(b"\x00")
            assert half.recv(10) == b""
        assert svc.alive()
    finally:
        svc.stop()


def test_dns_full_forward_queue_answers_servfail_at_once(
        net: Net, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    silent = net.upstream.popen([sys.executable, "-c", SILENT, UPSTREAM])
    net.upstream.wait_port(53, "udp")
    svc = _dns(net, monkeypatch, forwarders=(UPSTREAM,), forward_timeout=5.0,
               FORWARD_PENDING=1)
    m = svc.ctx.metrics
    try:
        with inside(net.client):
            a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with a, b:
            a.settimeout(10)
            b.settimeout(10)
            a.sendto(bytes(query("one.example.org", ident=51).pack()), (DNS_SERVER, 53))
            # The first forward waits on the silent upstream and holds the one place.
            wait_for(lambda: svc._pending._value == 0, 10,  # type: ignore[attr-defined]
                     "the first forward to be pending")
            b.sendto(bytes(query("two.example.org", ident=52).pack()), (DNS_SERVER, 53))
            busy = DNSRecord.parse(b.recv(4096))
            assert busy.header.id == 52 and busy.header.rcode == 2  # SERVFAIL
            assert m.get(dns_service.M_FORWARD_FAILED, reason="busy") == 1
            assert m.get(dns_service.M_FORWARD_FAILED, reason="upstream") == 0  # still waiting
            first = DNSRecord.parse(a.recv(4096))  # after the forward timeout
            assert first.header.id == 51 and first.header.rcode == 2
            assert m.get(dns_service.M_FORWARD_FAILED, reason="upstream") == 1
            a.sendto(bytes(query(f"w101.{DOMAIN}", ident=53).pack()), (DNS_SERVER, 53))
            own = DNSRecord.parse(a.recv(4096))
            assert own.header.id == 53 and own.header.rcode == 0
        assert svc.alive()
    finally:
        svc.stop()
        net.lab.stop(silent)


# -- HTTP ---------------------------------------------------------------------------

ABORT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"GET /big.bin HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
got = 0
while got < 65536:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += len(chunk)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
s.close()  # RST mid-transfer
print(got)
"""


def test_http_client_aborting_mid_transfer_is_counted_and_serving_goes_on(
        tmp_path: Path) -> None:
    big = os.urandom(16 << 20)
    with Lab() as lab:
        env = start_lab(lab, tmp_path, files={"big.bin": big, "vmlinuz": b"K" * 4096})
        port = HTTP.rsplit(":", 1)[1]
        r = env.cli.run([sys.executable, "-c", ABORT, SRV, port], timeout=30)
        assert 0 < int(r.stdout) < len(big)
        wait_for(lambda: env.metric('dsas_http_transfers_total{result="aborted"}') == 1, 15,
                 "the aborted transfer to be counted")
        out = tmp_path / "whole"
        got = env.curl("--max-time", "60", f"{HTTP}/big.bin", "-o", str(out), timeout=70)
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == big
        assert env.metric('dsas_http_transfers_total{result="ok"}') >= 1
        # 7: a kernel rewritten at the same size gets a new ETag; the old one gets a 200.
        old = _etag(env, "vmlinuz")
        st = (env.root / "vmlinuz").stat()
        (env.root / "vmlinuz").write_bytes(b"N" * 4096)
        os.utime(env.root / "vmlinuz", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        new = _etag(env, "vmlinuz")
        assert new != old
        assert _status(env, "vmlinuz", old) == "200"
        assert _status(env, "vmlinuz", new) == "304"
        log = (tmp_path / "serve.log").read_text(errors="replace")
        assert "Traceback" not in log, log[-3000:]
        assert CLI  # the client namespace holds n1's address


def _etag(env: Any, name: str) -> str:
    r = env.curl("-sI", f"{HTTP}/{name}")
    tags = [ln.split(":", 1)[1].strip() for ln in r.stdout.splitlines()
            if ln.lower().startswith("etag:")]
    assert tags, r.stdout
    return tags[0]


def _status(env: Any, name: str, etag: str) -> str:
    r = env.curl("-o", "/dev/null", "-w", "%{http_code}", "-H", f"If-None-Match: {etag}",
                 f"{HTTP}/{name}")
    return r.stdout


