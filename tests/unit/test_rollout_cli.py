"""`dsas rollout` on the command line (issue 23): the plan, --dry-run changes nothing,
--json, confirmation, one-line errors, --back's plan and --history, against a real
inventory file, image store and state store."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from provision.cli.main import cli
from provision.rollout import owner
from provision.rollout.owner import RunLock
from provision.state import StateStore
from provision.state.rollout import Owner, RolloutStore, describe
from tests.support.paths import EXAMPLE


@pytest.fixture
def farm(tmp_path: Path) -> dict[str, Path]:
    inv = tmp_path / "cluster.yaml"
    shutil.copy(EXAMPLE, inv)
    boot = tmp_path / "boot"
    for image, versions in (("web", ("A", "B")), ("base", ("X",))):
        for v in versions:
            (boot / "images" / image / v).mkdir(parents=True)
        (boot / "images" / image / "current").symlink_to(versions[0])
    return {"inv": inv, "boot": boot, "state": tmp_path / "state"}


def dsas(farm: dict[str, Path], *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["rollout", *args, "-i", str(farm["inv"]), "--boot-root",
                                    str(farm["boot"]), "--state-dir", str(farm["state"])],
                              input=stdin)


def test_dry_run_prints_the_plan_and_changes_nothing(farm: dict[str, Path]) -> None:
    before = farm["inv"].read_bytes()
    r = dsas(farm, "web@B", "--role", "web", "--canary", "w102", "--batch", "4",
             "--dry-run")
    assert r.exit_code == 0, r.output
    assert "rollout of image web to B (the inventory has A):" in r.output
    assert "w101       role web      netboot A -> B  pools left and rejoined: web" in r.output
    assert "batch 1 (canary): w102" in r.output
    assert "batch 2: w101, w103, w104, w105" in r.output
    assert "batch 3: w106, w107, w108" in r.output
    assert "image web version becomes B once all have moved" in r.output
    assert r.output.rstrip().endswith("dry run: nothing changed")
    assert farm["inv"].read_bytes() == before
    assert not farm["state"].exists()  # not even an empty state file


def test_json_is_one_document(farm: dict[str, Path]) -> None:
    r = dsas(farm, "web@B", "--host", "w101", "--host", "w102", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["batches"] == [["w101"], ["w102"]] and doc["version"] == "B"
    assert [h["boot"] for h in doc["hosts"]] == ["netboot", "netboot"]
    assert doc["inventory_after"] is False


def test_without_yes_or_a_terminal_nothing_happens(farm: dict[str, Path]) -> None:
    r = dsas(farm, "web@B", "--host", "w101", stdin="y\n")
    assert r.exit_code == 1
    assert "not confirmed (no terminal to ask on)" in r.output
    # nothing recorded: only the rollout lock it held while it asked (rollout.owner)
    assert [p.name for p in farm["state"].iterdir()] == ["rollout.lock"]


@pytest.mark.parametrize(("args", "code", "msg"), [
    (["web"], 2, "web: name the version, as IMAGE@VERSION"),
    (["web@B", "--back"], 2, "--back takes IMAGE only"),
    (["web@B", "--json"], 2, "--json needs --dry-run or --yes"),
    ([], 2, "give IMAGE@VERSION"),
    (["web@Z", "-n"], 1, "error: no image web@Z in the image store"),
    (["web@B", "--role", "db", "-n"], 1, "--role db: none of its hosts boots image web"),
    (["web", "--back", "-n"], 1, "no rollout of image web recorded"),
    (["web", "--continue", "-n"], 1, "no paused rollout of image web: nothing to continue"),
    (["web@B", "--continue"], 2, "--continue takes IMAGE only"),
    (["web", "--continue", "--back"], 2, "--back or --continue, not both"),
    (["web@B", "--wait", "-n"], 2, "--wait needs --canary"),
])
def test_bad_arguments_are_one_line(farm: dict[str, Path], args: list[str], code: int,
                                    msg: str) -> None:
    r = dsas(farm, *args)
    assert r.exit_code == code, r.output
    assert msg in r.output and "Traceback" not in r.output
    assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1


def test_back_plans_the_hosts_the_last_rollout_moved(farm: dict[str, Path]) -> None:
    store = StateStore(farm["state"])
    rs = RolloutStore(store)
    run = rs.start("web", "B", "A", False, {}, [("w101", 0, "A"), ("w102", 1, "A"),
                                               ("w103", 1, "A")])
    rs.host(run, "w101", "failed", "reports failed")
    rs.host(run, "w102", "not-run")
    rs.host(run, "w103", "not-run")
    rs.pin("w101", "web", "B", run)
    rs.finish(run, "stopped")
    store.close()
    r = dsas(farm, "web", "--back", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["back"] and doc["version"] == "A"
    assert [(h["host"], h["current"]) for h in doc["hosts"]] == [("w101", "B")]
    h = CliRunner().invoke(cli, ["rollout", "--history", "--state-dir", str(farm["state"])])
    assert f"run {run} " in h.output and "web A -> B: stopped" in h.output
    assert "batch 1 w101: A -> B failed (reports failed)" in h.output


def killed_run(farm: dict[str, Path], outcome: str = "running") -> int:
    """A rollout of web to B over w101..w103 whose dsas died moving w102: w101 done
    (pinned), w102 moving (pinned, drained), w103 pending."""
    from provision.balancer.members import Override
    from provision.state import members as smembers

    store = StateStore(farm["state"])
    rs = RolloutStore(store)
    plan = {"batches": [["w101"], ["w102"], ["w103"]]}
    run = rs.start("web", "B", "A", False, plan, [("w101", 0, "A"), ("w102", 1, "A"),
                                                  ("w103", 2, "A")])
    rs.host(run, "w101", "done", "on B")
    rs.pin("w101", "web", "B", run)
    rs.pin("w102", "web", "B", run)
    rs.host(run, "w102", "moving", "netboot: moving to B")
    smembers.set_host(store, "w102", [Override("w102", "web", "drain", "198.18.1.2",
                                               f"rollout run {run}")])
    if outcome != "running":
        rs.finish(run, outcome)
    store.close()
    return run


def test_a_new_rollout_is_refused_while_one_is_unfinished(farm: dict[str, Path]) -> None:
    run = killed_run(farm)
    r = dsas(farm, "web@B", "--host", "w104", "-n")
    assert r.exit_code == 1, r.output
    assert (f"error: rollout {run} of image web to B is unfinished (still running, or its"
            " dsas was killed; 2 host(s) not moved: w102, w103): `dsas rollout web --resume`"
            " goes on with it, `dsas rollout web --abandon` ends it") in r.output
    assert dsas(farm, "web", "--back", "-n").exit_code == 1  # --back too


def test_status_names_an_interrupted_rollout_and_what_to_do(farm: dict[str, Path]) -> None:
    from provision.state.rollout import describe

    run = killed_run(farm, "interrupted")
    store = StateStore(farm["state"])
    doc = RolloutStore(store).run(run).as_json()
    store.close()
    head = describe(doc)[0]
    assert "INTERRUPTED (`dsas rollout web --resume` goes on, --abandon ends it)" in head


def test_resume_plans_the_host_that_was_moving_again_and_the_pending_ones(
        farm: dict[str, Path]) -> None:
    killed_run(farm)
    r = dsas(farm, "web", "--resume", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert [(h["host"], h["current"]) for h in doc["hosts"]] == [("w102", "A"), ("w103", "A")]
    assert doc["batches"] == [["w102"], ["w103"]]


def test_resume_counts_the_host_that_was_moving_done_on_its_ready_report(
        farm: dict[str, Path]) -> None:
    import time

    from provision.policy.httpfiles import Event
    from provision.state import events

    run = killed_run(farm)
    store = StateStore(farm["state"])
    events.ensure_events_schema(store)
    events.record(store, Event("w102", "ready", None, "web@B", "198.18.1.2"), time.time() + 1,
                  False, 100)
    store.close()
    r = dsas(farm, "web", "--resume", "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert [h["host"] for h in json.loads(r.stdout)["hosts"]] == ["w103"]
    assert "w102: was moving; its ready report names B: done" in r.stderr
    store = StateStore(farm["state"])
    hosts = {h.host: h.outcome for h in RolloutStore(store).run(run).hosts}
    store.close()
    assert hosts["w102"] == "moving"  # a dry run records nothing


def test_resume_and_abandon_need_an_unfinished_rollout(farm: dict[str, Path]) -> None:
    for mode in ("--resume", "--abandon"):
        r = dsas(farm, "web", mode, "-n")
        assert r.exit_code == 1 and ("no unfinished rollout of image web: nothing to resume"
                                     " or abandon") in r.output, r.output
    r = dsas(farm, "web@B", "--resume")
    assert r.exit_code == 2 and "--resume takes IMAGE only" in r.output


def test_a_live_run_is_refused_naming_its_pid(farm: dict[str, Path]) -> None:
    run = killed_run(farm)
    store = StateStore(farm["state"])
    RolloutStore(store).resume(run, owner.me())  # this process drives it
    store.close()
    lock = RunLock(farm["state"])
    assert lock.take()
    try:
        # no --yes: were it not refused, it would stop at the confirmation, before any
        # host is reached (--abandon, last, would reach the directors)
        for args in (["web@B", "--host", "w104", "-n"], ["web", "--resume"],
                     ["web@B", "--host", "w104"], ["web", "--abandon"]):
            r = dsas(farm, *args)
            assert r.exit_code == 1, (args, r.output)
            assert (f"error: rollout {run} of image web to B is live: dsas PID {os.getpid()}"
                    f" on host {socket.gethostname()} is running it; wait for it to end, or"
                    f" stop it with SIGINT (`kill -INT {os.getpid()}`: it stops after the "
                    "batch it is moving; then `dsas rollout web --resume` goes on)"
                    ) in r.output, (args, r.output)
            assert len(r.output.splitlines()) == 1
    finally:
        lock.close()
    store = StateStore(farm["state"])
    got = RolloutStore(store).run(run)
    store.close()
    assert got.outcome == "running" and {h.host: h.outcome for h in got.hosts}["w102"] == \
        "moving"  # nothing touched


def test_a_killed_run_says_so_and_resume_takes_it_over(farm: dict[str, Path]) -> None:
    run = killed_run(farm)
    me = owner.me()
    gone = Owner(me.pid, me.start + 1, me.host)  # its PID is another process's now
    store = StateStore(farm["state"])
    RolloutStore(store).resume(run, gone)
    doc = RolloutStore(store).run(run).as_json()
    store.close()
    r = dsas(farm, "web@B", "--host", "w104", "-n")
    assert r.exit_code == 1 and (f"rollout {run} of image web to B is unfinished (killed "
                                 f"(owner PID {me.pid} gone); 2 host(s) not moved") in \
        r.output, r.output
    head = describe({**doc, "live": False})[0]
    assert "image web to B" in head and (f" killed (owner PID {me.pid} gone) (`dsas rollout"
                                          " web --resume` goes on, --abandon ends it)") in head
    h = dsas(farm, "--history")
    assert f"web A -> B: killed (owner PID {me.pid} gone)" in h.output, h.output
    j = json.loads(dsas(farm, "--history", "--json").output)
    assert j[-1]["owner"] == {"pid": me.pid, "start": me.start + 1, "host": me.host}
    assert j[-1]["live"] is False
    r = dsas(farm, "web", "--resume", "--dry-run", "--json")
    assert r.exit_code == 0 and [h["host"] for h in json.loads(r.stdout)["hosts"]] == [
        "w102", "w103"], r.output
