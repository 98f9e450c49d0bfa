"""DHCP leases in the state store (table ``dhcp_leases``): the journal behind the lease table.

``LeaseJournal`` implements ``policy.leases.LeaseStore``: ``load`` streams every stored
lease at start, ``commit`` writes a batch of changes (bound leases, releases, declines,
and the sightings of discovered machines) in one fsync'd transaction. The DHCP service's
committer calls ``commit`` and sends the ACKs of a batch only after it returns.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..policy.leases import Change, Lease, LeaseDel, LeasePut, Sighting
from . import discovered as disc
from .schema import DHCP
from .store import StateStore, insert_rows

DISCOVERED_LIMIT = disc.LIMIT

_PUT_LEASE = ("INSERT OR REPLACE INTO dhcp_leases"
              "(ip, mac, network, state, expires, hostname, updated) VALUES ")


class LeaseJournal:
    """Leases and sightings in the state store (tables ``dhcp_leases``, ``dhcp_discovered``)."""

    def __init__(self, store: StateStore, discovered_limit: int = DISCOVERED_LIMIT) -> None:
        self.store = store
        self.discovered_limit = discovered_limit
        # At least as many rows as dhcp_discovered holds (None: not counted yet), so a
        # commit counts and evicts only when the cap may have been passed. The table may
        # grow by an eighth past the cap between two evictions, each back down to the cap:
        # under a flood of new MACs a count and a delete every ~limit/8 sightings, not on
        # every commit (3 us of the ~100 us of a DORA went there).
        self._discovered_bound: int | None = None
        self._discovered_slack = discovered_limit // 8
        # Several DHCP worker processes commit into one file: they take turns on an
        # flock first, as sqlite's own wait for a locked database polls with sleeps of
        # up to 100 ms (ACKs held that long are lost to the clients); None: one process.
        self._turns: int | None = None
        store.ensure(DHCP)

    def take_turns(self, lock_path: str | os.PathLike[str]) -> None:
        """Commit only while holding an exclusive flock on ``lock_path`` (DHCP workers)."""
        self._turns = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

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
        seen: list[Sighting] = []
        for c in changes:
            if isinstance(c, LeasePut):
                lease = c.lease
                final[lease.ip] = (lease.ip, lease.mac, lease.network, lease.state,
                                   lease.expires, lease.hostname, now)
            elif isinstance(c, LeaseDel):
                final[c.ip] = None
            else:
                seen.append(c)
        puts = [row for row in final.values() if row is not None]
        dels = [(ip,) for ip, row in final.items() if row is None]
        if not (puts or dels or seen):
            return
        if self._turns is not None:
            fcntl.flock(self._turns, fcntl.LOCK_EX)
        try:
            bound = self._write(puts, dels, seen)
        finally:
            if self._turns is not None:
                fcntl.flock(self._turns, fcntl.LOCK_UN)
        self._discovered_bound = bound  # only once committed

    def _write(self, puts: list[tuple[object, ...]], dels: list[tuple[int]],
               seen: list[Sighting]) -> int | None:
        with self.store.transaction() as conn:
            if dels:
                conn.executemany("DELETE FROM dhcp_leases WHERE ip = ?", dels)
            if puts:
                insert_rows(conn, _PUT_LEASE, puts, "")
            bound = self._discovered_bound
            if seen:
                disc.record(conn, seen)
                bound = None if bound is None else bound + len(seen)
                if bound is None or bound > self.discovered_limit + self._discovered_slack:
                    bound = self._evict(conn)
        return bound

    def _evict(self, conn: sqlite3.Connection) -> int:
        return disc.evict(conn, self.discovered_limit)

    def discovered(self) -> list[dict[str, Any]]:
        """Discovered machines with the address each holds now ('' when none)."""
        return disc.machines(self.store)


@dataclass(frozen=True)
class BoundLease:
    """A bound lease as stored."""

    ip: int
    mac: str
    expires: float
    updated: float

    @property
    def address(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(self.ip)


def bound(store: StateStore) -> list[BoundLease]:
    """Every lease in state bound (live or expired); the table must exist."""
    return [BoundLease(r["ip"], r["mac"], r["expires"], r["updated"]) for r in store.query(
        "SELECT ip, mac, expires, updated FROM dhcp_leases WHERE state='bound'")]


def bound_addresses(store: StateStore, macs: Sequence[str], now: float) -> set[str]:
    """The addresses bound to any of ``macs`` and not expired at ``now`` (none when no
    DHCP service has run here: no table)."""
    if not macs:
        return set()
    marks = ",".join("?" * len(macs))
    try:
        rows = store.query("SELECT ip FROM dhcp_leases WHERE state='bound' AND expires>?"
                           f" AND mac IN ({marks})", [now, *macs])
    except sqlite3.OperationalError:  # no DHCP service has run here: no leases
        return set()
    return {str(ipaddress.IPv4Address(r["ip"])) for r in rows}


def fingerprint(store: StateStore) -> tuple[Any, ...]:
    """Changes whenever a lease is written (the status page polls it)."""
    return tuple(store.query("SELECT COUNT(*), MAX(updated), SUM(expires) FROM dhcp_leases")[0])
