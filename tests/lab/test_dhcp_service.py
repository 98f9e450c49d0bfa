"""The DHCP service in-process, with real sockets in lab namespaces: bad input is
dropped and counted, ACKs wait for the disk, commits are batched."""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import Lab, wait_for
from provision.inventory import loads
from provision.policy.leases import Lease, LeaseDel, LeasePut
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import DhcpPacket, encode
from provision.services import dhcp as dhcp_service
from provision.services.base import ServeContext
from provision.services.dhcp import create
from provision.state import StateStore
from provision.state.leases import LeaseJournal
from tests.support.dhcp_served import (
    Served,
    client_socket,
)
from tests.support.dhcp_support import (
    INVENTORY,
    IPXE_DISCOVER,
    IPXE_ROM,
    SERVER,
    W1_MAC,
    client_packet,
)
from tests.support.netns_thread import in_netns


def _mutants(n: int, seed: int = 3) -> Iterator[bytes]:
    rnd = random.Random(seed)
    for _ in range(n):
        data = bytearray(IPXE_DISCOVER)
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        yield bytes(data[: rnd.randint(200, len(data))])
        yield rnd.randbytes(rnd.randint(0, 600))


def test_bad_input_is_dropped_counted_and_serving_goes_on(served: Served) -> None:
    bad = {
        "truncated": IPXE_DISCOVER[:100],
        "not_ethernet": IPXE_DISCOVER[:2] + b"\x10" + IPXE_DISCOVER[3:],
        "oversized": IPXE_DISCOVER + bytes(3000),
        "option_overrun": IPXE_DISCOVER[:-1] + b"\x0c\x40",
        "unknown_message_type": IPXE_DISCOVER[:242] + b"\x63" + IPXE_DISCOVER[243:],
    }
    for data in bad.values():
        served.send(data)
    for data in _mutants(150):
        served.send(data)
    good = client_packet(o.DISCOVER, W1_MAC, broadcast=True, extra=IPXE_ROM)
    m = served.ctx.metrics
    wait_for(lambda: all(m.get("dsas_dhcp_dropped_total", reason=r) >= 1 for r in bad), 10,
             "every kind of bad input to be counted")
    served.send(encode(good))
    offers = served.replies(good.xid)
    assert offers and offers[0].yiaddr == o.IPv4Address("198.18.0.11")
    for reason in bad:
        assert m.get("dsas_dhcp_dropped_total", reason=reason) >= 1, (reason, m.render())
    assert m.get("dsas_dhcp_dropped_total", reason="internal_error") == 0
    assert served.svc.alive()


def test_ack_is_sent_only_after_the_lease_is_on_disk(served: Served,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_commit = LeaseJournal.commit

    def slow_commit(self: LeaseJournal, changes: list, now: float) -> None:  # type: ignore[type-arg]
        time.sleep(0.3)
        real_commit(self, changes, now)

    monkeypatch.setattr(LeaseJournal, "commit", slow_commit)
    mac = "52:54:00:00:ee:42"
    disc = client_packet(o.DISCOVER, mac, broadcast=True)
    served.send(encode(disc))
    offer = served.replies(disc.xid)[0]
    req = client_packet(o.REQUEST, mac, xid=disc.xid, broadcast=True,
                        requested=str(offer.yiaddr), server=SERVER)
    served.send(encode(req))
    ack = served.replies(req.xid, wait=5)[0]
    assert ack.message_type == o.ACK
    db = sqlite3.connect(served.ctx.store.path)
    rows = db.execute("SELECT mac, state FROM dhcp_leases WHERE ip = ?",
                      (int(offer.yiaddr),)).fetchall()
    db.close()
    assert rows == [(mac, "bound")]


def test_acks_in_a_burst_share_commits(served: Served) -> None:
    n = 60
    offers: dict[int, DhcpPacket] = {}
    macs = [f"52:54:00:00:{i // 256:02x}:{i % 256:02x}" for i in range(n)]
    discovers = [client_packet(o.DISCOVER, mac, broadcast=True) for mac in macs]
    for d in discovers:
        served.send(encode(d))
    for d in discovers:
        got = served.replies(d.xid, wait=3)
        assert got, "no OFFER"
        offers[d.xid] = got[0]
    before = served.ctx.metrics.get("dsas_dhcp_commits_total")
    requests = [client_packet(o.REQUEST, mac, xid=d.xid, broadcast=True,
                              requested=str(offers[d.xid].yiaddr), server=SERVER)
                for mac, d in zip(macs, discovers, strict=True)]
    for r in requests:
        served.send(encode(r))
    acked = {str(p.yiaddr) for r in requests for p in served.replies(r.xid, wait=3)
             if p.message_type == o.ACK}
    assert len(acked) == n  # n different addresses
    commits = served.ctx.metrics.get("dsas_dhcp_commits_total") - before
    assert 1 <= commits < n, commits  # fewer transactions than ACKs: they shared
    # ... and every ACK's lease is in those transactions, bound to its client.
    db = sqlite3.connect(served.ctx.store.path)
    rows = dict(db.execute("SELECT mac, ip FROM dhcp_leases WHERE state = 'bound'").fetchall())
    db.close()
    assert {m: str(o.IPv4Address(rows[m])) for m in macs} == {
        mac: str(offers[d.xid].yiaddr) for mac, d in zip(macs, discovers, strict=True)}


def test_a_flood_of_new_machines_is_summed_up_in_the_log(
        served: Served, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Each new machine is logged once, but at most MACHINE_LINES of them one by one per
    interval: the rest are counted in one line (a flood of forged MACs must not become
    a line each)."""
    monkeypatch.setattr(dhcp_service, "MACHINE_LINES", 5)
    n = 40
    with caplog.at_level(logging.INFO, "provision.services.dhcp"):
        discovers = [client_packet(o.DISCOVER, f"52:54:00:01:00:{i:02x}", broadcast=True)
                     for i in range(n)]
        for d in discovers:
            served.send(encode(d))
        assert all(served.replies(d.xid, wait=3) for d in discovers)
        monkeypatch.setattr(dhcp_service, "WARN_EVERY", 0.2)  # the interval ends now
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                "more new machine" in r.getMessage() for r in caplog.records):
            time.sleep(0.05)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("discovered machine" in m for m in msgs) == 5, msgs
    assert any(f"{n - 5} more new machine(s)" in m for m in msgs), msgs


def test_two_interfaces_each_answer_for_their_own_network(lab: Lab, tmp_path: Path) -> None:
    """One service on two interfaces: the network (and address) comes from the interface
    the request arrived on, and the broadcast reply leaves through that interface."""
    srv, lan, far = lab.netns("dsrv"), lab.netns("dlan"), lab.netns("dfar")
    s_lan, c_lan = lab.veth(srv, lan, f"{SERVER}/24", None)
    s_far, c_far = lab.veth(srv, far, "198.18.1.1/24", None)
    ctx = ServeContext(inventory=loads(INVENTORY, "lab.yaml"), interfaces=[s_lan, s_far],
                       state_dir=tmp_path / "state", boot_root=tmp_path / "boot")
    svc = create(ctx)
    in_netns(srv.name, svc.start)
    clients = [Served(svc, ctx, in_netns(ns.name, lambda i=i: client_socket(i)))  # type: ignore[misc]
               for ns, i in ((lan, c_lan), (far, c_far))]
    try:
        got = []
        for c in clients:
            d = client_packet(o.DISCOVER, W1_MAC, broadcast=True)
            c.send(encode(d))
            offers = c.replies(d.xid, want=2, wait=1.5)
            assert len(offers) == 1, offers  # only the interface it came in on answers
            got.append((str(offers[0].yiaddr), offers[0].server_id))
        assert got == [("198.18.0.11", SERVER), ("198.18.1.11", o.IPv4Address("198.18.1.1"))]
    finally:
        for c in clients:
            c.sock.close()
        svc.stop()
        ctx.store.close()


# -- lease changes reach the disk in the order they were decided --------------------

T0 = 1_000_000.0


def _rows(db: Path, ip: int) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT mac, state FROM dhcp_leases WHERE ip = ?", (ip,)).fetchall()
    finally:
        conn.close()


def _bind(s: Served, mac: str, want: str | None = None) -> str:
    disc = client_packet(o.DISCOVER, mac, broadcast=True)
    s.send(encode(disc))
    offer = s.replies(disc.xid)[0]
    req = client_packet(o.REQUEST, mac, xid=disc.xid, broadcast=True,
                        requested=want or str(offer.yiaddr), server=SERVER)
    s.send(encode(req))
    ack = s.replies(req.xid)[0]
    assert ack.message_type == o.ACK
    return str(ack.yiaddr)


def test_a_release_then_another_clients_ack_leaves_the_new_lease(served: Served) -> None:
    a, b = "52:54:00:02:00:01", "52:54:00:02:00:02"
    ip = _bind(served, a)
    release = client_packet(o.RELEASE, a, ciaddr=ip, server=SERVER)
    req = client_packet(o.REQUEST, b, broadcast=True, requested=ip, server=SERVER)
    served.send(encode(release))  # lazy: rides with the next commit
    served.send(encode(req))  # durable: that commit
    ack = served.replies(req.xid)[0]
    assert ack.message_type == o.ACK and str(ack.yiaddr) == ip
    assert _rows(served.ctx.store.path, int(o.IPv4Address(ip))) == [(b, "bound")]


def test_a_decline_then_another_clients_request_in_one_burst_keeps_the_quarantine(
        served: Served) -> None:
    a, b = "52:54:00:02:00:05", "52:54:00:02:00:06"
    ip = _bind(served, a)
    decline = client_packet(o.DECLINE, a, requested=ip, server=SERVER)
    req = client_packet(o.REQUEST, b, broadcast=True, requested=ip, server=SERVER)
    served.send(encode(decline))  # lazy: decided first, written with the next commit
    served.send(encode(req))
    nak = served.replies(req.xid)[0]
    assert nak.message_type == o.NAK  # the quarantine was decided before b asked
    wait_for(lambda: _rows(served.ctx.store.path, int(o.IPv4Address(ip))) == [
        ("", "declined")], timeout=5, what="the declined row on disk")


def test_a_release_then_the_same_clients_request_in_one_burst_rebinds(
        served: Served) -> None:
    a = "52:54:00:02:00:07"
    ip = _bind(served, a)
    release = client_packet(o.RELEASE, a, ciaddr=ip, server=SERVER)
    req = client_packet(o.REQUEST, a, broadcast=True, requested=ip, server=SERVER)
    served.send(encode(release))
    served.send(encode(req))
    ack = served.replies(req.xid)[0]
    assert ack.message_type == o.ACK and str(ack.yiaddr) == ip
    # the release came first, the new binding last: the store keeps the binding
    assert _rows(served.ctx.store.path, int(o.IPv4Address(ip))) == [(a, "bound")]


def test_a_lease_put_then_dropped_in_one_commit_is_gone(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    journal = LeaseJournal(store)
    ip = int(o.IPv4Address("198.18.0.50"))
    journal.commit([LeasePut(Lease(ip, "52:54:00:02:00:03", "lan", "bound", T0 + 600)),
                    LeaseDel(ip)], T0)
    journal.commit([LeaseDel(ip + 1),
                    LeasePut(Lease(ip + 1, "52:54:00:02:00:04", "lan", "bound", T0 + 600))], T0)
    store.close()
    assert _rows(store.path, ip) == []
    assert _rows(store.path, ip + 1) == [("52:54:00:02:00:04", "bound")]
