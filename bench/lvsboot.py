"""Which image should a director boot? Power-on to ready, side by side (QEMU, TCG).

Two directors of one LVS pair netboot from `dsas serve` at the same moment:
lvs1 from the `web` image (Debian bookworm, systemd, keepalived and ipvsadm
from Debian's packages, booted stateless: the whole root file system comes over
HTTP into RAM), lvs2 from `tiny-lvs` (the tiny busybox image with Debian's
keepalived, ipvsadm, sshd and the libraries they link copied in). Each reports ready
to the master once dsas-init has applied dsas.conf, loaded IPVS, fetched and
config-tested its keepalived.conf and started keepalived; the figure is the
master's 'ready' time minus the QEMU start, per director and round. Both boot
under the same load (each round's other CPU is printed beside it), and each
must have keepalived running (its console says so) and the pair must hold
its gateway VIP (the master pings it) for the round to count.

Run: `python -m bench lvsboot [--rounds 2]`.

Measured 2026-12-02, `nice -n 5 python -m bench lvsboot --rounds 1`, load
average 20-30 on 2 CPUs, 92% of the CPU used by other processes: web image
1,882.5 s, tiny-lvs 270.3 s to ready (7.0x). Most of the web image's time is
its 241 MB root file system (fetched, checked and unpacked into RAM under
TCG: 19 min of it) and systemd; tiny-lvs was 15.6 MB then, 16.4 MB since
OpenSSH's sshd and ssh-keygen (+0.8 MB; its ed25519 host key takes 0.03 s at
boot) went in: not re-measured since.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from lab.clone import TEST_BOOT_ROOT, build_images
from lab.cluster import LabCluster
from lab.lvs import INVENTORY, boot, wait_ready_since, wait_until
from lab.netns import Lab
from provision.inventory import load

from .common import FOREIGN_LIMIT, loaded_mark
from .lvs import Cpu

IMAGES = {"lvs1": "web", "lvs2": "tiny-lvs"}
MEMORY = {"lvs1": 1536, "lvs2": 384}


def inventory() -> str:
    text = INVENTORY.replace("  web: {version: current}\n",
                             "  web: {version: current}\n  tiny-lvs: {version: current}\n")
    role = text[text.index("  lvs:\n    services: [lvs]"):text.index("  web:\n    services: [web]")]
    text = text.replace(role, role + role.replace("  lvs:\n", "  lvs-tiny:\n", 1)
                        .replace("image: web", "image: tiny-lvs"))
    text = text.replace("  lvs2: {role: lvs,", "  lvs2: {role: lvs-tiny,")
    return text


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench lvsboot")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    build_images("tiny-lvs", "web")
    rows: list[tuple[int, float, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="dsas-bench-lvsboot-") as tmp, Lab() as lab:
        work = Path(tmp)
        inv_path = work / "cluster.yaml"
        inv_path.write_text(inventory())
        inv = load(inv_path)
        assert {h: inv.hosts[h].image for h in IMAGES} == IMAGES
        c = LabCluster(lab, inv, inv_path, work, TEST_BOOT_ROOT)
        try:
            c.setup_network()
            c.start_serve()
            gw = str(inv.lvs_pairs["lb"].gateway_vips["inside"])
            for r in range(1, args.rounds + 1):
                t_wall = time.time()
                guests = {n: boot(c, n, MEMORY[n]) for n in IMAGES}
                pids = [g.proc.pid for g in guests.values() if g.proc]
                cpu = Cpu(pids)
                ready = {n: wait_ready_since(c, n, t_wall, 2400) for n in IMAGES}
                other = cpu.others()
                for n, g in guests.items():
                    con = g.console()
                    assert "keepalived: " in con and "installed (sha256" in con, \
                        f"{n}: keepalived did not start\n{con[-3000:]}"
                wait_until(lambda: c.master.run(["ping", "-c", "1", "-W", "1", gw],
                                                check=False).returncode == 0,
                           60, f"the pair's gateway VIP {gw}", 1)
                rows.append((r, ready["lvs1"], ready["lvs2"], other))
                print(f"  round {r}: web {ready['lvs1']:.1f} s, tiny-lvs {ready['lvs2']:.1f} s, "
                      f"other CPU {other:.0f}%", flush=True)
                for g in guests.values():
                    g.stop()
                c.guests.clear()
        finally:
            c.stop()
    print(f"\ndirector power-on to ready (TCG guests, {os.cpu_count()} CPUs shared, "
          f"load {os.getloadavg()[0]:.1f})")
    print(f"{'round':<6} {'web image s':>12} {'tiny-lvs s':>11} {'ratio':>6} "
          f"{'other CPU, % of a core':>23}")
    for r, web, tiny, other in rows:  # a loaded round is no ratio
        ratio = f"{web / tiny:>6.2f}" if other <= FOREIGN_LIMIT else f"{'-':>6}"
        print(f"{r:<6} {web:>12.1f} {tiny:>11.1f} {ratio} {other:>23.0f}{loaded_mark(other)}")
    return 0
