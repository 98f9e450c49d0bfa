"""Discovered machines (table ``dhcp_discovered``): unknown MACs DHCP saw with discovery on.

Sightings are written by ``leases.LeaseJournal.commit`` in the same transaction as the
lease changes they came with (one fsync per batch); this module holds the statements
and the bounded eviction, and the reads for `dsas discovered` and the status page.
"""

from __future__ import annotations

import sqlite3
from ipaddress import IPv4Address
from typing import Any

from ..policy.leases import BOUND, Sighting
from .schema import DHCP
from .store import StateStore, insert_rows

LIMIT = 4096  # rows kept in dhcp_discovered (an eighth more between two evictions); the
# least recently seen go first

_INSERT = """
INSERT INTO dhcp_discovered(mac, first_seen, last_seen, arch, vendor_class, user_class, uuid,
                            interface, network)
VALUES """
_ON_CONFLICT = """
ON CONFLICT(mac) DO UPDATE SET
    last_seen = excluded.last_seen, arch = coalesce(excluded.arch, arch),
    vendor_class = excluded.vendor_class, user_class = excluded.user_class,
    uuid = excluded.uuid, interface = excluded.interface, network = excluded.network,
    seen = seen + 1
"""
def record(conn: sqlite3.Connection, seen: list[Sighting]) -> None:
    """Inside the caller's transaction: insert or refresh one row per sighting."""
    insert_rows(conn, _INSERT, [_row(s) for s in seen], _ON_CONFLICT)


def evict(conn: sqlite3.Connection, limit: int) -> int:
    """Bounded: a flood of forged MACs evicts the least recently seen rows (the rows
    beyond the first ``limit`` by last_seen DESC, mac). Returns the rows left."""
    rows = conn.execute("SELECT count(*) FROM dhcp_discovered").fetchone()[0]
    excess = rows - limit
    if excess <= 0:
        return int(rows)
    conn.execute("DELETE FROM dhcp_discovered WHERE mac IN (SELECT mac FROM"
                 " dhcp_discovered ORDER BY last_seen, mac DESC LIMIT ?)", (excess,))
    return limit


def machines(store: StateStore) -> list[dict[str, Any]]:
    """Discovered machines, oldest first, with the address each holds now ('' when none):
    mac, first_seen, last_seen, arch, vendor_class, user_class, uuid, interface, network,
    seen, address. The tables must exist (``store.ensure(schema.DHCP)``)."""
    rows = store.query(
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


def list_machines(store: StateStore) -> list[dict[str, Any]]:
    """``machines``, creating the tables first (a state dir DHCP never served from)."""
    store.ensure(DHCP)
    return machines(store)


def fingerprint(store: StateStore) -> tuple[Any, ...]:
    """Changes whenever a machine is added or seen again (the status page polls it)."""
    return tuple(store.query(
        "SELECT COUNT(*), MAX(last_seen), SUM(seen) FROM dhcp_discovered")[0])


def _row(s: Sighting) -> tuple[object, ...]:
    return (s.mac, s.when, s.when, s.arch, s.vendor_class, s.user_class, s.uuid, s.interface,
            s.network)
