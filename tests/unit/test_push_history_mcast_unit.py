"""Push history keeps the bytes a run multicast (issue 21): push_runs.mcast_bytes, added
to a state.db made before it (its old rows read 0), shown by ``dsas push log``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from click.testing import CliRunner

from provision.cli.push import push_log
from provision.state.pushes import History, HostResult
from provision.state.store import StateStore
from tests.support.state_support import OLD


def test_multicast_bytes_in_an_old_state_db_and_in_push_log(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.executescript(OLD)  # push_runs without mcast_bytes, one run
    db.close()
    store = StateStore(tmp_path)
    history = History(store)  # adds the column
    run = history.start("push", "/srv/www", ["w1", "w2"], src="/src", release="r2")
    history.finish(run, [HostResult("w1", True, "r2"), HostResult("w2", True, "r2")],
                   mcast_bytes=3 * 1024 * 1024)
    rsync_only = history.start("push", "/srv/www", ["w1"], src="/src", release="r3")
    history.finish(rsync_only, [HostResult("w1", True, "r3")])
    assert [(r["release"], r["mcast_bytes"]) for r in history.runs()] == [
        ("r3", 0), ("r2", 3 * 1024 * 1024), ("r1", 0)]
    store.close()
    out = CliRunner().invoke(push_log, ["--state-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split()[-1] == "multicast", out.output
    # run, started (2 words), user, action, src, to, release, ok, multicast
    shown = {ln.split()[7]: " ".join(ln.split()[9:]) for ln in lines[2:]}
    assert shown == {"r3": "-", "r2": "3.0 MiB", "r1": "-"}, out.output
    one = CliRunner().invoke(push_log, ["--state-dir", str(tmp_path), "--run", str(run)])
    assert one.exit_code == 0 and "multicast 3.0 MiB once" in one.output, one.output
