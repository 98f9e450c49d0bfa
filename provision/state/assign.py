"""The assign journal in the state store: every `dsas assign` run and each of its steps.

Tables (``schema.ASSIGN``)::

    assign_runs   one row per confirmed assign: host, roles, live or reboot, the plan
    assign_steps  one row per step, in order: inventory, drain, deliver, reapply|reboot,
                  rebalance; status done | failed | not-run (with why)

A step that has not been built yet is journaled as ``not-run`` with the reason, never as
done: the journal says what happened to the farm.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from .schema import ASSIGN
from .store import StateStore, current_user

STATUSES = ("done", "failed", "not-run")


@dataclass
class Step:
    """One step of an assign run."""

    seq: int
    at: float
    step: str
    status: str
    detail: str


@dataclass
class Run:
    """One `dsas assign` run, with its steps."""

    id: int
    at: float
    user: str
    host: str
    old_role: str
    new_role: str
    mode: str
    plan: dict[str, Any]
    steps: list[Step] = field(default_factory=list)


class AssignJournal:
    """The assign journal: runs and steps, written as they happen."""

    def __init__(self, store: StateStore):
        self.store = store
        store.ensure(ASSIGN)

    def start(self, host: str, old_role: str, new_role: str, mode: str,
              plan: dict[str, Any]) -> int:
        with self.store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO assign_runs(at, user, host, old_role, new_role, mode, plan)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), current_user(), host, old_role, new_role, mode, json.dumps(plan)))
            assert cur.lastrowid is not None
            return cur.lastrowid

    def step(self, run_id: int, step: str, status: str, detail: str = "") -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown step status {status!r}")
        with self.store.transaction() as conn:
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM assign_steps"
                               " WHERE run_id = ?", (run_id,)).fetchone()[0]
            conn.execute("INSERT INTO assign_steps(run_id, seq, at, step, status, detail)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         (run_id, seq, time.time(), step, status, detail))

    def runs(self, host: str | None = None, limit: int = 20) -> list[Run]:
        """The latest runs (of ``host``), newest last, each with its steps."""
        where, args = ("WHERE host = ?", [host]) if host else ("", [])
        rows = self.store.query(f"SELECT * FROM assign_runs {where} ORDER BY id DESC LIMIT ?",
                                (*args, limit))
        out = []
        for r in reversed(rows):
            run = Run(r["id"], r["at"], r["user"], r["host"], r["old_role"], r["new_role"],
                      r["mode"], json.loads(r["plan"]))
            run.steps = [Step(s["seq"], s["at"], s["step"], s["status"], s["detail"])
                         for s in self.store.query("SELECT * FROM assign_steps WHERE run_id = ?"
                                                   " ORDER BY seq", (run.id,))]
            out.append(run)
        return out
