"""Rollouts in the state store (``schema.ROLLOUT``): each `dsas rollout` run, each host's
move in it, and the version pins.

    rollout_runs   one row per confirmed run: who, when, image, version, outcome
    rollout_hosts  one row per host of a run: batch, from and to version, outcome
                   (pending | moving | done | failed | not-run), when, why
    rollout_pins   host -> the image version it boots instead of the inventory's (set
                   when a netboot host is moved, dropped when the inventory catches up)

A run is ``running`` until it ends ``done`` (every host moved), ``stopped`` (after
``--max-failures``), ``failed`` (the rollout itself could not go on) or ``paused``
(after its canary, until `dsas rollout --continue` runs it again). A run stopped by
SIGINT/SIGTERM between batches is ``interrupted``; one whose process was killed stays
``running``: `dsas rollout IMAGE --resume` goes on with either (``--abandon`` ends it
``abandoned``). Each run records its owner, the process driving it (``Owner``), so a
killed one can be told from a live one (``rollout.owner``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from .schema import ROLLOUT
from .store import StateStore, current_user

HOST_OUTCOMES = ("pending", "moving", "done", "failed", "not-run")
RUN_OUTCOMES = ("running", "done", "stopped", "failed", "paused", "interrupted", "abandoned")
UNFINISHED = ("running", "paused", "interrupted")


@dataclass
class HostRow:
    """One host of a rollout run."""

    host: str
    batch: int
    at: float
    from_version: str
    to_version: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class Owner:
    """The `dsas rollout` process that drives a run: PID, its start time (clock ticks
    after boot, /proc/PID/stat field 22: a recycled PID has another) and host name."""

    pid: int
    start: int
    host: str


@dataclass
class RolloutRun:
    """One `dsas rollout` run, with its hosts."""

    id: int
    started: float
    finished: float | None
    user: str
    image: str
    version: str
    previous: str
    back: bool
    outcome: str
    plan: dict[str, Any]
    hosts: list[HostRow] = field(default_factory=list)
    owner: Owner | None = None  # None: recorded by an older dsas

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "started": self.started, "finished": self.finished,
                "user": self.user, "image": self.image, "version": self.version,
                "previous": self.previous, "back": self.back, "outcome": self.outcome,
                "owner": vars(self.owner) if self.owner is not None else None,
                "hosts": [vars(h) for h in self.hosts]}


class RolloutStore:
    """Rollout runs, their hosts, and the pins; written as the rollout goes."""

    def __init__(self, store: StateStore):
        self.store = store
        store.ensure(ROLLOUT)

    def start(self, image: str, version: str, previous: str, back: bool,
              plan: dict[str, Any], hosts: list[tuple[str, int, str]],
              owner: Owner | None = None) -> int:
        """A new run, driven by ``owner``; ``hosts``: (host, batch, from version), each
        ``pending``."""
        now = time.time()
        with self.store.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO rollout_runs(started, user, image, version, previous, back, plan,"
                " owner_pid, owner_start, owner_host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, current_user(), image, version, previous, int(back), json.dumps(plan),
                 *_columns(owner)))
            run = cur.lastrowid
            assert run is not None
            conn.executemany(
                "INSERT INTO rollout_hosts(run_id, host, batch, at, from_version, to_version,"
                " outcome) VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                [(run, h, b, now, v, version) for h, b, v in hosts])
        return run

    def host(self, run: int, host: str, outcome: str, detail: str = "") -> None:
        if outcome not in HOST_OUTCOMES:
            raise ValueError(f"unknown host outcome {outcome!r}")
        self.store.execute("UPDATE rollout_hosts SET outcome = ?, detail = ?, at = ?"
                           " WHERE run_id = ? AND host = ?",
                           (outcome, detail, time.time(), run, host))

    def finish(self, run: int, outcome: str) -> None:
        if outcome not in RUN_OUTCOMES[1:]:
            raise ValueError(f"unknown run outcome {outcome!r}")
        self.store.execute("UPDATE rollout_runs SET outcome = ?, finished = ? WHERE id = ?",
                           (outcome, time.time(), run))

    def resume(self, run: int, owner: Owner | None = None) -> None:
        """A paused (``--continue``), interrupted or killed (``--resume``) run goes on,
        driven by ``owner`` now."""
        self.store.execute("UPDATE rollout_runs SET outcome = 'running', finished = NULL,"
                           " owner_pid = ?, owner_start = ?, owner_host = ?"
                           " WHERE id = ? AND outcome IN ('paused', 'interrupted',"
                           " 'running')", (*_columns(owner), run))

    def run(self, run: int) -> RolloutRun:
        return self._run(self.store.query("SELECT * FROM rollout_runs WHERE id = ?",
                                          (run,))[0])

    def unfinished(self) -> RolloutRun | None:
        """The newest run not ended: running (or its process killed), paused or
        interrupted."""
        marks = ", ".join("?" * len(UNFINISHED))
        rows = self.store.query(f"SELECT * FROM rollout_runs WHERE outcome IN ({marks})"
                                " ORDER BY id DESC LIMIT 1", UNFINISHED)
        return self._run(rows[0]) if rows else None

    def runs(self, limit: int = 20) -> list[RolloutRun]:
        """The latest runs, newest last, each with its hosts."""
        rows = self.store.query("SELECT * FROM rollout_runs ORDER BY id DESC LIMIT ?",
                                (limit,))
        return [self._run(r) for r in reversed(rows)]

    def _run(self, r: sqlite3.Row) -> RolloutRun:
        run = RolloutRun(r["id"], r["started"], r["finished"], r["user"], r["image"],
                         r["version"], r["previous"], bool(r["back"]), r["outcome"],
                         json.loads(r["plan"]), owner=_owner(r))
        run.hosts = [HostRow(h["host"], h["batch"], h["at"], h["from_version"],
                             h["to_version"], h["outcome"], h["detail"])
                     for h in self.store.query("SELECT * FROM rollout_hosts WHERE run_id = ?"
                                               " ORDER BY batch, rowid", (run.id,))]
        return run

    def last(self, image: str | None = None, back: bool | None = None,
             outcome: str | None = None) -> RolloutRun | None:
        """The newest run (of ``image``; a --back one or not; with ``outcome``)."""
        for run in reversed(self.runs(limit=50)):
            if (image is None or run.image == image) and (back is None or run.back == back) \
                    and (outcome is None or run.outcome == outcome):
                return run
        return None

    def running(self) -> RolloutRun | None:
        """The run going on now, or paused after its canary."""
        rows = self.store.query("SELECT * FROM rollout_runs WHERE outcome IN ('running',"
                                " 'paused') ORDER BY id DESC LIMIT 1")
        return self._run(rows[0]) if rows else None

    # -- pins ----------------------------------------------------------------

    def pins(self, image: str | None = None) -> dict[str, str]:
        """host -> the version it is pinned to (of ``image``)."""
        rows = self.store.query("SELECT host, image, version FROM rollout_pins")
        return {r["host"]: r["version"] for r in rows if image is None or r["image"] == image}

    def pin(self, host: str, image: str, version: str, run: int) -> None:
        self.store.execute("INSERT OR REPLACE INTO rollout_pins(host, image, version, at,"
                           " run_id) VALUES (?, ?, ?, ?, ?)",
                           (host, image, version, time.time(), run))

    def unpin(self, image: str, hosts: list[str] | None = None) -> None:
        """Drop the pins of ``image`` (of ``hosts``): the inventory says it now."""
        with self.store.transaction() as conn:
            if hosts is None:
                conn.execute("DELETE FROM rollout_pins WHERE image = ?", (image,))
            else:
                conn.executemany("DELETE FROM rollout_pins WHERE image = ? AND host = ?",
                                 [(image, h) for h in hosts])


def _columns(o: Owner | None) -> tuple[int | None, int | None, str | None]:
    return (o.pid, o.start, o.host) if o is not None else (None, None, None)


def _owner(r: sqlite3.Row) -> Owner | None:
    """The owner a row records (none: an older dsas ran it, or an old table the status
    page reads without adding the columns)."""
    if "owner_pid" not in r.keys() or r["owner_pid"] is None:
        return None
    return Owner(r["owner_pid"], r["owner_start"], r["owner_host"])


def pins_quiet(store: StateStore) -> dict[str, tuple[str, str]]:
    """host -> (image, version) pinned, for the serve's renderer: no table yet, no pin."""
    try:
        rows = store.query("SELECT host, image, version FROM rollout_pins")
    except sqlite3.OperationalError:
        return {}
    return {r["host"]: (r["image"], r["version"]) for r in rows}


def running_quiet(store: StateStore) -> RolloutRun | None:
    """The running rollout for the status page (none while the tables do not exist)."""
    try:
        rows = store.query("SELECT * FROM rollout_runs WHERE outcome IN ('running', 'paused',"
                           " 'interrupted') ORDER BY id DESC LIMIT 1")
    except sqlite3.OperationalError:
        return None
    return RolloutStore(store)._run(rows[0]) if rows else None


def fingerprint(store: StateStore) -> tuple[Any, ...]:
    """Changes whenever a rollout records a host or ends (the status page polls it)."""
    runs = store.query("SELECT COUNT(*), MAX(id), SUM(coalesce(finished, 0))"
                       " FROM rollout_runs")[0]
    hosts = store.query("SELECT COUNT(*), MAX(at), SUM(at) FROM rollout_hosts")[0]
    return (*tuple(runs), *tuple(hosts))


def describe(run: dict[str, Any]) -> list[str]:
    """A running rollout (``RolloutRun.as_json()`` and ``live``, ``rollout.owner.live``)
    for `dsas status`: one line (a killed one says so, naming its PID), and one per host
    that is moving or failed."""
    hosts = run.get("hosts", [])
    by: dict[str, list[str]] = {}
    for h in hosts:
        by.setdefault(h["outcome"], []).append(h["host"])
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(by.items()))
    paused = {"paused": " PAUSED after its canary (--continue)",
              "interrupted": f" INTERRUPTED (`dsas rollout {run['image']} --resume` goes on,"
                             " --abandon ends it)"}.get(run.get("outcome", ""), "")
    if run.get("outcome") == "running" and run.get("owner"):  # none: an older dsas's
        paused = " " + state_text("running", run.get("owner"), run.get("live"))
        if run.get("live") is False:
            paused += (f" (`dsas rollout {run['image']} --resume` goes on, --abandon ends"
                       " it)")
    head = (f"rollout {run['id']} ({run['user']}){paused}: image {run['image']} "
            f"{'back to' if run.get('back') else 'to'} {run['version']}: "
            f"{len(by.get('done', []))}/{len(hosts)} hosts moved ({counts})")
    return [head] + [f"  {h['host']}: {h['outcome']} {h['detail']}".rstrip()
                     for h in hosts if h["outcome"] in ("moving", "failed")]


def state_text(outcome: str, owner: dict[str, Any] | None, live: bool | None) -> str:
    """A run's outcome for the operator; a ``running`` one says whether its dsas is
    alive (``live``: ``rollout.owner``) and names its PID."""
    if outcome != "running":
        return outcome
    if owner is None:
        return ("killed (its dsas gone)" if live is False else
                "still running, or its dsas was killed")  # an older dsas's run
    if live is False:
        return f"killed (owner PID {owner['pid']} gone)"
    if live is None:
        return (f"running (dsas PID {owner['pid']} on host {owner['host']}: cannot tell"
                " from here whether it is alive)")
    return f"running (dsas PID {owner['pid']} on host {owner['host']})"
