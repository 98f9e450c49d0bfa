"""Netboot: seconds from power-on to ready, dsas against dnsmasq (DHCP+TFTP), same payload.

Each run is a fresh lab (master namespace, bridge, QEMU guests under TCG with two
NICs) booting the lab inventory's hosts with the same kernel, initramfs, image and
dsas.conf:

* dsas:    `dsas serve` (DHCP, TFTP, HTTP, DNS, RA). The iPXE ROM gets the HTTP URL
           of its script and loads kernel and initramfs over HTTP.
* dnsmasq: dnsmasq 2.90 as DHCP (reservations for the same MACs) and TFTP (the
           iPXE script, kernel and initramfs, as the usual dnsmasq+scripts setups
           do); `dsas serve --only http` serves only what the initramfs fetches
           after the kernel runs (dsas.conf, the image, the event API), the same
           for both.

Reported per server and guest count: each guest's power-on-to-ready seconds and
their mean; the ratio is dnsmasq / dsas (above 1: dsas boots faster). Each run also
records the CPU other processes used during it (``bench.common.cpu_span`` over the whole
lab: every process of it is our child, reaped before the span ends), printed beside it;
a guest count where either server's run had others above ``FOREIGN_LIMIT`` of a core is
marked loaded and gets no ratio ("-").
Run: `python -m bench netboot [--guests 1,3]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from lab.cluster import LabCluster
from lab.netns import Lab, tool
from provision.imaging.build import Builder, default_recipes_dir
from provision.imaging.store import ImageStore
from provision.inventory import load
from provision.policy.boottree import populate_loaders
from provision.render.engine import kernel_cmdline

from .common import FOREIGN_LIMIT, cpu_span, loaded_mark

ROOT = Path(__file__).resolve().parent.parent
INVENTORY = ROOT / "etc" / "dsas" / "lab.yaml"
HOSTS = ["w101", "w102", "w103"]
TIMEOUT = 240


def dnsmasq_tree(inv_path: Path, boot: Path, tftp: Path) -> list[str]:
    """TFTP root and dnsmasq arguments booting the same payload for the lab hosts."""
    inv = load(inv_path)
    tftp.mkdir(parents=True, exist_ok=True)
    img = (boot / "images" / "tiny" / "current").resolve()
    shutil.copyfile(img / "vmlinuz", tftp / "vmlinuz")
    shutil.copyfile(img / "initrd.img", tftp / "initrd.img")
    net = inv.networks["inside"]
    args = [tool("dnsmasq"), "--no-daemon", "--port=0", "--interface=br0", "--bind-interfaces",
            "--no-resolv", f"--dhcp-range={net.cidr.network_address},static,"
            f"{net.netmask}", "--dhcp-userclass=set:ipxe,iPXE", "--enable-tftp",
            f"--tftp-root={tftp}", "--log-facility=-", "--dhcp-leasefile=/dev/null"]
    for name in HOSTS:
        h = inv.hosts[name]
        script = (f"#!ipxe\nkernel tftp://{inv.cluster.master_address}/vmlinuz "
                  f"initrd=initrd.img {kernel_cmdline(inv, h)}\n"
                  f"initrd tftp://{inv.cluster.master_address}/initrd.img\nboot\n")
        (tftp / f"{name}.ipxe").write_text(script)
        args += [f"--dhcp-host={h.macs[0]},{h.primary_interface.address},{name},set:{name}",
                 f"--dhcp-boot=tag:ipxe,tag:{name},{name}.ipxe"]
    return args + ["--dhcp-boot=tag:!ipxe,undionly.kpxe"]


def boot_once(server: str, n: int, boot: Path, work: Path) -> tuple[list[float], float]:
    """Each guest's power-on-to-ready seconds, and the other CPU (%) during the run."""
    with cpu_span() as span:  # the lab's processes are our children, all reaped in it
        secs = _boot(server, n, boot, work)
    return secs, span.other


def _boot(server: str, n: int, boot: Path, work: Path) -> list[float]:
    inv = load(INVENTORY)
    hosts = HOSTS[:n]
    with Lab() as lab:
        serve_args = ["--only", "http"] if server == "dnsmasq" else []
        c = LabCluster(lab, inv, INVENTORY, work, boot, serve_args)
        c.setup_network()
        c.start_serve()
        if server == "dnsmasq":
            args = dnsmasq_tree(INVENTORY, boot, work / "tftp")
            log = (work / "dnsmasq.log").open("wb")
            c.master.popen(args, stdout=log, stderr=subprocess.STDOUT)
            log.close()
            c.master.wait_port(67, "udp")
        for h in hosts:
            c.add_guest(h, list(inv.hosts[h].macs), "bios")
        for g in c.guests.values():
            g.start()
        done: dict[str, float] = {}
        deadline = time.monotonic() + TIMEOUT
        while len(done) < n and time.monotonic() < deadline:
            for name, st in c.nodes().items():
                if name in hosts and st.stage in ("ready", "failed") and name not in done:
                    done[name] = c.guests[name].elapsed() if st.stage == "ready" else float("nan")
            time.sleep(0.5)
        c.stop()
    return [done.get(h, float("nan")) for h in hosts]


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench netboot")
    ap.add_argument("--guests", default="1,3", help="guest counts to boot at once")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.guests.split(",")]
    with tempfile.TemporaryDirectory(prefix="dsas-bench-netboot-") as tmp:
        base = Path(tmp)
        boot = base / "boot"
        populate_loaders(boot)
        Builder(default_recipes_dir(), ImageStore(boot / "images"),
                Path("/var/cache/dsas/debs")).build("tiny")
        rows = []
        for n in counts:
            result, other = {}, {}
            for server in ("dsas", "dnsmasq"):
                work = base / f"{server}-{n}"
                result[server], other[server] = boot_once(server, n, boot, work)
                print(f"  {server:8} {n} guest(s): "
                      + ", ".join(f"{s:.1f}" for s in result[server]) + " s; other CPU "
                      f"{other[server]:.1f}%{loaded_mark(other[server])}", flush=True)
            d, m = statistics.fmean(result["dsas"]), statistics.fmean(result["dnsmasq"])
            worst = max(other.values())
            ratio = f"{m / d:.2f}" if d and worst <= FOREIGN_LIMIT else "-"
            rows.append((n, d, m, ratio, worst))
    print("\nnetboot: power-on to ready, mean per guest (TCG, BIOS + iPXE ROM)")
    print(f"{'guests':>6}  {'dsas s':>8}  {'dnsmasq s':>9}  {'dnsmasq/dsas':>12}  "
          f"{'other CPU':>9}")
    for n, d, m, r, worst in rows:
        print(f"{n:>6}  {d:>8.1f}  {m:>9.1f}  {r:>12}  {worst:>8.1f}%{loaded_mark(worst)}")
    print(f"other CPU: the higher of the two runs', % of one core; over {FOREIGN_LIMIT:g}% "
          "no ratio")
    return 0
