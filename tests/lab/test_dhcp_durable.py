"""Leases survive `kill -9` (issue 20): with ACKs going out in batches after their
group commit, every ACK a client received names a lease that is in the store after
the server was killed mid-burst, and the restarted server gives none of those
addresses to anyone else."""

from __future__ import annotations

import select
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.testing import Lab, Netns
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import DhcpDecodeError, DhcpPacket, decode, encode
from tests.support.dhcp_lab import Server
from tests.support.dhcp_support import SERVER, client_packet
from tests.support.hostile import dhcpclient_socket, discover, send_broadcast

N = 150  # clients in the burst (the lab network is a /24)


@pytest.fixture
def pair(lab: Lab, tmp_path: Path) -> Iterator[tuple[Server, Netns, str]]:
    srv, cli = lab.netns("dsrv"), lab.netns("dcli")
    sif, cif = lab.veth(srv, cli, "198.18.0.1/24", None)
    server = Server(lab, srv, sif, tmp_path)
    server.args = ["--discovery", "--discovery-rate", "0"]
    (tmp_path / "boot").mkdir(exist_ok=True)
    yield server, cli, cif
    server.stop()


def _replies(sock: socket.socket, mtype: int, want: int, wait: float) -> list[DhcpPacket]:
    """Replies of one type until ``want`` came or nothing came for ``wait`` seconds."""
    out: list[DhcpPacket] = []
    while len(out) < want and select.select([sock], [], [], wait)[0]:
        try:
            p = decode(sock.recv(4096))
        except DhcpDecodeError:
            continue
        if p.message_type == mtype:
            out.append(p)
    return out


def _stored(db: Path) -> dict[str, tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return {mac: (str(o.IPv4Address(ip)), state) for ip, mac, state in conn.execute(
            "SELECT ip, mac, state FROM dhcp_leases")}
    finally:
        conn.close()


def test_every_acked_lease_survives_kill_9(pair: tuple[Server, Netns, str],
                                           tmp_path: Path) -> None:
    server, cli, cif = pair
    server.start()
    macs = [f"52:54:00:03:{i >> 8:02x}:{i & 255:02x}" for i in range(N)]
    with dhcpclient_socket(cli.name, cif) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        for mac in macs:
            send_broadcast(sock, discover(mac))
        offers = {p.mac: p for p in _replies(sock, o.OFFER, N, 3.0)}
        assert len(offers) >= N * 9 // 10, len(offers)
        for mac, offer in offers.items():
            send_broadcast(sock, encode(client_packet(
                o.REQUEST, mac, xid=offer.xid, broadcast=True, requested=str(offer.yiaddr),
                server=SERVER)))
        acks = _replies(sock, o.ACK, max(1, len(offers) // 4), 3.0)
        assert server.proc is not None
        server.proc.kill()  # SIGKILL, by PID, with commits and ACKs still under way
        server.proc.wait(timeout=10)
        acks += _replies(sock, o.ACK, N, 0.5)  # those sent before it died
    acked = {p.mac: str(p.yiaddr) for p in acks}
    assert acked
    stored = _stored(server.workdir / "state" / "state.db")
    missing = {m: ip for m, ip in acked.items() if stored.get(m) != (ip, "bound")}
    assert not missing, f"{len(missing)} of {len(acked)} ACKed leases not in the store"
    server.proc = None
    server.start()  # restarts from the same store: ACKed addresses stay taken
    assert server.log().count("dhcp listening") == 2, server.log()[-2000:]
    with dhcpclient_socket(cli.name, cif) as sock:
        fresh = [f"52:54:00:04:{i >> 8:02x}:{i & 255:02x}" for i in range(50)]
        for mac in fresh:
            send_broadcast(sock, discover(mac))
        given = {str(p.yiaddr) for p in _replies(sock, o.OFFER, len(fresh), 3.0)}
        assert given and not given & set(acked.values())
        again = client_packet(o.DISCOVER, next(iter(acked)), broadcast=True)
        send_broadcast(sock, encode(again))
        deadline = time.monotonic() + 3
        same = None
        while same is None and time.monotonic() < deadline:
            for p in _replies(sock, o.OFFER, 1, 1.0):
                if p.xid == again.xid:
                    same = str(p.yiaddr)
        assert same == acked[next(iter(acked))]  # its lease, not a new address
