"""`dsas assign HOST lvs` (issue 16/17): the reloads before HOST has re-applied leave it
out, though the new inventory already makes it a director (``LiveFarm.becoming``).

The VM test (test_lvs_vm.py) failed so: the drain reloaded w2 itself, whose dsas-init
refused ("LVS_CONF_URL: empty: this host is not an LVS director"), and the move
stopped there. Here ``reload_one`` (the SSH round trip) records whom it was asked to
reload; the report that ends the re-apply is a real one in a real state store.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lab.lvs import INVENTORY
from provision.assign.farm import REAPPLY, LiveFarm
from provision.balancer import reload as lbreload
from provision.cli.assign import _becoming_director
from provision.inventory import loads
from provision.policy.httpfiles import Event
from provision.sshtrust.sshconf import SshConfig
from provision.state import StateStore, events

W2 = ('  w2: {role: web, macs: ["52:54:00:18:00:72", "52:54:00:18:01:72"],\n'
      '       addresses: {inside: 198.18.1.72}}\n')


def test_a_host_becoming_a_director_is_reloaded_only_once_it_runs_the_role(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert W2 in INVENTORY
    old = loads(INVENTORY)
    new = loads(INVENTORY.replace(W2, (
        '  w2: {role: lvs, macs: ["52:54:00:18:00:72", "52:54:00:18:01:72"],\n'
        '       addresses: {inside: 198.18.1.72, outside: 198.19.2.2}}\n')).replace(
        "hosts: {lvs1: active, lvs2: backup}", "hosts: {lvs1: active, lvs2: backup, w2: backup}"))
    assert [n for n, _ in lbreload.directors(new)] == ["lvs1", "lvs2", "w2"]
    assert _becoming_director(old, new, "w2") == {"w2"}
    assert _becoming_director(old, new, "w1") == set()  # not a director in either
    assert _becoming_director(new, old, "w2") == set()  # leaving: it is no director after
    asked: list[str] = []

    def reload_one(cfg: SshConfig, name: str, address: str, want: str | None = None,
                   timeout: float = 60) -> lbreload.Reloaded:
        asked.append(name)
        return lbreload.Reloaded(name, address, True, "keepalived: reloaded", want or "")

    monkeypatch.setattr(lbreload, "reload_one", reload_one)
    store = StateStore(tmp_path / "state")
    try:
        farm = LiveFarm("w2", new, SshConfig(tmp_path / "state"), store,
                        becoming=_becoming_director(old, new, "w2"))
        farm.reload({"web", "lvs"}, set())  # the drain
        assert sorted(asked) == ["lvs1", "lvs2"]
        since = time.time()
        events.ensure_events_schema(store)
        events.record(store, Event("w2", "ready", "role lvs: bond0=198.18.1.72", "tiny-lvs",
                                   "198.18.1.72"), since + 1, True, 100)
        assert "w2 reports ready" in farm.wait_report(since, "lvs", 5)
        asked.clear()
        farm.reload({"web", "lvs"}, set())  # the rebalance: w2 is a director now
        assert sorted(asked) == ["lvs1", "lvs2", "w2"]
    finally:
        store.close()


def test_the_reapply_runs_detached_where_there_is_no_nohup(tmp_path: Path) -> None:
    """busybox (the tiny-lvs image) has setsid but no nohup: `nohup setsid dsas-init
    reapply &` failed in the background there, and the move waited out its ready
    timeout. The script as sent, in busybox's sh with busybox's applets only."""
    busybox = shutil.which("busybox")
    assert busybox, "busybox is not installed (the tiny images' shell)"
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for applet in ("sh", "setsid", "mkdir", "sleep"):
        (bin_ / applet).symlink_to(busybox)
    marker = tmp_path / "ran"
    (bin_ / "dsas-init").write_text(f"#!{busybox} sh\necho \"$@\" > {marker}\n")
    (bin_ / "dsas-init").chmod(0o755)
    script = REAPPLY.replace("/run/dsas", str(tmp_path / "run"))
    r = subprocess.run([busybox, "sh", "-c", script], env={"PATH": str(bin_)},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "started", r.stdout + r.stderr
    for _ in range(100):  # bounded: 10 s
        if marker.exists() and marker.read_text():
            break
        time.sleep(0.1)
    assert marker.read_text().strip() == "reapply", (tmp_path / "run" / "reapply.log").read_text()
    (bin_ / "dsas-init").unlink()
    r = subprocess.run([busybox, "sh", "-c", script], env={"PATH": str(bin_)},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 127 and "dsas-init: not found" in r.stderr, r.stdout + r.stderr
