"""Inventory edits: how long from `dsas host add` to the running serve answering for it.

A server namespace runs `dsas serve --only dns` on an inventory of --hosts web hosts; a
client namespace asks it with dig. Each round adds one host with the real command
(edit, validate whole, lock, history, atomic write, SIGHUP, wait for the serve's
receipt) and measures:

- edit: the command's wall time (it returns once the serve confirmed the reload);
- served: from the command's start until dig gets the new host's address;
- restart: for comparison, stopping and starting `dsas serve` until it answers (what a
  change costs without a reload).

Wall times depend on the machine's load; the edit's CPU time (user+sys) does not.

Run: `python -m bench inventory [--hosts N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.netns import Lab, Netns

from .dns import inventory_yaml

DSAS = str(Path(sys.executable).with_name("dsas"))
SERVER = "198.18.0.1"


def _answers(cli: Netns, name: str, want: str | None = None) -> bool:
    out = cli.run(["dig", f"@{SERVER}", "+short", "+time=1", "+tries=1", name],
                  check=False, timeout=10)
    got = out.stdout.split()
    if out.returncode != 0 or not got or not got[0][:1].isdigit():
        return False  # no reply (dig prints its complaint on stdout), or no such name
    return want is None or got == [want]


def _wait(cli: Netns, name: str, want: str | None = None, limit: float = 60) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:  # bounded
        if _answers(cli, name, want):
            return time.monotonic() - t0
        time.sleep(0.005)
    raise RuntimeError(f"{name} never answered")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench inventory")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dsas-bench-inv-") as tmp, Lab() as lab:
        work = Path(tmp)
        srv, cli = lab.netns("invsrv"), lab.netns("invcli")
        lab.veth(srv, cli, f"{SERVER}/20", "198.18.15.250/20")
        inv = work / "cluster.yaml"
        inv.write_text(inventory_yaml(a.hosts))
        state = work / "state"

        def start() -> subprocess.Popen[bytes]:
            return srv.popen([DSAS, "serve", "-i", str(inv), "--only", "dns", "--state-dir",
                              str(state), "--boot-root", str(work)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        proc = start()
        _wait(cli, "m1.bench.test")
        edits: list[float] = []
        served: list[float] = []
        restarts: list[float] = []
        cpu: list[float] = []
        for i in range(a.rounds):
            name = f"n{i}"
            t0 = time.monotonic()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([DSAS, "host", "add", name, "--role", "web", "--mac",
                                f"52:54:00:ee:00:{i:02x}", "-i", str(inv), "--state-dir",
                                str(state)], capture_output=True, text=True, timeout=120)
            t1 = time.monotonic()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime)
            if r.returncode != 0 or "reloaded" not in r.stdout:
                print(r.stdout, r.stderr, file=sys.stderr)
                return 1
            _wait(cli, f"{name}.bench.test")
            edits.append(t1 - t0)
            served.append(time.monotonic() - t0)
            t2 = time.monotonic()
            lab.stop(proc)
            proc = start()
            _wait(cli, f"{name}.bench.test")
            restarts.append(time.monotonic() - t2)
        lab.stop(proc)
    med = statistics.median
    print(f"hosts={a.hosts} rounds={a.rounds}")
    print(f"{'':24}{'median s':>10}{'max s':>10}")
    for label, xs in (("host add (confirmed)", edits), ("host add CPU (user+sys)", cpu),
                      ("add -> dig answers", served),
                      ("serve restart -> answers", restarts)):
        print(f"{label:24}{med(xs):10.3f}{max(xs):10.3f}")
    print(f"restart / edit-to-served: {med(restarts) / med(served):.2f}")
    return 0
