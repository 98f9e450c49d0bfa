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
