"""The master pair's pure parts (issue 18): the inventory's pair, the pool split, the
replication codec (bad MAC, replay and reordering refused and counted), the lease-set
merge."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from provision.ha import wire
from provision.ha.pair import Me, Replicator, render_keepalived, resolve
from provision.inventory import InventoryError, load
from provision.observability.metrics import Metrics
from provision.policy.leases import BOUND, Lease, LeasePut, LeaseTable, Pool, Sighting
from provision.state import StateStore, replica
from tests.support.master_support import pair_inventory

KEY = bytes(range(32))
T0 = 1_700_000_000.0


def _inv(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "cluster.yaml"
    f.write_text(text)
    return load(f)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as e:
        _inv(tmp_path, text)
    assert all(p.line for p in e.value.problems), e.value.problems  # file:line
    return [f"{p.key}: {p.reason}" for p in e.value.problems]


# -- inventory ------------------------------------------------------------------------
def test_a_pair_inventory_loads_with_the_vip_and_both_masters(tmp_path: Path) -> None:
    inv = _inv(tmp_path, pair_inventory(preempt=False))
    pair = inv.cluster.pair
    assert pair is not None and pair.vrid == 61 and pair.preempt is False
    assert str(inv.cluster.master_address) == "198.18.0.3"
    me = resolve(inv, "m02")
    assert (me.side, str(me.address), me.peer_name, str(me.peer_address)) == \
        ("secondary", "198.18.0.2", "m01", "198.18.0.1")
    conf = render_keepalived(me, "eth0")
    assert "virtual_router_id 61" in conf and "198.18.0.3/24 dev eth0" in conf
    assert "nopreempt" in conf and "unicast_peer" in conf and "priority 100" in conf


def test_the_vrrp_advert_interval_is_the_inventorys_and_sub_second_is_vrrpv3(
        tmp_path: Path) -> None:
    inv = _inv(tmp_path, pair_inventory().replace("mclt: 60}", "mclt: 60, advert_int: 0.25, "
                                                  "auto_partner_down: true}"))
    assert inv.cluster.pair is not None and inv.cluster.pair.auto_partner_down is True
    conf = render_keepalived(resolve(inv, "m01"), "eth0")
    assert "advert_int 0.25" in conf and "vrrp_version 3" in conf
    conf = render_keepalived(resolve(_inv(tmp_path, pair_inventory()), "m01"), "eth0")
    assert "advert_int 1\n" in conf and "vrrp_version" not in conf


def test_a_single_master_inventory_has_no_pair(tmp_path: Path) -> None:
    from tests.support.dhcp_support import INVENTORY
    assert _inv(tmp_path, INVENTORY).cluster.pair is None


@pytest.mark.parametrize("edit,expect", [
    (("master_address: 198.18.0.3", "master_address: 198.18.0.1"),
     "cluster.master_address: 198.18.0.1 is m01's own address"),
    (("master_address: 198.18.0.3", "master_address: 198.18.9.3"),
     "cluster.master_address: 198.18.9.3 is in no network"),
    (("secondary: m02", "secondary: m01"),
     "cluster.masters.secondary: the secondary must be another host"),
    (("    secondary: m02\n", ""), "cluster.masters.secondary: a master pair needs a secondary"),
    (("secondary: m02", "secondary: nosuch"), "cluster.masters.secondary: unknown host"),
    (("vrid: 61", "vrid: 300"), "cluster.masters.pair.vrid: 300 is outside 1-255"),
    (("pair: {vrid: 61,", "pair: {"), "cluster.masters.pair.vrid: missing required key"),
    (("mclt: 60}", "mclt: 60, key_file: ../x}"), "cluster.masters.pair.key_file: invalid"),
    (("mclt: 60}", "mclt: 60, colour: red}"), "cluster.masters.pair.colour: unknown key"),
    (("mclt: 60}", "mclt: 60, advert_int: 0}"),
     "cluster.masters.pair.advert_int: must be a number of seconds"),
    (("mclt: 60}", "mclt: 60, auto_partner_down: 1}"),
     "cluster.masters.pair.auto_partner_down: must be true or false"),
])
def test_dsas_check_names_what_is_wrong_with_a_pair(tmp_path: Path, edit: tuple[str, str],
                                                    expect: str) -> None:
    text = pair_inventory().replace(*edit)
    assert text != pair_inventory()
    got = _problems(tmp_path, text)
    assert any(p.startswith(expect) for p in got), got


# -- the pool split -------------------------------------------------------------------
def test_the_halves_are_disjoint_and_cover_the_pool() -> None:
    pool = Pool("lan", 10, 109, set())
    (a, b), (c, d) = pool.half("primary"), pool.half("secondary")
    assert (a, b, c, d) == (10, 59, 60, 109)


def test_alone_each_side_gives_new_addresses_only_from_its_half() -> None:
    """Two sides that cannot talk, each asked by 60 new machines (more than a half),
    never give one address to two machines and stop at the end of their half."""
    got: dict[str, set[int]] = {}
    for side in ("primary", "secondary"):
        pool, table = Pool("lan", 10, 109, {15}), LeaseTable()
        mine = set()
        for i in range(60):
            mac = f"52:54:00:00:{ord(side[0]):02x}:{i:02x}"
            ip = pool.allocate(table, mac, T0, side=side)
            if ip is None:
                break
            table.bind("lan", mac, ip, T0 + 600)
            mine.add(ip)
        lo, hi = pool.half(side)
        assert all(lo <= ip <= hi for ip in mine)
        got[side] = mine
    assert not got["primary"] & got["secondary"]
    assert len(got["primary"]) == 49 and len(got["secondary"]) == 50  # 15 is excluded


def test_alone_a_client_keeps_its_address_in_the_peer_half_and_a_hint_there_is_refused(
        ) -> None:
    pool, table = Pool("lan", 10, 109, set()), LeaseTable()
    table.bind("lan", "52:54:00:00:00:aa", 100, T0 + 600)  # the secondary's half
    assert pool.allocate(table, "52:54:00:00:00:aa", T0, side="primary") == 100
    got = pool.allocate(table, "52:54:00:00:00:bb", T0, hint=101, side="primary")
    assert got is not None and got != 101 and got <= 59


def test_alone_an_address_another_machine_held_waits_mclt_after_its_end() -> None:
    pool, table = Pool("lan", 10, 11, set()), LeaseTable()
    table.bind("lan", "52:54:00:00:00:aa", 10, T0 - 10)  # ended 10 s ago
    assert pool.allocate(table, "52:54:00:00:00:bb", T0, side="primary", hold=60) is None
    pool2 = Pool("lan", 10, 11, set())
    assert pool2.allocate(table, "52:54:00:00:00:bb", T0 + 60, side="primary", hold=60) == 10


def test_in_sync_the_active_fills_its_own_half_first_then_the_rest() -> None:
    pool, table = Pool("lan", 10, 13, set()), LeaseTable()
    order = []
    for i in range(4):
        mac = f"52:54:00:00:01:{i:02x}"
        ip = pool.allocate(table, mac, T0, prefer="secondary")
        assert ip is not None
        table.bind("lan", mac, ip, T0 + 600)
        order.append(ip)
    assert order[:2] == [12, 13] and sorted(order[2:]) == [10, 11]


# -- the codec ------------------------------------------------------------------------
def _pair_codecs(key_b: bytes = KEY) -> tuple[wire.Codec, wire.Codec]:
    sn, cn = b"s" * 16, b"c" * 16
    return wire.Codec(KEY, sn, cn, wire.CLIENT), wire.Codec(key_b, sn, cn, wire.SERVER)


def test_a_sealed_frame_opens_in_order() -> None:
    client, server = _pair_codecs()
    for i in range(3):
        frame = client.seal(wire.UPDATE, {"i": i})[4:]
        assert server.open(frame) == (wire.UPDATE, {"i": i})


@pytest.mark.parametrize("mutate,reason", [
    (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "bad_mac"),  # the MAC itself
    (lambda f: f[:12] + b"X" + f[13:], "bad_mac"),  # the payload
    (lambda f: f[:3] + (9).to_bytes(8, "big") + f[11:], "bad_mac"),  # the sequence
    (lambda f: f[:5], "short_frame"),
])
def test_a_tampered_frame_is_refused(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    client, server = _pair_codecs()
    frame = client.seal(wire.UPDATE, {"changes": []})[4:]
    with pytest.raises(wire.WireError) as e:
        server.open(mutate(frame))
    assert e.value.reason == reason


def test_a_replayed_or_reordered_frame_is_refused() -> None:
    client, server = _pair_codecs()
    first = client.seal(wire.UPDATE, {"n": 1})[4:]
    second = client.seal(wire.UPDATE, {"n": 2})[4:]
    third = client.seal(wire.UPDATE, {"n": 3})[4:]
    server.open(first)
    with pytest.raises(wire.WireError, match="bad_sequence"):
        server.open(first)  # a replay
    with pytest.raises(wire.WireError, match="bad_sequence"):
        server.open(third)  # one was dropped
    assert server.open(second)[1] == {"n": 2}


def test_a_frame_of_another_key_connection_or_direction_is_refused() -> None:
    client, server = _pair_codecs(key_b=b"k" * 32)
    with pytest.raises(wire.WireError, match="bad_mac"):
        server.open(client.seal(wire.PING, {})[4:])
    other = wire.Codec(KEY, b"s" * 16, b"d" * 16, wire.CLIENT)  # another connection
    _, server = _pair_codecs()
    with pytest.raises(wire.WireError, match="bad_mac"):
        server.open(other.seal(wire.PING, {})[4:])
    client, _ = _pair_codecs()
    mirror = wire.Codec(KEY, b"s" * 16, b"c" * 16, wire.CLIENT)
    with pytest.raises(wire.WireError, match="bad_direction"):
        mirror.open(client.seal(wire.PING, {})[4:])  # its own frame sent back to it


def test_the_server_drops_and_counts_a_bad_frame_and_applies_nothing(tmp_path: Path) -> None:
    """A real Replicator's server over TCP on loopback: a client with the wrong key is
    refused at the handshake, a replayed UPDATE closes the connection; both counted,
    and only the one good update is in the store."""
    inv = _inv(tmp_path, pair_inventory())
    assert inv.cluster.pair is not None
    me0 = resolve(inv, "m02")
    me = Me(me0.side, me0.name, _lo(), me0.peer_side, me0.peer_name, _lo(), me0.vip,
            me0.network, _with_port(me0, _free_port()))
    store = StateStore(tmp_path / "state")
    rep = Replicator(me, KEY, store, Metrics(), tmp_path)
    rep.start()
    try:
        with pytest.raises((wire.WireError, ConnectionError, OSError)):
            _client(me, b"z" * 32)
        sock, codec = _client(me, KEY)
        lease = Lease(int(me.vip) + 7, "52:54:00:00:09:01", "lan", BOUND, T0 + 600)
        frame = codec.seal(wire.UPDATE, {"changes": replica.encode([LeasePut(lease)]),
                                         "now": T0})
        sock.sendall(frame)
        assert codec.open(wire.read_frame(sock))[0] == wire.ACK
        sock.sendall(frame)  # the same frame again: a replay
        with pytest.raises((ConnectionError, OSError)):
            wire.read_frame(sock)
        sock.close()
        assert rep.dropped.get("bad_mac", 0) == 1 and rep.dropped.get("bad_sequence") == 1
        assert [r[:2] for r in replica.lease_set(store)] == [[lease.ip, lease.mac]]
    finally:
        rep.stop()
        store.close()


def _lo():  # type: ignore[no-untyped-def]
    from ipaddress import IPv4Address
    return IPv4Address("127.0.0.1")


def _with_port(me: Me, port: int):  # type: ignore[no-untyped-def]
    from dataclasses import replace
    return replace(me.pair, port=port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(me: Me, key: bytes) -> tuple[socket.socket, wire.Codec]:
    sock = socket.create_connection(("127.0.0.1", me.pair.port), timeout=5)
    try:
        return sock, wire.client_handshake(sock, key)
    except BaseException:
        sock.close()
        raise


# -- the lease set --------------------------------------------------------------------
def test_a_merge_keeps_per_address_the_row_written_last(tmp_path: Path) -> None:
    from provision.state.leases import LeaseJournal
    a, b = StateStore(tmp_path / "a"), StateStore(tmp_path / "b")
    ja, jb = LeaseJournal(a), LeaseJournal(b)
    ja.commit([LeasePut(Lease(10, "m1", "lan", BOUND, T0 + 100)),
               LeasePut(Lease(11, "m2", "lan", BOUND, T0 + 100))], T0)
    jb.commit([LeasePut(Lease(11, "m2", "lan", BOUND, T0 + 500)),  # renewed later on b
               LeasePut(Lease(60, "m3", "lan", BOUND, T0 + 500))], T0 + 5)
    jb.commit([Sighting("m3", T0, None, "", "", "", "eth0", "lan")], T0 + 5)
    rows = replica.lease_set(b)
    assert replica.digest(rows) == replica.digest(replica.lease_set(b))
    assert replica.merge(a, rows) == 2
    got = {r[0]: (r[1], r[4]) for r in replica.lease_set(a)}
    assert got == {10: ("m1", T0 + 100), 11: ("m2", T0 + 500), 60: ("m3", T0 + 500)}
    assert replica.merge(a, rows) == 0  # nothing newer the second time
    a.close()
    b.close()


def test_changes_survive_the_codec() -> None:
    changes = [LeasePut(Lease(10, "m1", "lan", BOUND, T0, "h")),
               Sighting("m3", T0, 7, "v", "u", "id", "eth0", "lan")]
    assert replica.decode(replica.encode(changes)) == changes
    with pytest.raises(ValueError):
        replica.decode([["nosuch", 1]])


_ = threading  # (threads are the Replicator's own)


def test_the_other_state_is_copied_whole_blobs_and_all(tmp_path: Path) -> None:
    from provision.policy.httpfiles import Event
    from provision.state import events
    from provision.state.inventory import InventoryHistory
    a, b = StateStore(tmp_path / "a"), StateStore(tmp_path / "b")
    a.ensure_all()
    b.ensure_all()
    events.record(a, Event("w1", "ready", None, "base@v1", "198.18.0.11"), T0, False, 100)
    with InventoryHistory(a).recording("/x/cluster.yaml", b"", b"\x00\xffyaml", "edit"):
        pass
    events.record(b, Event("w9", "initramfs", None, None, "198.18.0.19"), T0, False, 100)
    mark = replica.other_fingerprint(a)
    import json as _json
    tables = _json.loads(_json.dumps(replica.other_tables(a)))  # as it crosses the wire
    assert replica.replace_other(b, tables) == 3
    da, db = a.dump(), b.dump()
    for t in replica.OTHER:
        assert da.get(t, []) == db.get(t, []), t
    assert replica.other_fingerprint(a) == mark
    events.record(a, Event("w1", "configured", None, None, "198.18.0.11"), T0, False, 100)
    assert replica.other_fingerprint(a) != mark
    a.close()
    b.close()


def test_idle_connections_beyond_the_cap_are_refused_and_the_peer_gets_through_after(
        tmp_path: Path) -> None:
    """Connections that never authenticate hold at most MAX_CONNECTIONS slots, each for
    HANDSHAKE_TIMEOUT at most: one more is closed at once and counted, and once the idle
    ones time out the peer is served again."""
    from provision.ha import replicator as rmod

    inv = _inv(tmp_path, pair_inventory())
    me0 = resolve(inv, "m02")
    me = Me(me0.side, me0.name, _lo(), me0.peer_side, me0.peer_name, _lo(), me0.vip,
            me0.network, _with_port(me0, _free_port()))
    store = StateStore(tmp_path / "state")
    rep = Replicator(me, KEY, store, Metrics(), tmp_path)
    rep.start()
    idle = [socket.create_connection(("127.0.0.1", me.pair.port), timeout=5)
            for _ in range(rmod.MAX_CONNECTIONS)]
    try:
        deadline = time.monotonic() + 5
        while rep.dropped.get("busy", 0) == 0 and time.monotonic() < deadline:
            extra = socket.create_connection(("127.0.0.1", me.pair.port), timeout=5)
            extra.settimeout(2)
            assert extra.recv(1) == b""  # closed by the server, not served
            extra.close()
        assert rep.dropped.get("busy", 0) >= 1
        deadline = time.monotonic() + rmod.HANDSHAKE_TIMEOUT + 10
        while True:  # the idle ones are cut after HANDSHAKE_TIMEOUT: the peer gets a slot
            try:
                sock, codec = _client(me, KEY)
                break
            except (wire.WireError, ConnectionError, OSError):
                assert time.monotonic() < deadline, "the peer never got a slot back"
                time.sleep(0.5)
        sock.sendall(codec.seal(wire.PING, {}))
        assert codec.open(wire.read_frame(sock))[0] == wire.PONG
        sock.close()
    finally:
        for s in idle:
            s.close()
        rep.stop()
        store.close()
