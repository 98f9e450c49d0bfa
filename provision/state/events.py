"""Node boot events and the SSH host keys nodes reported (tables ``http_events``,
``http_host_keys``).

The HTTP service ``record``s each accepted report (``policy.httpfiles.Event``); the
events of a host are trimmed to its last ``keep`` and the last of each stage. A report
that carries an SSH host key replaces that host's key of that type; `dsas trust` reads
them (``reported_keys``) and decides. The status page and `dsas status` read the events
(``since``, ``of_host``), never write.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..policy.httpfiles import Event
from .schema import EVENTS_COLUMNS, EVENTS_DDL, HTTP
from .store import StateStore

# Events kept per host: the last DEFAULT_EVENTS_PER_HOST, and the last of each stage.
DEFAULT_EVENTS_PER_HOST = 100


@dataclass(frozen=True)
class StoredEvent:
    """A node event as stored."""

    id: int
    ts: float
    host: str
    stage: str
    reason: str | None
    address: str | None
    image: str | None


@dataclass(frozen=True)
class ReportedKey:
    """An SSH host key a node reported, with where and when."""

    host: str
    key_type: str
    key: str  # base64 blob
    ts: float
    address: str | None
    boot_id: str | None = None
    verified: bool = False  # the report carried this boot's valid token


class _Store(Protocol):
    def ensure_schema(self, component: str, ddl: str) -> None: ...
    def ensure_columns(self, table: str, columns: tuple[tuple[str, str], ...]) -> None: ...


def ensure_events_schema(store: _Store) -> None:
    """The event and host-key tables, with the columns of this release."""
    store.ensure_schema(HTTP.component, EVENTS_DDL)
    by_table: dict[str, list[tuple[str, str]]] = {}
    for table, col, decl in EVENTS_COLUMNS:
        by_table.setdefault(table, []).append((col, decl))
    for table, cols in by_table.items():
        store.ensure_columns(table, tuple(cols))


def trim_events(conn: sqlite3.Connection, host: str, keep: int) -> None:
    """Keep ``host``'s last ``keep`` events and the last event of each stage."""
    conn.execute(
        "DELETE FROM http_events WHERE host=:h AND id < (SELECT COALESCE(MIN(id), 0) FROM "
        "(SELECT id FROM http_events WHERE host=:h ORDER BY id DESC LIMIT :n)) "
        "AND id NOT IN (SELECT MAX(id) FROM http_events WHERE host=:h GROUP BY stage)",
        {"h": host, "n": keep})


def record(store: StateStore, ev: Event, ts: float, verified: bool, keep: int) -> None:
    """Store one accepted report (one transaction): the event, trimmed to ``keep`` per
    host, and its SSH host key if it carries one (the latest report wins)."""
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO http_events(ts, host, stage, reason, address, image) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (ts, ev.host, ev.stage, ev.reason, ev.address, ev.image))
        trim_events(tx, ev.host, keep)
        if ev.ssh_key is not None:  # the latest report wins; `dsas trust` decides
            tx.execute(
                "INSERT OR REPLACE INTO http_host_keys(host, key_type, key, ts, address, "
                "boot_id, verified) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ev.host, *ev.ssh_key, ts, ev.address, ev.boot_id, int(verified)))


_COLUMNS = "id, ts, host, stage, reason, address, image"


def _event(r: sqlite3.Row) -> StoredEvent:
    return StoredEvent(r["id"], r["ts"], r["host"], r["stage"], r["reason"], r["address"],
                       r["image"])


def last_per_host(store: StateStore) -> dict[str, StoredEvent]:
    """host -> its newest event."""
    rows = store.query(
        "SELECT host, stage, reason, address, image, ts, MAX(id) AS id "
        "FROM http_events GROUP BY host")
    return {r["host"]: _event(r) for r in rows}


def since(store: StateStore, after_id: int, limit: int) -> list[StoredEvent]:
    """Up to ``limit`` events newer than event ``after_id``, oldest first."""
    rows = store.query(f"SELECT {_COLUMNS} FROM http_events WHERE id > ? ORDER BY id LIMIT ?",
                       [after_id, limit])
    return [_event(r) for r in rows]


def of_host(store: StateStore, host: str, limit: int, upto: int) -> list[StoredEvent]:
    """The newest ``limit`` events of ``host`` up to event id ``upto``, oldest first."""
    rows = store.query(f"SELECT {_COLUMNS} FROM http_events WHERE host=?"
                       " AND id <= ? ORDER BY id DESC LIMIT ?", [host, upto, limit])
    return [_event(r) for r in reversed(rows)]


def outcomes_since(store: StateStore, host: str, ts: float) -> list[StoredEvent]:
    """``host``'s ``ready`` and ``failed`` reports since wall-clock ``ts``, oldest first
    (none while the table does not exist yet)."""
    try:
        rows = store.query(f"SELECT {_COLUMNS} FROM http_events WHERE host = ? AND ts >= ?"
                           " AND stage IN ('ready', 'failed') ORDER BY id", [host, ts])
    except sqlite3.OperationalError:
        return []
    return [_event(r) for r in rows]


def read_only_since(db: Path, ts: float) -> list[StoredEvent]:
    """Every event since wall-clock ``ts``, oldest first, from the state file ``db``
    opened read-only (another process, the master, writes it). Raises StateError when
    the file or its table is not there yet, or is busy."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(f"SELECT {_COLUMNS} FROM http_events WHERE ts >= ? ORDER BY id",
                            (ts,)).fetchall()
    finally:
        conn.close()
    return [_event(r) for r in rows]


def reported_keys(store: StateStore, host: str | None = None) -> list[ReportedKey]:
    """The latest reported key of each (host, type); of one host, or of every host."""
    ensure_events_schema(store)
    sql = "SELECT host, key_type, key, ts, address, boot_id, verified FROM http_host_keys"
    rows = store.query(sql + " WHERE host=? ORDER BY key_type", [host]) if host else \
        store.query(sql + " ORDER BY host, key_type")
    return [ReportedKey(r["host"], r["key_type"], r["key"], r["ts"], r["address"],
                        r["boot_id"], bool(r["verified"])) for r in rows]
