"""DHCP leases: the in-memory table, the discovery pool, and their sqlite journal.

``LeaseTable`` and ``Pool`` are pure (no clock, no I/O: callers pass ``now``). Every
change the table makes is also returned as a ``Change`` so the service can make it
durable: bound leases, releases and declines are written to the state store, and the
service commits them (one fsync'd transaction per batch) *before* it sends the ACKs
that depend on them. Offers are never written: RFC 2131 4.3.1 lets a server forget an
offer, and a client that REQUESTs a forgotten offer is NAKed or re-offered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Any

from ..state import StateStore

OFFERED = "offered"
BOUND = "bound"
RELEASED = "released"
DECLINED = "declined"

DDL = """
CREATE TABLE IF NOT EXISTS dhcp_leases (
    ip       INTEGER PRIMARY KEY,   -- IPv4 address as an integer
    mac      TEXT NOT NULL,         -- '' for a quarantined (declined) address
    network  TEXT NOT NULL,
    state    TEXT NOT NULL,         -- bound | released | declined
    expires  REAL NOT NULL,         -- unix time
    hostname TEXT NOT NULL DEFAULT '',
    updated  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dhcp_leases_mac ON dhcp_leases(mac);
CREATE TABLE IF NOT EXISTS dhcp_discovered (
    mac          TEXT PRIMARY KEY,
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    arch         INTEGER,             -- RFC 4578 client architecture, NULL if not sent
    vendor_class TEXT NOT NULL DEFAULT '',
    user_class   TEXT NOT NULL DEFAULT '',
    uuid         TEXT NOT NULL DEFAULT '',
    interface    TEXT NOT NULL DEFAULT '',
    network      TEXT NOT NULL DEFAULT '',
    seen         INTEGER NOT NULL DEFAULT 1   -- sightings recorded (rate-limited)
);
CREATE INDEX IF NOT EXISTS dhcp_discovered_evict ON dhcp_discovered(last_seen, mac DESC);
"""


@dataclass(slots=True)
class Lease:
    ip: int
    mac: str
    network: str
    state: str
    expires: float
    hostname: str = ""

    @property
    def address(self) -> IPv4Address:
        return IPv4Address(self.ip)

    def live(self, now: float) -> bool:
        """Does this lease still keep the address from other clients?"""
        return self.state != RELEASED and self.expires > now


@dataclass(frozen=True, slots=True)
class LeasePut:
    lease: Lease  # a snapshot


@dataclass(frozen=True, slots=True)
class LeaseDel:
    ip: int


@dataclass(frozen=True, slots=True)
class Sighting:
    """An unknown machine asked for an address (recorded for `dsas discovered`)."""

    mac: str
    when: float
    arch: int | None
    vendor_class: str
    user_class: str
    uuid: str
    interface: str
    network: str


Change = LeasePut | LeaseDel | Sighting


class LeaseTable:
    """Who holds which address. At most one lease per address and per (network, MAC)."""

    def __init__(self, leases: Iterable[Lease] = ()) -> None:
        self.by_ip: dict[int, Lease] = {}
        self.by_mac: dict[str, dict[str, Lease]] = {}  # network -> MAC -> lease
        for lease in leases:
            self._put(lease)

    def __len__(self) -> int:
        return len(self.by_ip)

    def of(self, network: str, mac: str) -> Lease | None:
        macs = self.by_mac.get(network)
        return macs.get(mac) if macs is not None else None

    def at(self, ip: int) -> Lease | None:
        return self.by_ip.get(ip)

    def free_for(self, ip: int, mac: str, now: float) -> bool:
        """May ``mac`` take ``ip``: nobody else holds it, or their lease ended."""
        lease = self.by_ip.get(ip)
        if lease is None or not lease.live(now):
            return True
        return lease.mac == mac and lease.state != DECLINED

    def _put(self, lease: Lease) -> list[Change]:
        changes: list[Change] = []
        old_at_ip = self.by_ip.get(lease.ip)
        if old_at_ip is not None and old_at_ip.mac:
            self.by_mac[old_at_ip.network].pop(old_at_ip.mac, None)
        if lease.mac:
            macs = self.by_mac.setdefault(lease.network, {})
            old_of_mac = macs.get(lease.mac)
            if old_of_mac is not None and old_of_mac.ip != lease.ip:
                del self.by_ip[old_of_mac.ip]
                if old_of_mac.state != OFFERED:
                    changes.append(LeaseDel(old_of_mac.ip))
            macs[lease.mac] = lease
        self.by_ip[lease.ip] = lease
        return changes

    def offer(self, network: str, mac: str, ip: int, until: float) -> list[Change]:
        """Hold ``ip`` for ``mac`` until ``until`` (the offer itself is not durable). A
        client's live bound lease on the same address is kept as it is."""
        cur = self.by_ip.get(ip)
        if cur is not None and cur.mac == mac and cur.state == BOUND and cur.expires >= until:
            return []
        return self._put(Lease(ip, mac, network, OFFERED, until))

    def bind(self, network: str, mac: str, ip: int, expires: float,
             hostname: str = "") -> list[Change]:
        changes = self._put(Lease(ip, mac, network, BOUND, expires, hostname))
        changes.append(LeasePut(Lease(ip, mac, network, BOUND, expires, hostname)))
        return changes

    def release(self, lease: Lease, now: float) -> list[Change]:
        lease.state = RELEASED
        lease.expires = now
        return [LeasePut(replace(lease))]

    def decline(self, network: str, ip: int, until: float) -> list[Change]:
        """Quarantine an address a client found in use (RFC 2131 4.3.3)."""
        lease = Lease(ip, "", network, DECLINED, until)
        changes = self._put(lease)
        changes.append(LeasePut(replace(lease)))
        return changes

    def forget_offer(self, network: str, mac: str) -> None:
        lease = self.of(network, mac)
        if lease is not None and lease.state == OFFERED:
            del self.by_mac[network][mac]
            del self.by_ip[lease.ip]


class Pool:
    """The discovery pool of one network: addresses ``first..last`` minus ``excluded``
    (inventory addresses, gateway, DNS servers, the master's own addresses)."""

    def __init__(self, network: str, first: int, last: int, excluded: set[int]) -> None:
        self.network = network
        self.first = first
        self.last = last
        self.excluded = excluded
        self._cursor = first
        self._full_until = -1.0

    def __contains__(self, ip: int) -> bool:
        return self.first <= ip <= self.last and ip not in self.excluded

    @property
    def size(self) -> int:
        return self.last - self.first + 1 - sum(1 for x in self.excluded
                                                 if self.first <= x <= self.last)

    def allocate(self, table: LeaseTable, mac: str, now: float,
                 hint: int | None = None) -> int | None:
        """An address for ``mac``: the one it had, the one it asks for, or the next free
        one. None when the pool is exhausted (then no rescan for a second)."""
        mine = table.of(self.network, mac)
        if mine is not None and mine.ip in self and table.free_for(mine.ip, mac, now):
            return mine.ip
        if hint is not None and hint in self and table.free_for(hint, mac, now):
            return hint
        if now < self._full_until:
            return None
        span = self.last - self.first + 1
        ip = self._cursor
        for _ in range(span):
            if ip not in self.excluded and table.free_for(ip, mac, now):
                self._cursor = ip + 1 if ip < self.last else self.first
                return ip
            ip = ip + 1 if ip < self.last else self.first
        self._full_until = now + 1.0
        return None


DISCOVERED_LIMIT = 4096  # rows kept in dhcp_discovered; the least recently seen go first


class LeaseJournal:
    """Leases and sightings in the state store (tables ``dhcp_leases``, ``dhcp_discovered``)."""

    def __init__(self, store: StateStore, discovered_limit: int = DISCOVERED_LIMIT) -> None:
        self.store = store
        self.discovered_limit = discovered_limit
        # At least as many rows as dhcp_discovered holds (None: not counted yet), so a
        # commit counts and evicts only when the cap may have been passed.
        self._discovered_bound: int | None = None
        store.ensure_schema("dhcp", DDL)

    def load(self) -> Iterator[Lease]:
        """Every stored lease, streamed (100,000 leases never sit in a list twice)."""
        names: dict[str, str] = {}  # one string object per network and state name
        with self.store.transaction() as conn:
            for r in conn.execute(
                    "SELECT ip, mac, network, state, expires, hostname FROM dhcp_leases"):
                net = names.setdefault(r[2], r[2])
                yield Lease(r[0], r[1], net, names.setdefault(r[3], r[3]), r[4], r[5])

    def commit(self, changes: list[Change], now: float) -> None:
        """Write all changes in one transaction (one fsync), in their order: of several
        changes to one address, the last is what the store keeps."""
        # In order: the last change to an address is the one that stays.
        final: dict[int, tuple[object, ...] | None] = {}
        seen: list[tuple[object, ...]] = []
        for c in changes:
            if isinstance(c, LeasePut):
                lease = c.lease
                final[lease.ip] = (lease.ip, lease.mac, lease.network, lease.state,
                                   lease.expires, lease.hostname, now)
            elif isinstance(c, LeaseDel):
                final[c.ip] = None
            else:
                seen.append(_sighting_row(c))
        puts = [row for row in final.values() if row is not None]
        dels = [(ip,) for ip, row in final.items() if row is None]
        if not (puts or dels or seen):
            return
        with self.store.transaction() as conn:
            if dels:
                conn.executemany("DELETE FROM dhcp_leases WHERE ip = ?", dels)
            if puts:
                _insert_rows(conn, _PUT_LEASE, puts, "")
            bound = self._discovered_bound
            if seen:
                _insert_rows(conn, _INSERT_SIGHTING, seen, _ON_SIGHTING_CONFLICT)
                bound = None if bound is None else bound + len(seen)
                if bound is None or bound > self.discovered_limit:
                    bound = self._evict(conn)
        self._discovered_bound = bound  # only once committed

    def _evict(self, conn: sqlite3.Connection) -> int:
        """Bounded: a flood of forged MACs evicts the least recently seen rows (the
        rows beyond the first ``discovered_limit`` by last_seen DESC, mac). Returns
        the rows left."""
        rows = conn.execute("SELECT count(*) FROM dhcp_discovered").fetchone()[0]
        excess = rows - self.discovered_limit
        if excess <= 0:
            return int(rows)
        conn.execute("DELETE FROM dhcp_discovered WHERE mac IN (SELECT mac FROM"
                     " dhcp_discovered ORDER BY last_seen, mac DESC LIMIT ?)", (excess,))
        return self.discovered_limit

    def discovered(self) -> list[dict[str, Any]]:
        """Discovered machines with the address each holds now ('' when none)."""
        rows = self.store.query(
            "SELECT d.mac, d.first_seen, d.last_seen, d.arch, d.vendor_class, d.user_class,"
            " d.uuid, d.interface, d.network, d.seen, l.ip, l.state"
            " FROM dhcp_discovered d LEFT JOIN dhcp_leases l"
            " ON l.mac = d.mac AND l.network = d.network ORDER BY d.first_seen, d.mac")
        out = []
        for r in rows:
            row = {k: r[k] for k in r.keys() if k not in ("ip", "state")}
            row["address"] = str(IPv4Address(r["ip"])) if r["ip"] is not None and r[
                "state"] == BOUND else ""
            out.append(row)
        return out


_PUT_LEASE = ("INSERT OR REPLACE INTO dhcp_leases"
              "(ip, mac, network, state, expires, hostname, updated) VALUES ")
_INSERT_SIGHTING = """
INSERT INTO dhcp_discovered(mac, first_seen, last_seen, arch, vendor_class, user_class, uuid,
                            interface, network)
VALUES """
_ON_SIGHTING_CONFLICT = """
ON CONFLICT(mac) DO UPDATE SET
    last_seen = excluded.last_seen, arch = coalesce(excluded.arch, arch),
    vendor_class = excluded.vendor_class, user_class = excluded.user_class,
    uuid = excluded.uuid, interface = excluded.interface, network = excluded.network,
    seen = seen + 1
"""
ROWS_PER_STATEMENT = 100  # at most 900 parameters: under SQLite's oldest limit (999)


def _insert_rows(conn: sqlite3.Connection, head: str, rows: list[tuple[object, ...]],
                 tail: str) -> None:
    """``head VALUES (..), (..) tail`` for up to ROWS_PER_STATEMENT rows at a time, in
    order: one statement (one step, one GIL release in sqlite3) instead of one per row.
    Rows later in the list win conflicts with earlier ones, as with executemany."""
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for i in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[i:i + ROWS_PER_STATEMENT]
        conn.execute(head + ", ".join([one] * len(chunk)) + tail,
                     [v for row in chunk for v in row])


def _sighting_row(s: Sighting) -> tuple[object, ...]:
    return (s.mac, s.when, s.when, s.arch, s.vendor_class, s.user_class, s.uuid, s.interface,
            s.network)
