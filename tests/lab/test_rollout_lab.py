"""`dsas rollout` against fake-but-real nodes (issue 23; the lab is ``lab.rollout``):
three nodes with their own sshd and host key, the master's real HTTP service serving
the boot files (with the rollout's pins) and taking the nodes' reports."""

from __future__ import annotations

from pathlib import Path

import yaml

from lab.netns import Lab
from lab.rollout import BROKEN, MASTER, make
from lab.testing import require_tool


def test_a_role_moves_then_a_broken_version_stops_at_the_canary_and_back_restores_it(
        lab: Lab, tmp_path: Path) -> None:
    for t in ("rsync", "sshd", "ssh-keygen", "nsenter", "curl"):
        require_tool(t)
    rl = make(lab, tmp_path)
    # 1. the role moves to version 2: the canary, a wait, then the others two at a time
    rc, doc, err = rl.rollout("tiny@2", "--role", "web", "--canary", "n01", "--batch", "2",
                              "--wait")
    assert rc == 0, err
    assert doc["outcome"] == "paused" and doc["moved"] == ["n01"], doc
    assert doc["pending"] == ["n02", "n03"] and rl.boots("n02") == []
    assert doc["batches"] == [["n01"], ["n02", "n03"]]
    assert [h["boot"] for h in doc["hosts"]] == ["netboot", "netboot", "disk"]
    st = rl.dsas("status", "--master", MASTER)
    assert f"rollout {doc['run']} (" in st.stdout and "PAUSED" in st.stdout, st.stdout
    rc, doc, err = rl.rollout("tiny", "--continue")
    assert rc == 0, err
    assert doc["outcome"] == "done" and doc["moved"] == ["n02", "n03"], doc
    assert rl.boots("n01") == ["netboot 2"] and rl.boots("n02") == ["netboot 2"]
    assert rl.boots("n03") == ["disk 2"]
    # the disk host got the image's tree as a verified release, live by symlink
    n3 = rl.node("n03").root
    assert (n3 / "image/tiny/etc/os-release").read_text() == "tiny 2\n"
    assert (n3 / "image/tiny").is_symlink()
    # the whole image moved: the inventory says 2 now
    inv = yaml.safe_load(rl.inventory.read_text())
    assert inv["images"]["tiny"]["version"] == "2" and doc["inventory_revision"]

    # 2. a version that fails on the node: stopped after the canary, the others untouched
    rc, doc, err = rl.rollout("tiny@" + BROKEN, "--role", "web", "--canary", "n02")
    assert rc == 1 and "stopped" in err
    assert doc["outcome"] == "stopped" and list(doc["failed"]) == ["n02"], doc
    assert "image broken" in doc["failed"]["n02"]
    assert doc["not_run"] == ["n01", "n03"] and doc["inventory_revision"] is None
    assert rl.boots("n02") == ["netboot 2", f"netboot {BROKEN}"]
    assert rl.boots("n01") == ["netboot 2"] and rl.boots("n03") == ["disk 2"]
    assert yaml.safe_load(rl.inventory.read_text())["images"]["tiny"]["version"] == "2"

    # 3. --back returns the canary to the version it had; its pin goes
    rc, doc, err = rl.rollout("tiny", "--back")
    assert rc == 0, err
    assert doc["back"] and doc["version"] == "2" and doc["moved"] == ["n02"], doc
    assert rl.boots("n02")[-1] == "netboot 2"
    hist = rl.dsas("rollout", "--history", "--state-dir", str(rl.state))
    assert hist.stdout.count("\nrun ") + hist.stdout.startswith("run ") == 3, hist.stdout
    assert "tiny 1 -> 2: done" in hist.stdout and "n02: 2 -> 3 failed" in hist.stdout


def test_a_live_rollout_is_refused_by_pid_then_killed_mid_batch_it_is_resumed(
        lab: Lab, tmp_path: Path) -> None:
    import json
    import signal
    import subprocess
    import time

    from provision.state import FILENAME, StateStore
    from provision.state.rollout import RolloutStore

    for t in ("rsync", "sshd", "ssh-keygen", "nsenter", "curl"):
        require_tool(t)
    rl = make(lab, tmp_path)
    hold = rl.node("n02").root / "hold"
    hold.write_text("")  # n02 "reboots" but never reports: the rollout waits on it
    # n02's ready report is waited for up to 120 s: the rollout is live mid-batch meanwhile
    proc = rl.farm.master.popen(rl.argv("tiny@2", "--role", "web", "--batch", "1",
                                        ready_timeout=120),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def hosts() -> dict[str, str]:
        if not (rl.state / FILENAME).exists():
            return {}
        store = StateStore(rl.state)
        try:
            run = RolloutStore(store).unfinished()
            return {h.host: h.detail for h in run.hosts if h.outcome == "moving"} if run \
                else {}
        finally:
            store.close()

    deadline = time.monotonic() + 60
    while "moving to 2" not in hosts().get("n02", ""):
        assert proc.poll() is None and time.monotonic() < deadline, "n02 never moved"
        time.sleep(0.2)
    # live: its lock held, its PID recorded; another --resume, --abandon or rollout is
    # refused, naming it (two processes would move the same hosts)
    live = f"error: rollout 1 of image tiny to 2 is live: dsas PID {proc.pid} on host "
    for args in (("tiny", "--resume"), ("tiny", "--abandon"), ("tiny@2", "--role", "web")):
        rc, doc, err = rl.rollout(*args)
        assert rc == 1 and live in err and f"`kill -INT {proc.pid}`" in err, (args, err)
        assert doc == {} and proc.poll() is None
    st = rl.dsas("status", "--master", MASTER)
    assert "rollout 1 (" in st.stdout and f"running (dsas PID {proc.pid} on host" in \
        st.stdout, st.stdout
    proc.send_signal(signal.SIGKILL)  # by its PID: `ip netns exec` exec'd dsas
    proc.wait(timeout=10)
    while not (rl.node("n02").root / "held").exists():  # its fake boot did not report
        assert time.monotonic() < deadline, "n02's fake boot never ran"
        time.sleep(0.1)
    hold.unlink()
    assert rl.boots("n01") == ["netboot 2"] and rl.boots("n02") == []

    st = rl.dsas("status", "--master", MASTER, "--json")
    doc = json.loads(st.stdout)["rollout"]
    assert doc["live"] is False and doc["owner"]["pid"] == proc.pid, doc
    st = rl.dsas("status", "--master", MASTER)
    assert f"killed (owner PID {proc.pid} gone)" in st.stdout, st.stdout
    rc, _, err = rl.rollout("tiny@2", "--role", "web")
    assert rc == 1 and f"is unfinished (killed (owner PID {proc.pid} gone)" in err, err
    assert "`dsas rollout tiny --resume` goes on with it" in err
    rc, doc, err = rl.rollout("tiny", "--resume")
    assert rc == 0, err
    assert "n02: was moving; no ready report on 2: moved again" in err
    assert doc["outcome"] == "done" and doc["moved"] == ["n02", "n03"], doc
    assert rl.boots("n01") == ["netboot 2"] and rl.boots("n02") == ["netboot 2"]
    assert rl.boots("n03") == ["disk 2"]
    assert yaml.safe_load(rl.inventory.read_text())["images"]["tiny"]["version"] == "2"
    hist = rl.dsas("rollout", "--history", "--state-dir", str(rl.state))
    assert "tiny 1 -> 2: done" in hist.stdout, hist.stdout


def test_sigterm_stops_a_rollout_after_its_batch_then_abandon_ends_it(
        lab: Lab, tmp_path: Path) -> None:
    import json
    import signal
    import subprocess
    import time

    for t in ("rsync", "sshd", "ssh-keygen", "nsenter", "curl"):
        require_tool(t)
    rl = make(lab, tmp_path)
    wait = rl.node("n01").root / "wait"
    wait.write_text("")  # n01's boot holds its report until the signal is sent
    proc = rl.farm.master.popen(rl.argv("tiny@2", "--role", "web", "--batch", "1"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (rl.node("n01").root / "held").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "n01 never moved"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    wait.unlink()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    doc = json.loads(out)
    assert doc["outcome"] == "interrupted" and doc["moved"] == ["n01"], doc
    assert doc["pending"] == ["n02", "n03"] and rl.boots("n02") == []
    assert "SIGTERM: stopping after this batch" in err
    st = rl.dsas("status", "--master", MASTER)
    assert "INTERRUPTED (`dsas rollout tiny --resume`" in st.stdout, st.stdout
    ab = rl.dsas("rollout", "tiny", "--abandon", "-i", str(rl.inventory), "--state-dir",
                 str(rl.state))
    assert ab.returncode == 0 and f"rollout {doc['run']} of image tiny: abandoned" in \
        ab.stdout, ab.stderr
    hist = rl.dsas("rollout", "--history", "--state-dir", str(rl.state)).stdout
    assert "tiny 1 -> 2: abandoned" in hist and "n02: 1 -> 2 not-run" in hist, hist
    rc, doc, err = rl.rollout("tiny@2", "--role", "web")  # no longer refused
    assert rc == 0, err
    assert doc["outcome"] == "done" and doc["moved"] == ["n02", "n03"], doc
    assert yaml.safe_load(rl.inventory.read_text())["images"]["tiny"]["version"] == "2"
