"""The observed state: one sqlite file shared by every component of the master.

``StateStore`` holds the connection (WAL, ``synchronous=FULL``: a committed transaction
is on disk, so a DHCP ACK sent after its lease's commit survives a crash), the
transactions, and which schemas (``schema.py``) this process has created. Every table
is declared in ``schema.py`` and read and written only by the modules of this package,
one per kind of state; ``tables()`` and ``dump()`` list and read them all.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .schema import SCHEMAS, VERSION_DDL, Schema
from .schema import tables as owned_tables

FILENAME = "state.db"
# What a failed read or write raises (a full disk, a locked or corrupt file...): callers
# outside this package catch this, not sqlite3's names.
StateError = sqlite3.Error


def current_user() -> str:
    """Who runs this command, for the journals (the uid when it has no name)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


STATEMENTS_CACHED = 1024  # prepared statements kept per connection (sqlite3's default: 128)
ROWS_PER_STATEMENT = 100  # at most 900 parameters: under SQLite's oldest limit (999)


def insert_rows(conn: sqlite3.Connection, head: str, rows: list[tuple[object, ...]],
                tail: str) -> None:
    """``head VALUES (..), (..) tail`` for up to ROWS_PER_STATEMENT rows at a time, in
    order: one statement (one step, one GIL release in sqlite3) instead of one per row.
    Rows later in the list win conflicts with earlier ones, as with executemany."""
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for i in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[i:i + ROWS_PER_STATEMENT]
        conn.execute(head + ", ".join([one] * len(chunk)) + tail,
                     [v for row in chunk for v in row])


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
            # cached_statements: insert_rows makes one statement per batch size (1..100
            # rows) and kind; with the default 128 a busy DHCP server's commits kept
            # preparing them again, with the GIL held (py-spy --gil: 7% of the samples)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10, cached_statements=STATEMENTS_CACHED)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute(VERSION_DDL)
            self._conn = conn
        return self._conn

    def ensure(self, schema: Schema) -> None:
        """Create one kind's tables and add the columns an older release lacks."""
        self.ensure_schema(schema.component, schema.ddl)
        by_table: dict[str, list[tuple[str, str]]] = {}
        for table, col, decl in schema.columns:
            by_table.setdefault(table, []).append((col, decl))
        for table, cols in by_table.items():
            self.ensure_columns(table, tuple(cols))

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

    def existing_tables(self) -> set[str]:
        """The tables the file holds now (a kind no component has used yet is absent)."""
        rows = self.query("SELECT name FROM sqlite_master WHERE type='table'")
        return {r["name"] for r in rows}

    @staticmethod
    def tables() -> tuple[str, ...]:
        """Every table the store owns (``schema.py``), whether the file has it yet or not."""
        return owned_tables()

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every owned table the file holds, read in one transaction (one
        consistent snapshot): table -> rows as dicts, in rowid order."""
        with self.transaction() as conn:
            have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master"
                                               " WHERE type='table'")}
            return {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t} ORDER BY rowid")]
                    for t in self.tables() if t in have}

    def ensure_all(self) -> None:
        """Create every kind's tables (what a replica does before it loads a dump)."""
        for schema in SCHEMAS:
            self.ensure(schema)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
                self._schemas.clear()
