"""`dsas rollout`: wall time of a rollout of three hosts against the sum of a redeploy
per host done by hand, in one run (issue 23), on the rollout lab (``lab.rollout``: three
fake-but-real nodes with their own sshd, two netbooting and one from disk, the master's
real HTTP service; a node's "reboot" reports its new version within ~0.5 s, so the
figures are dsas's own cost: SSH, the push of the disk host's tree, the waits).

* by hand: `dsas rollout tiny@2 --host H --yes`, one host after the other, summed;
* rollout: `dsas rollout tiny@4 --role web --canary n01 --batch 2 --yes`;
* rollout, one batch: `dsas rollout tiny@5 --role web --batch 3 --yes`.

"other CPU" is the machine's CPU minus this process's, its waited children's (each
`dsas rollout` and what it ran) and the lab's own long-running processes' (the
`dsas serve`, the nodes' sshds with their sessions).

Failed requests during the rollout need directors and a client on the VIP (the QEMU
tier); this lab has no pools, so they are not measured here.

    python -m bench rollout
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import cpu_span, loaded_mark
from lab.netns import Lab
from lab.rollout import RolloutLab, make

HOSTS = ("n01", "n02", "n03")


def timed(lab: Lab, rl: RolloutLab, *args: str) -> tuple[float, float]:
    """Seconds of one `dsas rollout` (it must succeed), and the others' CPU meanwhile."""
    with cpu_span(*(p.pid for p in lab.procs if p.poll() is None)) as span:
        rc, doc, err = rl.rollout(*args)
    if rc != 0 or doc.get("outcome") != "done":
        raise SystemExit(f"dsas rollout {' '.join(args)} failed: {err[-2000:]}")
    return span.wall, span.other


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench rollout")
    ap.parse_args(argv)
    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="dsas-bench-rollout-") as tmp, Lab() as lab:
        rl = make(lab, Path(tmp), versions=("1", "2", "4", "5"))
        hand = [timed(lab, rl, "tiny@2", "--host", h) for h in HOSTS]
        rows.append(("by hand, 3 x --host (sum)", sum(w for w, _ in hand),
                     max(o for _, o in hand)))
        rows.append(("rollout, canary + batch 2", *timed(lab, rl, "tiny@4", "--role", "web",
                                                         "--canary", "n01", "--batch", "2")))
        rows.append(("rollout, one batch of 3", *timed(lab, rl, "tiny@5", "--role", "web",
                                                       "--batch", "3")))
    base = rows[0][1]
    print(f"{'3 hosts (2 netboot, 1 disk)':<30} {'wall s':>8} {'vs hand':>8} {'other CPU':>10}")
    for name, wall, other in rows:
        print(f"{name:<30} {wall:8.2f} {wall / base:7.2f}x {other:9.0f}%{loaded_mark(other)}")
    print("failed requests: not measured (no directors in this lab; see the module doc)")
    return 0
