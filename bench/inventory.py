"""Inventory edits: how long from `dsas host add` to the running serve answering for it.

A server namespace runs `dsas serve --only dns` on an inventory of --hosts web hosts; a
client namespace asks it with dig. Each round adds one host with the real command
(edit, validate whole, lock, history, atomic write, SIGHUP, wait for the serve's
receipt) and measures:

- edit: the command's wall time (it returns once the serve confirmed the reload);
- served: from the command's start until dig gets the new host's address;
- restart: for comparison, stopping and starting `dsas serve` until it answers (what a
  change costs without a reload).

Wall times depend on the machine's load; the edit's CPU time (user+sys) does not. So
each round records the CPU other processes used during the add and during the restart
(``bench.common.cpu_span``: the machine's less this process, its children and the
serve); a round where either exceeds ``FOREIGN_LIMIT`` of a core is marked loaded and
left out of the medians and the ratio (all rounds loaded: medians of all, marked, and
no ratio).

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
from dataclasses import dataclass
from pathlib import Path

from lab.netns import Lab, Netns

from .common import FOREIGN_LIMIT, cpu_span
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


@dataclass
class Round:
    """One host add and one restart, each with the other CPU during it."""

    edit: float  # s, the command's wall time
    cpu: float  # CPU-s (user+sys) of the command
    served: float  # s, from the command's start until dig answers
    restart: float  # s, serve stop and start until it answers
    other: float  # % of one core others used during the add (until served)
    other_restart: float  # ... and during the restart

    @property
    def quiet(self) -> bool:
        return max(self.other, self.other_restart) <= FOREIGN_LIMIT


class Bench:
    """A serve of the inventory in ``srv``, asked by dig from ``cli``."""

    def __init__(self, lab: Lab, work: Path, n_hosts: int):
        self.work = work
        self.srv, self.cli = lab.netns("invsrv"), lab.netns("invcli")
        lab.veth(self.srv, self.cli, f"{SERVER}/20", "198.18.15.250/20")
        self.inv = work / "cluster.yaml"
        self.inv.write_text(inventory_yaml(n_hosts))
        self.state = work / "state"
        self.lab = lab
        self.proc = self.start()
        _wait(self.cli, "m1.bench.test")

    def start(self) -> subprocess.Popen[bytes]:
        return self.srv.popen([DSAS, "serve", "-i", str(self.inv), "--only", "dns",
                               "--state-dir", str(self.state), "--boot-root", str(self.work)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def round(self, i: int) -> Round | None:
        name = f"n{i}"
        with cpu_span(self.proc.pid) as add:
            t0 = time.monotonic()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([DSAS, "host", "add", name, "--role", "web", "--mac",
                                f"52:54:00:ee:00:{i:02x}", "-i", str(self.inv),
                                "--state-dir", str(self.state)],
                               capture_output=True, text=True, timeout=120)
            t1 = time.monotonic()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if r.returncode != 0 or "reloaded" not in r.stdout:
                print(r.stdout, r.stderr, file=sys.stderr)
                return None
            _wait(self.cli, f"{name}.bench.test")
            served = time.monotonic() - t0
        with cpu_span(self.proc.pid) as restart:  # the old serve is reaped in it: counted once
            self.lab.stop(self.proc)
            self.proc = self.start()
            restart.add(self.proc.pid)
            _wait(self.cli, f"{name}.bench.test")
        cpu = ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime
        return Round(t1 - t0, cpu, served, restart.wall, add.other, restart.other)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench inventory")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="dsas-bench-inv-") as tmp, Lab() as lab:
        b = Bench(lab, Path(tmp), a.hosts)
        for i in range(a.rounds):
            r = b.round(i)
            if r is None:
                return 1
            rounds.append(r)
            print(f"  round {i + 1}: add {r.edit:.3f}s, served {r.served:.3f}s, other CPU "
                  f"{r.other:.1f}%; restart {r.restart:.3f}s, other CPU {r.other_restart:.1f}%"
                  f"{'' if r.quiet else '  (loaded: not a result)'}", flush=True)
        lab.stop(b.proc)
    report(rounds, a.hosts)
    return 0


def report(rounds: list[Round], hosts: int) -> None:
    """Medians of the quiet rounds (of all, marked, if none was quiet)."""
    quiet = [r for r in rounds if r.quiet]
    use = quiet or rounds
    med = statistics.median
    print(f"hosts={hosts} rounds={len(rounds)}, quiet {len(quiet)} (other CPU at most "
          f"{FOREIGN_LIMIT:g}% of a core during both the add and the restart)"
          + ("" if quiet else "; none quiet: the figures below are loaded, not a result"))
    print(f"{'':24}{'median s':>10}{'max s':>10}")
    for label, xs in (("host add (confirmed)", [r.edit for r in use]),
                      ("host add CPU (user+sys)", [r.cpu for r in use]),
                      ("add -> dig answers", [r.served for r in use]),
                      ("serve restart -> answers", [r.restart for r in use])):
        print(f"{label:24}{med(xs):10.3f}{max(xs):10.3f}")
    ratio = (f"{med(r.restart for r in quiet) / med(r.served for r in quiet):.2f}" if quiet
             else "- (no quiet round)")
    print(f"restart / edit-to-served: {ratio}")
