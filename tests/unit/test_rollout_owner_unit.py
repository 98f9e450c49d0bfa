"""Who drives a rollout run (issue 23, ``rollout.owner``): the liveness of a recorded
owner against /proc, the rollout lock, the owner columns added to an old state.db, and
`dsas status` seeing an owner die (the CLI's refusals: test_rollout_cli)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provision.rollout import owner
from provision.rollout.owner import ELSEWHERE, KILLED, LIVE, UNKNOWN, RunLock, liveness
from provision.state import StateStore
from provision.state.rollout import Owner, RolloutStore, describe

HERE = "master1"
REC = Owner(4242, 987654, HERE)


@pytest.mark.parametrize(("recorded", "host", "start", "seen"), [
    (REC, HERE, 987654, LIVE),            # the PID there, started when the owner did
    (REC, HERE, None, KILLED),            # no such PID
    (REC, HERE, 987655, KILLED),          # the PID recycled: another process
    (REC, "master2", 987654, ELSEWHERE),  # another host's PID: not ours to look up
    (None, HERE, 987654, UNKNOWN),      # recorded by an older dsas
])
def test_the_liveness_of_a_recorded_owner(recorded: Owner | None, host: str,
                                          start: int | None, seen: str) -> None:
    assert liveness(recorded, host, start) == seen


def test_the_start_time_is_field_22_counted_after_the_names_last_paren(
        tmp_path: Path) -> None:
    fields = " ".join(str(n) for n in range(3, 53))  # field n holds n
    line = f"4242 (dsas) (x y)) S {fields[2:]}\n"
    assert owner.stat_start(line) == 22
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(line)
    assert owner.start_of(4242, tmp_path) == 22
    assert owner.start_of(4243, tmp_path) is None
    me = owner.me()
    assert (me.pid, me.host) == (os.getpid(), socket.gethostname())
    assert owner.start_of(os.getpid()) == me.start


def test_live_asks_proc_for_a_running_run_only(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    rs = RolloutStore(store)
    me = owner.me()
    run = rs.start("web", "B", "A", False, {}, [("w101", 0, "A")], me)
    assert rs.run(run).owner == me and owner.live(rs.run(run)) is True
    rs.resume(run, Owner(me.pid, me.start + 1, me.host))  # the PID, another process
    assert owner.live(rs.run(run)) is False
    rs.resume(run, Owner(me.pid, me.start, "elsewhere"))
    assert owner.live(rs.run(run)) is None
    rs.resume(run, me)
    rs.finish(run, "interrupted")
    assert owner.live(rs.run(run)) is False
    store.close()


def test_the_lock_is_one_holders_until_it_closes_or_dies(tmp_path: Path) -> None:
    a, b = RunLock(tmp_path), RunLock(tmp_path)
    assert a.take() and not b.take()
    assert b.holder() == owner.me()
    a.close()
    assert b.take()
    b.close()
    # a holder SIGKILLed: the kernel drops its lock
    code = ("import sys, time; from provision.rollout.owner import RunLock; "
            f"assert RunLock({str(tmp_path)!r}).take(); print('held', flush=True); "
            "time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        held = a.holder()
        assert not a.take() and held is not None and held.pid == child.pid
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert a.take()
    a.close()


OLD_RUNS = """
CREATE TABLE rollout_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL,
    finished REAL, user TEXT NOT NULL, image TEXT NOT NULL, version TEXT NOT NULL,
    previous TEXT NOT NULL, back INTEGER NOT NULL DEFAULT 0, plan TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT 'running');
INSERT INTO rollout_runs(started, user, image, version, previous, plan)
    VALUES (1.0, 'op', 'web', 'B', 'A', '{}');
"""


def test_an_old_store_gains_the_owner_columns(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.executescript(OLD_RUNS)  # rollout_runs before owners, one run running
    db.close()
    store = StateStore(tmp_path)
    rs = RolloutStore(store)  # adds the columns
    old = rs.run(1)
    assert old.outcome == "running" and old.owner is None
    assert old.as_json()["owner"] is None and owner.live(old) is None
    new = rs.start("web", "C", "B", False, {}, [], owner.me())
    assert rs.run(new).owner == owner.me()
    store.close()


def test_status_sees_the_owner_die(tmp_path: Path) -> None:
    from provision.observability.status import StatusSource

    store = StateStore(tmp_path)
    child = subprocess.Popen(["sleep", "60"])
    try:
        start = owner.start_of(child.pid)
        assert start is not None
        rs = RolloutStore(store)
        run = rs.start("web", "B", "A", False, {}, [("w101", 0, "A")],
                       Owner(child.pid, start, socket.gethostname()))
        src = StatusSource(store)
        src.refresh()
        assert src.obs.rollout is not None and src.obs.rollout["live"] is True
        assert src.obs.rollout["owner"]["pid"] == child.pid
        assert f"running (dsas PID {child.pid} on host" in describe(src.obs.rollout)[0]
        assert src.refresh() == set()  # nothing changed
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    deadline = time.monotonic() + 10  # a reaped PID leaves /proc at once; bounded anyway
    while owner.start_of(child.pid) == start and time.monotonic() < deadline:
        time.sleep(0.05)
    assert src.refresh() is None  # no table changed, the owner died: a new view
    assert src.obs.rollout["live"] is False
    assert f"rollout {run} (" in describe(src.obs.rollout)[0]
    assert f"killed (owner PID {child.pid} gone)" in describe(src.obs.rollout)[0]
    store.close()
