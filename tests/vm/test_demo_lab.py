"""`dsas demo`'s life cycle and its table, without waiting for a guest to boot.

The demo runs as a subprocess (`--no-prepare`: no image build; the guest PXE-boots
from an empty tree, which is fine here). Its lab record (WORKDIR/lab.json) names
its namespaces and processes; the tests check that a SIGHUP (an ssh drop) stops
and removes all of them, that a SIGKILL takes the lab's processes with it
(PR_SET_PDEATHSIG) and the next run removes the namespace left behind, and that
every boot stage the master records is shown with its own sub-second time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.netns import _start_time
from lab.testing import require_root, require_tool
from tests.support.paths import ROOT

W101 = "198.18.1.11"  # w101's address in the lab inventory


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def alive(pid: int, start: int | None) -> bool:
    return start is not None and _start_time(pid) == start


def wait(cond: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Demo:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.out = work.parent / f"{work.name}-{time.monotonic_ns()}.out"
        with self.out.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "provision", "demo", "--no-prepare", "--workdir",
                 str(work), "--guests", "w101:bios:e1000", "--timeout", "300"],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)

    def record(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.work / "lab.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return doc if doc["owner"] == self.proc.pid else None

    def running(self) -> dict[str, Any]:
        """The record once the guest runs (QEMU among the recorded processes)."""
        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, self.text()
            doc = self.record()
            if doc and "powered on" in self.text() and any(
                    b"qemu-system" in _cmdline(pid) for pid, _ in doc["pids"]):
                return doc
            return None
        return wait(ready, "the demo's guest to power on", 90)  # type: ignore[no-any-return]

    def text(self) -> str:
        return self.out.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    require_root()
    for t in ("ip", "qemu-system-x86_64", "curl"):
        require_tool(t)
    w = tmp_path / "demo"
    w.mkdir()
    yield w
    # whatever a failed test left: by the record, never by name
    from lab.netns import remove_leftovers
    remove_leftovers(w / "lab.json")


def post_event(ns: str, stage: str) -> None:
    r = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "--interface", W101, "-X",
                        "POST", "-d", json.dumps({"stage": stage}),
                        "http://198.18.0.1/api/v1/events"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 0, (stage, r.stderr)


def test_sighup_stops_the_demo_and_every_stage_is_shown(work: Path) -> None:
    demo = Demo(work)
    try:
        doc = demo.running()
        pids = [(p, s) for p, s in doc["pids"]]
        qemu = [p for p, _ in pids if b"qemu-system" in _cmdline(p)]
        assert b"e1000" in _cmdline(qemu[0])  # --guests HOST:FW:NIC reaches QEMU
        [master] = [n for n in doc["namespaces"] if "master" in n]
        # w101's address on the master's bridge, so the master takes the events as w101's
        subprocess.run(["ip", "-n", master, "addr", "add", f"{W101}/32", "dev", "br0"],
                       check=True, timeout=20)
        for stage in ("dhcp", "kernel", "initramfs"):  # faster than the demo polls
            post_event(master, stage)
        lines = wait(lambda: [ln for ln in demo.text().splitlines() if "w101: " in ln]
                     if "initramfs" in demo.text() else None, "the stages in the output")
        stages = [ln.split("w101: ")[1].split()[0] for ln in lines]
        assert stages == ["dhcp", "kernel", "initramfs"], demo.text()
        times = [float(ln.split("s", 1)[0]) for ln in lines]
        assert times == sorted(times) and all("." in ln.split("s", 1)[0] for ln in lines)
        assert all(len(ln.split("s", 1)[0].split(".")[1]) == 2 for ln in lines)  # 1/100 s
        os.kill(demo.proc.pid, signal.SIGHUP)
        assert demo.proc.wait(timeout=60) in (0, 1), demo.text()
        for pid, start in pids:
            assert not alive(pid, start), (pid, _cmdline(pid))
        assert not set(doc["namespaces"]) & namespaces()
        assert not (work / "lab.json").exists()
    finally:
        demo.kill()


def test_a_killed_demo_takes_its_lab_along_and_the_next_run_cleans_up(work: Path) -> None:
    first = Demo(work)
    try:
        doc = first.running()
        first.kill()  # SIGKILL: no handler runs
        for pid, start in doc["pids"]:
            wait(lambda p=pid, s=start: not alive(p, s), f"pid {pid} to die with the demo", 30)
        assert set(doc["namespaces"]) <= namespaces()  # only a process could remove these
    finally:
        first.kill()
    second = Demo(work)
    try:
        wait(lambda: "removed the leftovers of run" in second.text(), "the clean-up", 60)
        assert f"run {first.proc.pid}" in second.text()
        assert not set(doc["namespaces"]) & namespaces()
        mine = second.running()
        os.kill(second.proc.pid, signal.SIGTERM)
        assert second.proc.wait(timeout=60) in (0, 1), second.text()
        assert not set(mine["namespaces"]) & namespaces()
        for pid, start in mine["pids"]:
            assert not alive(pid, start)
    finally:
        second.kill()


