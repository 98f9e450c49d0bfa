"""The observed state: one sqlite file shared by every component of the master.

Leases, discovered machines, node boot events and push history live here.
Each component owns tables prefixed with its name and declares them with
``ensure_schema``. Commits are durable (``synchronous=FULL``): a DHCP ACK is
sent only after its lease is on disk.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILENAME = "state.db"


class StateStore:
    """Thread-safe access to ``<state-dir>/state.db`` (or a path ending in .db)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path if path.suffix == ".db" else path / FILENAME
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._schemas: set[str] = set()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_components "
                "(component TEXT PRIMARY KEY, ddl TEXT NOT NULL)"
            )
            self._conn = conn
        return self._conn

    def ensure_schema(self, component: str, ddl: str) -> None:
        """Create a component's tables (idempotent; ``ddl`` uses IF NOT EXISTS)."""
        with self._lock:
            if component in self._schemas:
                return
            conn = self._connect()
            conn.executescript(ddl)
            conn.execute(
                "INSERT OR REPLACE INTO schema_components(component, ddl) VALUES (?, ?)",
                (component, ddl),
            )
            self._schemas.add(component)

    def ensure_columns(self, table: str, columns: tuple[tuple[str, str], ...]) -> None:
        """Add ``(name, declaration)`` columns a table made by an older release lacks."""
        with self._lock:
            conn = self._connect()
            have = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns:
                if name not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    def secret(self, name: str, make: Callable[[], bytes]) -> bytes:
        """The bytes of ``<state-dir>/<name>`` (mode 0600), made by ``make()`` on first
        use. Two processes racing to make it agree: the first file written wins."""
        path = self.path.parent / name
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            data = path.read_bytes()
            if data:
                return data
            raise ValueError(f"{path} is empty: remove it to make a new one") from None
        with os.fdopen(fd, "wb") as f:
            f.write(make())
            f.flush()
            os.fsync(f.fileno())
        return path.read_bytes()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Run one statement in its own transaction; returns the rows changed."""
        with self._lock:
            cur = self._connect().execute(sql, params)
            return cur.rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.transaction() as conn:
            conn.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._connect().execute(sql, params))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error), under the store's lock."""
        with self._lock:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._schemas.clear()
