"""Discovery bounds (issue 13 item 7), pure: the new-MAC rate limit of the DHCP policy,
short pool offers, the free-address count, and the capped dhcp_discovered table."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from provision.inventory import loads
from provision.policy.dhcp import DhcpPolicy, DhcpSettings, Link
from provision.policy.leases import BOUND, DECLINED, OFFERED, RELEASED, Lease, LeaseTable, Sighting
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import decode, encode
from provision.state import StateStore
from provision.state.leases import LeaseJournal
from tests.support.dhcp_support import INVENTORY, SERVER, client_packet

INV = loads(INVENTORY, "lab.yaml")
LAN = Link("eth0", SERVER, IPv4Network("198.18.0.0/24"))
T0 = 1_000_000.0


def _discover(p: DhcpPolicy, mac: str, now: float) -> str | None:
    d = p.handle(decode(encode(client_packet(o.DISCOVER, mac))), LAN, now)
    return d.drop


def _mac(i: int) -> str:
    return f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"


def test_new_macs_beyond_the_burst_are_rate_limited_and_known_ones_are_not() -> None:
    p = DhcpPolicy(INV, LeaseTable(), DhcpSettings(discovery=True, new_mac_rate=2,
                                                   new_mac_burst=5))
    drops = [_discover(p, _mac(i), T0) for i in range(20)]
    assert drops[:5] == [None] * 5 and set(drops[5:]) == {"discovery_rate_limited"}
    assert _discover(p, _mac(0), T0) is None  # holds an offer: not new, not limited
    assert _discover(p, _mac(100), T0 + 1) is None  # refilled at 2 per second
    assert _discover(p, _mac(101), T0 + 1) is None
    assert _discover(p, _mac(102), T0 + 1) == "discovery_rate_limited"


def test_no_limit_when_the_rate_is_zero() -> None:
    p = DhcpPolicy(INV, LeaseTable(), DhcpSettings(discovery=True, new_mac_rate=0))
    assert all(_discover(p, _mac(i), T0) is None for i in range(200))


def test_pool_offers_are_short_and_the_free_count_follows_them() -> None:
    p = DhcpPolicy(INV, LeaseTable(), DhcpSettings(discovery=True, new_mac_rate=0))
    _discover(p, _mac(1), T0)
    size = p.pool_free(T0 + 1000)["lan"]
    for i in range(2, 12):
        _discover(p, _mac(i), T0)
    assert p.pool_free(T0)["lan"] == size - 11
    assert p.settings.offer_hold <= 10
    assert p.pool_free(T0 + p.settings.offer_hold + 1)["lan"] == size  # offers lapsed



LEASES = st.lists(st.tuples(
    st.integers(0, 300),  # the address: 198.18.0.0 + this (the pool's /24 and beyond)
    st.sampled_from([BOUND, OFFERED, RELEASED, DECLINED]),
    st.integers(-5, 5),  # expires: T0 + this
    st.sampled_from(["lan", "other"])), max_size=60)


@settings(max_examples=150, deadline=None)
@given(leases=LEASES, share=st.sampled_from([None, (0, 2), (1, 3)]))
def test_the_free_count_is_the_pool_minus_its_live_leases(
        leases: list[tuple[int, str, int, str]], share: tuple[int, int] | None) -> None:
    """pool_free (an inlined scan of the whole table) counts what Pool and Lease say:
    a lease uses an address of the pool when ``ip in pool`` and ``lease.live(now)``
    (not released, not expired), whatever its state and network."""
    p = DhcpPolicy(INV, LeaseTable(), DhcpSettings(discovery=True, new_mac_rate=0,
                                                   share=share))
    _discover(p, _mac(1), T0 - 100)  # the pool exists (its offer has lapsed at T0)
    pool = next(iter(p._pools.values()))
    for i, (k, state, dt, net) in enumerate(leases):
        p.table._put(Lease(0xC6120000 + k, _mac(i + 10), net, state, T0 + dt))
    used = sum(1 for lease in p.table.by_ip.values() if lease.network == "lan"
               and lease.ip in pool and lease.live(T0))
    assert p.pool_free(T0) == {"lan": max(0, pool.size - used)}

def test_discovered_table_is_capped_least_recently_seen_first(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    journal = LeaseJournal(store, discovered_limit=16)  # evicts past 16 + 16 // 8 = 18
    sizes = []
    for i in range(40):
        journal.commit([Sighting(_mac(i), T0 + i, None, "", "", "", "eth0", "lan")], T0 + i)
        sizes.append(len(journal.discovered()))
    assert max(sizes) == 18  # never more than the cap and its slack
    assert sizes[-1] == 16  # the 40th sighting evicted down to the cap: 24..39 stay
    for when, i in ((99, 24), (100, 41), (101, 42), (102, 43)):  # 24 is seen again
        journal.commit([Sighting(_mac(i), T0 + when, None, "", "", "", "eth0", "lan")],
                       T0 + when)
    macs = {r["mac"] for r in journal.discovered()}
    store.close()
    # 42 made 19 > 18: back to 16, least recently seen first: 25 and 26 go, not 24
    assert macs == {_mac(i) for i in (24, *range(27, 40), 41, 42, 43)}
