"""LVS: VRRP failover and the cost of IPVS, side by side in one run (QEMU, TCG).

The lab of tests/test_lvs_vm.py: two directors (the web image, keepalived +
IPVS, NAT) and two web servers (tiny image, busybox httpd) netbooted from
`dsas serve`, a client namespace on the outside VLAN. The client also gets a
leg on the inside bridge, so one process can reach a real server directly.

* IPVS cost: requests per second (fresh TCP connection each, 4 at a time, for
  SECONDS s) from the client through the VIP, against the same client straight
  to w1, and straight to w1 and w2 in turn (the VIP spreads over both, so that
  is the fair peer); ratios VIP / direct (1.0: IPVS costs nothing).
* VRRP failover: one request every 0.1 s (0.8 s timeout) while the active
  director's QEMU quits; time from the last answer before to the first after,
  and requests lost. keepalived's own figure is 3 x advert_int + skew, about
  3.6 s at advert_int 1. (A sub-second advert_int needs VRRPv3 and an inventory
  that allows it; the inventory takes whole seconds today, so it is not run.)

Each figure comes with the CPU the machine's other processes used meanwhile
(busy share of all CPUs from /proc/stat minus what this run's QEMUs used): on
a shared machine TCG guests get what is left. Run: `python -m bench lvs`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provision.inventory import load
from provision.lab.cluster import LabCluster
from provision.lab.netns import Lab, Netns
from tests.clonelab import TEST_BOOT_ROOT, build_images
from tests.lvslab import CLIENT, CLIENT_LOOP, VIP, _rows, boot
from tests.test_lvs_vm import INVENTORY, WEB

RPS = r"""
import http.client, sys, threading, time
hosts, seconds, conc = sys.argv[1].split(","), float(sys.argv[2]), int(sys.argv[3])
ok = fail = 0
lock = threading.Lock()
end = time.monotonic() + seconds
def run(i):
    global ok, fail
    n = i
    while time.monotonic() < end:
        n += 1
        try:
            c = http.client.HTTPConnection(hosts[n % len(hosts)], 80, timeout=2)
            c.request("GET", "/", headers={"Connection": "close"})
            c.getresponse().read(); c.close()
            with lock: ok += 1
        except Exception:
            with lock: fail += 1
ts = [threading.Thread(target=run, args=(i,)) for i in range(conc)]
[t.start() for t in ts]; [t.join() for t in ts]
print(ok / seconds, fail)
"""


class Cpu:
    """Busy share of all CPUs over a window, and how much of it given PIDs used."""

    def __init__(self, pids: list[int]):
        self.pids = pids
        self.t0 = self._total()
        self.p0 = self._procs()  # a PID that dies meanwhile counts as 0 (others: upper bound)

    @staticmethod
    def _total() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + v[4]
        return sum(v) - idle, sum(v)

    def _procs(self) -> dict[int, int]:
        out = {}
        for pid in self.pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[pid] = int(fields[11]) + int(fields[12])  # utime + stime
            except (OSError, IndexError, ValueError):
                pass
        return out

    def others(self) -> float:
        """Percent of the machine's CPU that other processes used since start."""
        busy1, total1 = self._total()
        now = self._procs()
        ours = sum(now[p] - self.p0[p] for p in now if p in self.p0)
        busy = busy1 - self.t0[0]
        total = max(1, total1 - self.t0[1])
        return min(100.0, 100.0 * max(0, busy - ours) / total)


def _wait(ok, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        time.sleep(1)


def rps(client: Netns, host: str, seconds: float) -> tuple[float, int]:
    out = client.run([sys.executable, "-c", RPS, host, str(seconds), "4"],
                     timeout=seconds + 60).stdout.split()
    return float(out[0]), int(out[1])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lvs")
    ap.add_argument("--seconds", type=float, default=10, help="length of each rps run")
    args = ap.parse_args(argv)
    build_images("tiny", "web")
    with tempfile.TemporaryDirectory(prefix="dsas-bench-lvs-") as tmp, Lab() as lab:
        work = Path(tmp)
        inv_path = work / "cluster.yaml"
        inv_path.write_text(INVENTORY)
        c = LabCluster(lab, load(inv_path), inv_path, work, TEST_BOOT_ROOT)
        try:
            c.setup_network()
            m = c.master
            m.run(["ip", "addr", "flush", "dev", "vlan2"])
            lab.bridge(m, "br2", "198.19.2.1/24")
            m.run(["ip", "link", "set", "vlan2", "master", "br2"])
            client = lab.netns("client")
            lab.plug(m, "br2", client, f"{CLIENT}/24")
            lab.plug(m, "br0", client, "198.18.3.50/22")  # the direct leg, inside
            c.start_serve()
            t0 = time.monotonic()
            guests = {n: boot(c, n, 1536 if n.startswith("lvs") else 256)
                      for n in ("lvs1", "lvs2", *WEB)}
            c.wait_stages(list(guests), ("ready", "failed"), 1200)
            print(f"  4 guests ready in {time.monotonic() - t0:.0f} s", flush=True)
            for n in WEB:
                from provision.lab.qemu import wait_shell

                sh = wait_shell(guests[n])
                st, out = sh.run(f"mkdir -p /www && echo {n} > /www/index.html && "
                                 "busybox httpd -p 80 -h /www")
                assert st == 0, out
            _wait(lambda: client.run(["curl", "-sf", "-m", "2", f"http://{VIP}/"],
                                     check=False).returncode == 0, 180, "an answer via the VIP")
            pids = [g.proc.pid for g in guests.values() if g.proc]
            w1 = str(c.inventory.hosts["w1"].primary_interface.address)
            cpu = Cpu(pids)
            direct, dfail = rps(client, w1, args.seconds)
            d_cpu = cpu.others()
            cpu = Cpu(pids)
            via, vfail = rps(client, VIP, args.seconds)
            v_cpu = cpu.others()
            w2 = str(c.inventory.hosts["w2"].primary_interface.address)
            cpu = Cpu(pids)
            both, bfail = rps(client, f"{w1},{w2}", args.seconds)
            b_cpu = cpu.others()

            loop_out = work / "loop.txt"
            with loop_out.open("w") as f:
                loop = client.popen([sys.executable, "-c", CLIENT_LOOP, VIP, "100000", "90",
                                     "0.1"], stdout=f, stderr=subprocess.DEVNULL, text=True)
            _wait(lambda: sum(ok for _, ok, _ in _rows(loop_out)) >= 20, 30, "traffic")
            cpu = Cpu(pids)
            t_kill = time.monotonic()
            guests["lvs1"].stop()
            _wait(lambda: sum(1 for t, ok, _ in _rows(loop_out) if ok and t > t_kill + 0.5)
                  >= 20, 80, "answers after the failover")
            f_cpu = cpu.others()
            lab.stop(loop)
            rows = _rows(loop_out)
            before = [t for t, ok, _ in rows if ok and t <= t_kill]
            after = [t for t, ok, _ in rows if ok and t > t_kill]
            lost = sum(1 for t, ok, _ in rows if not ok and t > before[-1])
            gap = after[0] - before[-1]
        finally:
            c.stop()
    print(f"\nlvs (TCG guests, {os.cpu_count()} CPUs shared)")
    print(f"{'measure':<34} {'value':>10} {'failed':>7} {'other CPU %':>12}")
    print(f"{'rps direct to w1':<34} {direct:>10.1f} {dfail:>7} {d_cpu:>12.0f}")
    print(f"{'rps through the VIP (IPVS NAT)':<34} {via:>10.1f} {vfail:>7} {v_cpu:>12.0f}")
    print(f"{'rps direct to w1 and w2 in turn':<34} {both:>10.1f} {bfail:>7} {b_cpu:>12.0f}")
    print(f"{'ratio VIP / direct to w1':<34} {via / direct if direct else float('nan'):>10.2f}")
    print(f"{'ratio VIP / direct to both':<34} {via / both if both else float('nan'):>10.2f}")
    print(f"{'VRRP failover gap s (advert_int 1)':<34} {gap:>10.2f} {lost:>7} {f_cpu:>12.0f}")
    print("keepalived's own figure: 3 x advert_int + skew = about 3.6 s; goal < 4 s")
    return 0
