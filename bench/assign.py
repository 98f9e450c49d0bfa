"""`dsas assign`: time to serve, live against a re-netboot, in one run (QEMU, TCG).

The farm of tests/test_assign_vm.py: two directors, w1 (web) and s1 (spare), all
the web image, netbooted from `dsas serve`; a client loop on the VIP (one request
every 0.1 s, 0.8 s timeout) counts failures.

* live: `dsas assign s1 web` (drain, deliver, `dsas-init reapply`, rebalance);
  time from the command's start to the first answer from s1 through the VIP;
* rolling: `dsas-push --rolling 1` of a site over the web role (w1, s1), each host
  drained, pushed and put back; its time and failures;
* back: `dsas assign s1 spare` (drained first), with its failures;
* re-netboot, as the other tools do it: the inventory says s1 is web (`dsas host
  set`), the directors are reloaded (`dsas lb reload`), s1's QEMU is stopped and
  started again; time from the power-off to its first answer through the VIP;
* reboot path: role spare's kernel command line made different from web's (a hand
  edit), `dsas assign s1 spare` plans a reboot: drain, deliver, reboot, wait for
  ready, rebalance; the guest's reboot ends its QEMU (-no-reboot, a direct kernel
  boot), and a watcher powers it on again with what the inventory gives it now, as
  a netboot would; time of the command, against the live web -> spare.

Each figure comes with the CPU the machine's other processes used meanwhile (as
bench/lvs.py). Run: `python -m bench assign`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import FOREIGN_LIMIT, loaded_mark
from bench.lvs import Cpu, run_pids
from lab.assign import GUESTS, INVENTORY
from lab.clone import TEST_BOOT_ROOT, build_images
from lab.cluster import LabCluster
from lab.lvs import (
    CLIENT_LOOP,
    DSAS,
    VIP,
    boot,
    outside_client,
    publish_key,
    raw,
    reboot_as,
    trust,
)
from lab.lvs import client_rows as _rows
from lab.netns import Lab
from provision.inventory import load
from provision.services.servepid import notify_serve
from provision.state.inventory import sha256


def _wait(ok, timeout: float, what: str, step: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        time.sleep(step)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench assign")
    ap.parse_args(argv)
    build_images("web")
    rows: list[tuple[str, float, int, float]] = []
    rolling: tuple[str, float, int, float] | None = None
    with tempfile.TemporaryDirectory(prefix="dsas-bench-assign-") as tmp, Lab() as lab:
        work = Path(tmp)
        inv_path = work / "cluster.yaml"
        inv_path.write_text(INVENTORY)
        c = LabCluster(lab, load(inv_path), inv_path, work, TEST_BOOT_ROOT)
        try:
            client = outside_client(c)
            m = c.master
            state = publish_key(c)
            c.start_serve()
            t0 = time.monotonic()
            guests = {n: boot(c, n, 1536) for n in GUESTS}
            c.wait_stages(list(guests), ("ready", "failed"), 1200)
            print(f"  {len(guests)} guests ready in {time.monotonic() - t0:.0f} s", flush=True)
            for n in GUESTS:
                trust(c, state, n)
            for n in ("w1", "s1"):
                raw(c, state, n, f"echo {n} > /var/www/html/index.html")
            pids = run_pids(lab, guests)
            inv = ["-i", str(inv_path), "--state-dir", str(state)]
            loop_out = work / "loop.txt"
            with loop_out.open("w") as f:
                loop = client.popen([sys.executable, "-c", CLIENT_LOOP, VIP, "1000000",
                                     "3000", "0.1"], stdout=f, stderr=subprocess.DEVNULL,
                                    text=True)
            _wait(lambda: sum(ok for _, ok, _ in _rows(loop_out)) >= 20, 120, "traffic")

            current: list[Cpu] = []  # the step's accounting (a guest powered on again joins it)

            def move(what: str, args: list[str], until: str | None) -> None:
                cpu = Cpu(pids)
                current[:] = [cpu]
                n0 = len(_rows(loop_out))
                t = time.monotonic()
                r = m.run([DSAS, "assign", *args, "--yes", *inv], check=False, timeout=900)
                assert r.returncode == 0, r.stderr
                if until:
                    _wait(lambda: any(ok and b == until and ts > t
                                      for ts, ok, b in _rows(loop_out)), 120, until)
                    took = min(ts for ts, ok, b in _rows(loop_out)
                               if ok and b == until and ts > t) - t
                else:
                    took = time.monotonic() - t
                time.sleep(2)
                fails = sum(1 for _, ok, _ in _rows(loop_out)[n0:] if not ok)
                rows.append((what, took, fails, cpu.others()))

            move("live: s1 spare -> web, to 1st answer", ["s1", "web"], "s1")

            # a rolling site push over the web role (w1, s1), one host at a time: each
            # drained, pushed, health-checked and put back, under the client loop
            site = work / "site"
            site.mkdir()
            (site / "v.txt").write_text("v2\n")
            cpu = Cpu(pids)
            current[:] = [cpu]
            n0, t = len(_rows(loop_out)), time.monotonic()
            r = m.run([DSAS + "-push", str(site), "--role", "web", "--to", "/srv/site",
                       "--rolling", "1", "--yes", *inv], check=False, timeout=900)
            assert r.returncode == 0, r.stdout + r.stderr
            took = time.monotonic() - t
            time.sleep(2)
            fails = sum(1 for _, ok, _ in _rows(loop_out)[n0:] if not ok)
            rolling = ("rolling push --rolling 1 (w1, s1)", took, fails, cpu.others())

            move("live: s1 web -> spare (drained)", ["s1", "spare"], None)

            # the other tools' way: the inventory changed, the host re-netbooted
            cpu = Cpu(pids)
            n0 = len(_rows(loop_out))
            # (a hand edit: `dsas host set` does not change roles), the serve told
            inv_path.write_text(inv_path.read_text().replace("s1: {role: spare",
                                                             "s1: {role: web"))
            notice = notify_serve(state, inv_path, sha256(inv_path.read_bytes()))
            assert notice.reloaded, notice.message
            r = m.run([DSAS, "lb", "reload", *inv], check=False, timeout=300)
            assert r.returncode == 0, r.stdout + r.stderr
            t = time.monotonic()
            guests["s1"].stop()
            g = boot(c, "s1", 1536)
            if g.proc is not None:  # the new QEMU is this run's (it counted as "other")
                cpu.add(g.proc.pid)
            # its page is the image's own now (tmpfs root): any answer that is not w1's
            _wait(lambda: any(ok and b != "w1" and ts > t for ts, ok, b in _rows(loop_out)),
                  1200, "s1 answering after its re-netboot", 1)
            took = min(ts for ts, ok, b in _rows(loop_out) if ok and b != "w1" and ts > t) - t
            fails = sum(1 for _, ok, _ in _rows(loop_out)[n0:] if not ok)
            rows.append(("re-netboot: s1 -> web, to 1st answer", took, fails, cpu.others()))
            guests["s1"] = g
            pids = run_pids(lab, guests)

            # the reboot path of `dsas assign`: role spare's kernel command line now differs
            # from web's (a hand edit, the serve told), so the move reboots s1. Here a guest
            # boots its kernel directly and QEMU runs with -no-reboot: the guest's reboot ends
            # its QEMU, and a watcher powers it on again with what the inventory gives it
            # now, as a netboot would
            trust(c, state, "s1")  # the re-netboot made new host keys
            text, spare = inv_path.read_text(), "  spare:\n    services: []\n"
            assert text.count(spare) == 1
            inv_path.write_text(text.replace(spare, "  spare:\n    kernel_args: "
                                             "dsas.bench=reboot-path\n    services: []\n"))
            notice = notify_serve(state, inv_path, sha256(inv_path.read_bytes()))
            assert notice.reloaded, notice.message
            c.inventory = load(inv_path)
            old = guests["s1"]

            def power_cycle() -> None:
                if old.proc is None:
                    return
                try:
                    old.proc.wait(timeout=900)
                except subprocess.TimeoutExpired:
                    return
                new = guests["s1"] = reboot_as(c, "s1", old, 1536)
                if new.proc is not None and current:
                    current[0].add(new.proc.pid)

            watcher = threading.Thread(target=power_cycle, daemon=True)
            watcher.start()
            move("reboot path: s1 web -> spare", ["s1", "spare"], None)
            watcher.join(5)
            lab.stop(loop)
        finally:
            c.stop()
    print(f"\nassign (TCG guests, {os.cpu_count()} CPUs shared)")
    print(f"{'measure':<40} {'seconds':>8} {'failed':>7} {'other CPU, % of a core':>23}")
    for what, took, fails, other in rows + ([rolling] if rolling else []):
        print(f"{what:<40} {took:>8.1f} {fails:>7} {other:>23.0f}{loaded_mark(other)}")
    if len(rows) >= 3 and rows[0][1] > 0:
        quiet = max(rows[0][3], rows[2][3]) <= FOREIGN_LIMIT  # a loaded step is no ratio
        ratio = f"{rows[2][1] / rows[0][1]:>8.1f}" if quiet else f"{'-':>8}  (loaded: not a result)"
        print(f"{'ratio re-netboot / live':<40} {ratio}")
    if len(rows) >= 4 and rows[1][1] > 0:
        quiet = max(rows[1][3], rows[3][3]) <= FOREIGN_LIMIT
        ratio = f"{rows[3][1] / rows[1][1]:>8.1f}" if quiet else f"{'-':>8}  (loaded: not a result)"
        print(f"{'ratio reboot path / live (-> spare)':<40} {ratio}")
    return 0
