"""Every push, rollback and status in the state store: who, what, where, and each host's result.

Tables (``schema.PUSH``)::

    push_runs     one row per command run
    push_results  one row per host of a run
"""

from __future__ import annotations

import getpass
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from .schema import PUSH
from .store import StateStore


@dataclass
class HostResult:
    """What a push did on one host."""

    host: str
    ok: bool
    release: str | None = None
    previous: str | None = None
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    reason: str = ""


def operator() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


class History:
    """The push history: runs and per-host results."""

    def __init__(self, store: StateStore):
        self.store = store
        store.ensure(PUSH)

    def start(self, action: str, to_path: str, targets: list[str], src: str | None = None,
              release: str | None = None, manifest: str | None = None,
              options: dict[str, Any] | None = None) -> int:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO push_runs(started, user, action, src, to_path, release, manifest,"
                " options, targets) VALUES (?,?,?,?,?,?,?,?,?)",
                (time.time(), operator(), action, src, to_path, release, manifest,
                 json.dumps(options or {}, sort_keys=True), json.dumps(targets)))
            return int(cur.lastrowid or 0)

    def finish(self, run_id: int, results: list[HostResult], release: str | None = None,
               mcast_bytes: int = 0) -> None:
        """``mcast_bytes``: the file data this run multicast (each byte once, uftp)."""
        ok = sum(r.ok for r in results)
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO push_results(run_id, host, result, release, previous,"
                " bytes, files, seconds, reason) VALUES (?,?,?,?,?,?,?,?,?)",
                [(run_id, r.host, "ok" if r.ok else "failed", r.release, r.previous, r.bytes,
                  r.files, round(r.seconds, 3), r.reason) for r in results])
            conn.execute(
                "UPDATE push_runs SET finished=?, ok=?, failed=?, release=COALESCE(?, release),"
                " mcast_bytes=? WHERE id=?",
                (time.time(), ok, len(results) - ok, release, mcast_bytes, run_id))

    def runs(self, limit: int = 20, to_path: str | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE to_path=?", [to_path]) if to_path else ("", [])
        rows = self.store.query(f"SELECT * FROM push_runs {where} ORDER BY id DESC LIMIT ?",
                                [*params, limit])
        return [dict(r) for r in rows]

    def run(self, run_id: int) -> dict[str, Any] | None:
        rows = self.store.query("SELECT * FROM push_runs WHERE id=?", [run_id])
        return dict(rows[0]) if rows else None

    def results(self, run_id: int) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT * FROM push_results WHERE run_id=? ORDER BY host",
                                [run_id])
        return [dict(r) for r in rows]

    def last_push(self, to_path: str) -> dict[str, Any] | None:
        """The newest push (or retry) to ``to_path`` that has finished."""
        rows = self.store.query(
            "SELECT * FROM push_runs WHERE to_path=? AND action IN ('push','retry')"
            " AND finished IS NOT NULL ORDER BY id DESC LIMIT 1", [to_path])
        return dict(rows[0]) if rows else None

    def latest_release(self, to_path: str) -> str | None:
        """What every host of ``to_path`` should serve: the newest run that switched a host."""
        recent = self.recent_releases(to_path, 1)
        return recent[0] if recent else None

    def recent_releases(self, to_path: str, limit: int = 5) -> list[str]:
        """The releases of the newest runs that switched a host of ``to_path``, newest first."""
        rows = self.store.query(
            "SELECT release FROM push_runs WHERE to_path=? AND ok > 0 AND release IS NOT NULL"
            " ORDER BY id DESC LIMIT ?", [to_path, limit * 4])
        out: list[str] = []
        for r in rows:
            if r["release"] not in out:
                out.append(r["release"])
        return out[:limit]

    def live_releases(self) -> dict[str, list[dict[str, Any]]]:
        """Per host, what each run's newest result left live, one entry per live path,
        newest first: ``to_path``, ``release``, ``result`` (ok|failed), ``finished``."""
        rows = self.store.query(
            "SELECT r.host, r.result, r.release, p.to_path, p.finished FROM push_results r"
            " JOIN push_runs p ON p.id = r.run_id ORDER BY r.run_id DESC")
        out: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            paths = out.setdefault(r["host"], [])
            if all(p["to_path"] != r["to_path"] for p in paths):
                paths.append({"to_path": r["to_path"], "release": r["release"],
                              "result": r["result"], "finished": r["finished"]})
        return out


def fingerprint(store: StateStore) -> tuple[Any, ...]:
    """Changes whenever a run starts or finishes (the status page polls it)."""
    return tuple(store.query("SELECT MAX(id), COUNT(finished) FROM push_runs")[0])
