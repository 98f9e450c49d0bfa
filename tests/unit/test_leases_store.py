"""The lease table, the pool's bounds and the sqlite journal, unit by unit (issue 24:
the survivors of mutation testing in policy/leases.py)."""

from __future__ import annotations

from pathlib import Path

from provision.policy.leases import (
    BOUND,
    DECLINED,
    OFFERED,
    RELEASED,
    Lease,
    LeaseDel,
    LeasePut,
    LeaseTable,
    Pool,
    Sighting,
)
from provision.state import StateStore
from provision.state.leases import LeaseJournal

T0 = 1_000_000.0
A, B = "52:54:00:00:ee:0a", "52:54:00:00:ee:0b"


def sighting(mac: str, when: float, network: str = "lan") -> Sighting:
    return Sighting(mac=mac, when=when, arch=7, vendor_class="PXEClient", user_class="iPXE",
                    uuid="00" * 16, interface="eth0", network=network)


def reload(tmp_path: Path) -> list[tuple[object, ...]]:
    store = StateStore(tmp_path)
    try:
        return sorted((x.ip, x.mac, x.network, x.state, x.expires, x.hostname)
                      for x in LeaseJournal(store).load())
    finally:
        store.close()


def test_offer_keeps_a_live_bound_lease_of_the_same_client() -> None:
    t = LeaseTable()
    t.bind("lan", A, 100, T0 + 600)
    assert t.offer("lan", A, 100, T0 + 60) == []
    lease = t.at(100)
    assert lease is not None and (lease.state, lease.expires) == (BOUND, T0 + 600)
    assert t.offer("lan", A, 100, T0 + 600) == []  # ends when the lease does: kept
    assert t.at(100).state == BOUND  # type: ignore[union-attr]
    t.offer("lan", A, 100, T0 + 601)  # outlives it: becomes an offer
    assert (t.at(100).state, t.at(100).expires) == (OFFERED, T0 + 601)  # type: ignore[union-attr]


def test_offer_replaces_another_clients_or_an_unbound_lease() -> None:
    t = LeaseTable()
    t.bind("lan", A, 100, T0 + 600)
    t.offer("lan", B, 100, T0 + 60)  # (the pool never does this to a live lease)
    assert t.at(100).mac == B and t.of("lan", A) is None  # type: ignore[union-attr]
    t.offer("lan", A, 101, T0 + 60)
    t.offer("lan", A, 101, T0 + 90)  # an offer, not a bound lease: renewed
    assert (t.at(101).state, t.at(101).expires) == (OFFERED, T0 + 90)  # type: ignore[union-attr]


def test_forget_offer_forgets_only_that_clients_offer() -> None:
    t = LeaseTable()
    t.offer("lan", A, 100, T0 + 60)
    t.bind("lan", B, 101, T0 + 600)
    t.forget_offer("lan", B)  # bound: kept
    t.forget_offer("far", A)  # another network: nothing
    assert t.at(101) is not None and t.at(100) is not None
    t.forget_offer("lan", A)
    assert t.at(100) is None and t.of("lan", A) is None and len(t) == 1


def test_lease_liveness_at_the_edges() -> None:
    lease = Lease(1, A, "lan", BOUND, T0)
    assert lease.live(T0 - 0.001) and not lease.live(T0)
    assert not Lease(1, A, "lan", RELEASED, T0 + 100).live(T0)
    t = LeaseTable([Lease(1, A, "lan", DECLINED, T0 + 100)])
    assert not t.free_for(1, A, T0) and not t.free_for(1, "", T0) and t.free_for(1, B, T0 + 100)


def test_pool_bounds_are_inclusive() -> None:
    p = Pool("n", 2, 5, {4})
    assert [ip for ip in range(0, 8) if ip in p] == [2, 3, 5]
    assert p.size == 3
    assert Pool("n", 2, 5, {1, 4, 9}).size == 3  # exclusions outside the range do not count


def test_journal_commits_deletes_alone_puts_alone_and_sightings_alone(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    j = LeaseJournal(store)
    j.commit([LeasePut(Lease(100, A, "lan", BOUND, T0 + 600))], T0)
    j.commit([LeasePut(Lease(101, B, "lan", BOUND, T0 + 600))], T0)
    store.close()
    assert [r[0] for r in reload(tmp_path)] == [100, 101]
    store = StateStore(tmp_path)
    j = LeaseJournal(store)
    j.commit([LeaseDel(100)], T0 + 1)
    j.commit([sighting(A, T0 + 2)], T0 + 2)
    j.commit([], T0 + 3)
    rows = j.discovered()
    store.close()
    assert [r[0] for r in reload(tmp_path)] == [101]
    assert [r["mac"] for r in rows] == [A]


def test_journal_load_keeps_each_rows_network_and_state(tmp_path: Path) -> None:
    leases = [Lease(100, A, "lan", BOUND, T0 + 600, "n1"),
              Lease(200, B, "far", RELEASED, T0 + 600),  # same expiry, other state/network
              Lease(300, "", "far", DECLINED, T0 + 900)]
    store = StateStore(tmp_path)
    LeaseJournal(store).commit([LeasePut(x) for x in leases], T0)
    store.close()
    assert reload(tmp_path) == [(x.ip, x.mac, x.network, x.state, x.expires, x.hostname)
                                for x in leases]


def test_journal_registers_its_schema(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    LeaseJournal(store)
    names = [r["component"] for r in store.query("SELECT component FROM schema_components")]
    store.close()
    assert "dhcp" in names


def test_discovered_shows_the_address_only_of_a_bound_lease(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    j = LeaseJournal(store)
    j.commit([sighting(A, T0), sighting(B, T0 + 1), sighting("52:54:00:00:ee:0c", T0 + 2),
              LeasePut(Lease(0xC6120050, A, "lan", BOUND, T0 + 600)),
              LeasePut(Lease(0xC6120051, B, "lan", RELEASED, T0 + 1))], T0 + 3)
    rows = j.discovered()
    store.close()
    assert [(r["mac"], r["address"]) for r in rows] == [
        (A, "198.18.0.80"), (B, ""), ("52:54:00:00:ee:0c", "")]
    assert set(rows[0]) == {"mac", "first_seen", "last_seen", "arch", "vendor_class",
                            "user_class", "uuid", "interface", "network", "seen", "address"}
    assert (rows[0]["arch"], rows[0]["seen"], rows[0]["network"]) == (7, 1, "lan")
