"""Inventory history in the state store: every version an edit replaced or wrote.

The table ``inventory_history`` (``schema.INVENTORY``) has one owner, this class. A
revision holds the file's exact bytes (so a revert is byte for byte), their sha256, when,
who and which command.
The last ``LIMIT`` revisions of each file are kept. A file found on disk that no revision
holds (a hand edit, or the first edit ever) is recorded first, as "found on disk", so the
log never has a hole.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .schema import INVENTORY
from .store import StateStore, current_user

FOUND = "found on disk (not written by dsas)"
LIMIT = 1000  # revisions kept per inventory file (about 10 MB for the example's size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Revision:
    """One stored revision of the inventory file."""

    rev: int
    path: str
    at: float
    user: str
    command: str
    sha256: str
    content: bytes


class InventoryHistory:
    """The inventory's history: each committed revision, the last ``limit`` kept."""

    def __init__(self, store: StateStore, limit: int = LIMIT):
        self.store = store
        self.limit = max(2, limit)
        store.ensure(INVENTORY)

    @staticmethod
    def key(path: str | Path) -> str:
        return str(Path(path).resolve())

    def _insert(self, conn: sqlite3.Connection, path: str, content: bytes, command: str) -> int:
        cur = conn.execute(
            "INSERT INTO inventory_history(path, at, user, command, sha256, content)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (path, time.time(), current_user(), command, sha256(content), content))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def record(self, conn: sqlite3.Connection, path: str | Path, old: bytes, new: bytes,
               command: str) -> int:
        """Inside the caller's transaction: the old file (if no revision is it) and the new
        one. Returns the new revision number."""
        key = self.key(path)
        last = conn.execute("SELECT sha256 FROM inventory_history WHERE path = ?"
                            " ORDER BY rev DESC LIMIT 1", (key,)).fetchone()
        if last is None or last[0] != sha256(old):
            self._insert(conn, key, old, FOUND)
        rev = self._insert(conn, key, new, command)
        conn.execute("DELETE FROM inventory_history WHERE path = ? AND rev <= ?",
                     (key, self._cut(conn, key)))
        return rev

    @contextmanager
    def recording(self, path: str | Path, old: bytes, new: bytes,
                  command: str) -> Iterator[int]:
        """One transaction that records ``old`` -> ``new`` (``record``) and yields the new
        revision number; the caller writes the file inside it. An exception in the body
        rolls the history back: a file not written leaves no revision."""
        with self.store.transaction() as conn:
            yield self.record(conn, path, old, new, command)

    def _cut(self, conn: sqlite3.Connection, key: str) -> int:
        """The newest revision number that falls out of the last ``limit`` (0: none)."""
        row = conn.execute("SELECT rev FROM inventory_history WHERE path = ? ORDER BY rev DESC"
                           " LIMIT 1 OFFSET ?", (key, self.limit)).fetchone()
        return int(row[0]) if row else 0

    def revisions(self, path: str | Path) -> list[Revision]:
        rows = self.store.query("SELECT * FROM inventory_history WHERE path = ? ORDER BY rev",
                                (self.key(path),))
        return [Revision(r["rev"], r["path"], r["at"], r["user"], r["command"], r["sha256"],
                         bytes(r["content"])) for r in rows]

    def get(self, path: str | Path, rev: int) -> Revision | None:
        for r in self.revisions(path):
            if r.rev == rev:
                return r
        return None
