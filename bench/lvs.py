"""LVS: VRRP failover and the cost of IPVS, side by side in one run (QEMU, TCG).

The lab of tests/vm/test_lvs_vm.py (lab/lvs.py): two directors (keepalived + IPVS, NAT) and
two web servers (tiny image, busybox httpd) netbooted from `dsas serve`, a
client namespace on the outside VLAN. The directors boot the tiny-lvs image
(--director-image; `python -m bench lvsboot` measured it several times faster
to ready than the web image under TCG); this bench needs no SSH. The client also gets a
leg on the inside bridge, so one process can reach a real server directly.

* IPVS cost: requests per second (fresh TCP connection each, 4 at a time, for
  SECONDS s) from the client through the VIP, against the same client straight
  to w1, and straight to w1 and w2 in turn (the VIP spreads over both, so that
  is the fair peer); ratios VIP / direct (1.0: IPVS costs nothing).
* VRRP failover: a request starts every 0.1 s (each in its own thread, 0.8 s
  timeout, so lost = 0.1 s slots without an answer) while the active
  director's QEMU quits; time from the last answer before to the first after,
  and requests lost. keepalived's own figure is 3 x advert_int + skew, about
  3.6 s at advert_int 1 and a backup priority of 100; the skew is
  (256 - priority) / 256 x advert_int, so the bench runs the pair at 254/253
  (--priority) where it is 0.01 s. Then the inventory's advert_int becomes
  sub-second (--advert, default 0.3: rendered as VRRPv3, centisecond adverts), both
  directors boot again with it, and the same failover is measured again.

Each figure comes with the CPU the machine's other processes used meanwhile
(busy share of all CPUs from /proc/stat minus what this run's QEMUs, the
processes its lab started and its rps client used): on
a shared machine TCG guests get what is left. Run: `python -m bench lvs`.

Measured 2026-12-02, `nice -n 5 python -m bench lvs` (directors tiny-lvs,
priorities 254/253), load average 22.9 on 2 CPUs, 74-89% of the CPU used by
other processes: failover 2.90 s, 28 x 0.1 s slots lost at advert_int 1 (goal
< 4 s); 1.20 s, 11 lost at advert_int 0.3 (VRRPv3); rps VIP / direct to w1
0.85, to both 0.81 (22.3 vs 26.3 and 27.4 rps: TCG guests, so the ratio is
the figure, not the rates). The run before, with a client that sent one
request at a time (a 0.8 s timeout hid part of the gap): 4.21 s and 1.88 s
at load 30.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from lab.clone import TEST_BOOT_ROOT, build_images
from lab.cluster import LabCluster
from lab.lvs import (
    INVENTORY,
    VIP,
    WEB,
    boot,
    edit_inventory,
    fail_over,
    outside_client,
    reboot_as,
    wait_ready_since,
    wait_until,
)
from lab.netns import Lab, Netns
from lab.qemu import Guest
from provision.inventory import load

from .common import FOREIGN_LIMIT

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
        self.pids = list(pids)
        self.t0 = self._total()
        self.p0 = self._procs()  # a PID that dies meanwhile counts as 0 (others: upper bound)

    def add(self, pid: int) -> None:
        """A process of this run started after the window opened (a guest booted again):
        all its CPU is the run's, not other processes'."""
        self.pids.append(pid)
        self.p0[pid] = 0

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

    def others(self, also: float = 0.0) -> float:
        """CPU other processes used since start, in % of one core (as every bench);
        ``also``: CPU seconds this run's own processes outside ``pids`` used (the client)."""
        busy1, total1 = self._total()
        now = self._procs()
        ours = sum(now[p] - self.p0[p] for p in now if p in self.p0)
        ours += round(also * os.sysconf("SC_CLK_TCK"))
        busy = busy1 - self.t0[0]
        one_core = max(1, total1 - self.t0[1]) / (os.cpu_count() or 1)
        return 100.0 * max(0, busy - ours) / one_core


def _wait(ok, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        time.sleep(1)


def run_pids(lab: Lab, guests: dict[str, Guest]) -> list[int]:
    """This run's processes: the guests' QEMUs and what the lab started (the serve, the
    userspace VLAN relay that reads every frame on the trunk, client loops): their CPU is
    the run's, not "other"."""
    return [g.proc.pid for g in guests.values() if g.proc and g.running()] + [
        p.pid for p in lab.procs if p.poll() is None]


def rps(client: Netns, host: str, seconds: float) -> tuple[float, int, float]:
    """(requests/s, failed, the client's CPU seconds: the run's own, not "other")."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = client.run([sys.executable, "-c", RPS, host, str(seconds), "4"],
                     timeout=seconds + 60).stdout.split()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return float(out[0]), int(out[1]), used


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lvs")
    ap.add_argument("--seconds", type=float, default=10, help="length of each rps run")
    ap.add_argument("--priority", type=int, nargs=2, default=(254, 253),
                    metavar=("ACTIVE", "BACKUP"),
                    help="VRRP priorities; the backup's sets keepalived's skew, "
                         "(256 - BACKUP) / 256 x advert_int (0.61 s at keepalived's usual 100)")
    ap.add_argument("--director-image", default="tiny-lvs", choices=("tiny-lvs", "web"))
    ap.add_argument("--advert", type=float, default=0.3,
                    help="the sub-second advert_int of the second failover (VRRPv3)")
    args = ap.parse_args(argv)
    build_images("tiny", args.director_image)
    mem = 1536 if args.director_image == "web" else 384
    with tempfile.TemporaryDirectory(prefix="dsas-bench-lvs-") as tmp, Lab() as lab:
        work = Path(tmp)
        inv_path = work / "cluster.yaml"
        pa, pb = args.priority
        text = INVENTORY.replace(
            "    advert_int: 1\n",
            f"    advert_int: 1\n    priority: {{active: {pa}, backup: {pb}}}\n")
        if args.director_image != "web":
            text = text.replace("  web: {version: current}\n", "  web: {version: current}\n"
                                f"  {args.director_image}: {{version: current}}\n")
            text = text.replace("    services: [lvs]\n    networks: [inside, outside]\n"
                                "    image: web\n", "    services: [lvs]\n    networks: "
                                f"[inside, outside]\n    image: {args.director_image}\n")
        inv_path.write_text(text)
        c = LabCluster(lab, load(inv_path), inv_path, work, TEST_BOOT_ROOT)
        assert c.inventory.hosts["lvs1"].image == args.director_image
        try:
            client = outside_client(c)
            m = c.master
            lab.plug(m, "br0", client, "198.18.3.50/22")  # the direct leg, inside
            c.start_serve()
            t0 = time.monotonic()
            guests = {n: boot(c, n, mem if n.startswith("lvs") else 256)
                      for n in ("lvs1", "lvs2", *WEB)}
            c.wait_stages(list(guests), ("ready", "failed"), 2400)
            print(f"  4 guests ready in {time.monotonic() - t0:.0f} s", flush=True)
            for n in WEB:
                from lab.qemu import wait_shell

                sh = wait_shell(guests[n])
                st, out = sh.run(f"mkdir -p /www && echo {n} > /www/index.html && "
                                 "busybox httpd -p 80 -h /www")
                assert st == 0, out
            _wait(lambda: client.run(["curl", "-sf", "-m", "2", f"http://{VIP}/"],
                                     check=False).returncode == 0, 180, "an answer via the VIP")
            pids = run_pids(lab, guests)
            w1 = str(c.inventory.hosts["w1"].primary_interface.address)
            cpu = Cpu(pids)
            direct, dfail, used = rps(client, w1, args.seconds)
            d_cpu = cpu.others(used)
            cpu = Cpu(pids)
            via, vfail, used = rps(client, VIP, args.seconds)
            v_cpu = cpu.others(used)
            w2 = str(c.inventory.hosts["w2"].primary_interface.address)
            cpu = Cpu(pids)
            both, bfail, used = rps(client, f"{w1},{w2}", args.seconds)
            b_cpu = cpu.others(used)

            # failover at advert_int 1, then at the sub-second advert_int
            failovers = []
            for advert in (1.0, args.advert):
                if advert != 1.0:
                    edit_inventory(c, work / "state", lambda t, a=advert: t.replace(
                        "    advert_int: 1\n", f"    advert_int: {a:g}\n"))
                    assert c.inventory.lvs_pairs["lb"].vrrp_version == 3
                    guests["lvs2"].stop()
                    t_wall = time.time()
                    for d in ("lvs1", "lvs2"):
                        guests[d] = reboot_as(c, d, guests[d], mem)
                    for d in ("lvs1", "lvs2"):
                        wait_ready_since(c, d, t_wall, 2400)
                    lvs1_mac = c.inventory.hosts["lvs1"].macs[0]

                    def lvs1_holds(mac: str = lvs1_mac) -> bool:
                        client.run(["curl", "-s", "-m", "2", f"http://{VIP}/"], check=False)
                        return mac in client.run(["ip", "neigh", "show", VIP]).stdout

                    wait_until(lvs1_holds, 180, "the VIP on lvs1 again", 2)
                    time.sleep(10)  # both directors settled, the pool checked
                pids = run_pids(lab, guests)
                cpu = Cpu(pids)
                gap, lost = fail_over(c, client, guests, "lvs1", "lvs2")
                failovers.append((advert, gap, lost, cpu.others()))
                print(f"  failover at advert_int {advert:g}: {gap:.2f} s, {lost} lost",
                      flush=True)
        finally:
            c.stop()
    print(f"\nlvs (TCG guests, {os.cpu_count()} CPUs shared, load {os.getloadavg()[0]:.1f}; "
          f"directors from the {args.director_image} image)")
    print(f"{'measure':<34} {'value':>10} {'failed':>7} {'other CPU, % of a core':>23}")
    print(f"{'rps direct to w1':<34} {direct:>10.1f} {dfail:>7} {d_cpu:>23.0f}")
    print(f"{'rps through the VIP (IPVS NAT)':<34} {via:>10.1f} {vfail:>7} {v_cpu:>23.0f}")
    print(f"{'rps direct to w1 and w2 in turn':<34} {both:>10.1f} {bfail:>7} {b_cpu:>23.0f}")
    for what, a, b, loads in (("ratio VIP / direct to w1", via, direct, (v_cpu, d_cpu)),
                              ("ratio VIP / direct to both", via, both, (v_cpu, b_cpu))):
        quiet = b and max(loads) <= FOREIGN_LIMIT  # a loaded step is no ratio
        print(f"{what:<34} {f'{a / b:.2f}' if quiet else '-':>10}"
              f"{'' if quiet else '  (loaded: not a result)'}")
    for advert, gap, lost, f_cpu in failovers:
        what = f"VRRP failover s (advert_int {advert:g})"
        print(f"{what:<34} {gap:>10.2f} {lost:>7} {f_cpu:>23.0f}")
    skew = (256 - args.priority[1]) / 256
    print(f"priorities {args.priority[0]}/{args.priority[1]}: keepalived's own figure 3 x "
          f"advert_int + skew ({skew:.3f} x advert_int) = {3 + skew:.2f} s at advert_int 1, "
          f"{(3 + skew) * args.advert:.2f} s at {args.advert:g}; goal < 4 s at advert_int 1")
    return 0
