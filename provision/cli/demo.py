"""`dsas demo`: a master PXE-boots virtual machines into their hosts, live on screen.

The lab runs on this machine only: a network namespace with a bridge holds the
master (`dsas serve`), and QEMU guests (TCG) with two NICs each power on and
boot from it. Addresses come from 198.18.0.0/15 and never leave the namespace.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

import click

from ..inventory.model import Inventory
from ..lab.cluster import LabCluster, NodeStatus
from ..render import RenderError
from .common import fail, load_inventory, table
from .inventory import host_rows, render_all, summary

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "etc" / "dsas" / "lab.yaml"
DEFAULT_GUESTS = "w101:bios,w102:bios,w103:uefi"
FINAL = ("ready", "failed")


def _guests(value: str, inv: Inventory) -> list[tuple[str, str]]:
    out = []
    for item in value.split(","):
        name, _, fw = item.strip().partition(":")
        fw = fw or "bios"
        if name not in inv.hosts:
            raise click.BadParameter(f"{name!r} is not a host of the inventory")
        if fw not in ("bios", "uefi"):
            raise click.BadParameter(f"{item!r}: firmware must be bios or uefi")
        out.append((name, fw))
    return out


@click.command()
@click.option("--inventory", "-i", "inventory_path", type=click.Path(dir_okay=False),
              default=str(LAB), show_default=True, help="The lab inventory.")
@click.option("--guests", default=DEFAULT_GUESTS, show_default=True, metavar="HOST:FW,...",
              help="Which hosts to power on, and their firmware (bios or uefi).")
@click.option("--workdir", type=click.Path(file_okay=False), default="/var/tmp/dsas-demo",
              show_default=True, help="Boot tree, state, logs and consoles of the run.")
@click.option("--timeout", type=click.IntRange(30, 1800), default=300, show_default=True,
              help="Seconds to wait for every guest to be ready.")
@click.option("--stay", is_flag=True,
              help="Keep the lab running after the summary, until Ctrl-C.")
@click.option("--offline", is_flag=True,
              help="No VMs: validate the example cluster and render its files into --workdir.")
def demo(inventory_path: str, guests: str, workdir: str, timeout: int, stay: bool,
         offline: bool) -> None:
    """PXE-boot virtual machines from a dsas master, with a live table.

    \b
    Builds what is missing (the netboot initramfs and the tiny image, from
    Debian's packages, cached), starts `dsas serve` in a lab namespace, powers
    on the guests and shows each one's stage as the master records it, until
    all are ready; then a summary with the seconds from power-on to ready.
    Ctrl-C stops everything and cleans up. Needs root, qemu-system-x86 and
    ovmf (`make deps` installs them).
    """
    if offline:
        _offline(Path(workdir))
        return
    from ..lab.netns import LabError

    if os.geteuid() != 0:
        fail("the demo needs root (network namespaces, taps); try: sudo make demo", 2)
    inv = load_inventory(inventory_path)
    chosen = _guests(guests, inv)
    try:
        code = _run(inv, Path(inventory_path).resolve(), chosen, Path(workdir), timeout, stay)
    except LabError as e:
        fail(str(e), e.exit_code)
    sys.exit(code)


def _offline(out: Path) -> None:
    inv = load_inventory(str(ROOT / "etc" / "dsas" / "cluster.yaml"))
    click.echo(summary(inv))
    click.echo()
    click.echo(table(["HOST", "ROLE", "MACS", "ADDRESSES", "HWTYPE", "BOOT", "IMAGE"],
                     host_rows(inv)))
    try:
        n = render_all(inv, out / "rendered")
    except RenderError as e:
        fail(str(e), e.exit_code)
    click.echo(f"\nrendered {n} files into {out / 'rendered'}/")


def _prepare(boot: Path) -> None:
    from ..imaging.build import Builder, default_recipes_dir
    from ..imaging.store import ImageStore
    from ..policy.boottree import populate_loaders

    click.echo("preparing the boot tree (loaders from Debian's ipxe/pxelinux packages)")
    populate_loaders(boot)
    builder = Builder(default_recipes_dir(), ImageStore(boot / "images"),
                      Path("/var/cache/dsas/debs"), lambda line: click.echo(f"  {line}"))
    res = builder.build("tiny")
    click.echo(f"image tiny {res.version} {'(cached)' if res.cached else 'built'}")


def _run(inv: Inventory, inv_path: Path, chosen: list[tuple[str, str]], work: Path,
         timeout: int, stay: bool) -> int:
    from ..lab.netns import Lab

    for sub in ("state", "guests"):
        shutil.rmtree(work / sub, ignore_errors=True)
    boot = work / "boot"
    _prepare(boot)
    stop = {"now": False}

    def on_int(signum: int, frame: FrameType | None) -> None:
        stop["now"] = True

    old = signal.signal(signal.SIGINT, on_int)
    old_term = signal.signal(signal.SIGTERM, on_int)
    live = sys.stdout.isatty()
    try:
        with Lab() as lab:
            c = LabCluster(lab, inv, inv_path, work, boot, ["-v"])
            c.setup_network()
            click.echo(f"master: namespace {c.master.name}, {inv.cluster.master_address} on "
                       f"br0; starting dsas serve (log: {work / 'serve.log'})")
            c.start_serve()
            for name, fw in chosen:
                c.add_guest(name, list(inv.hosts[name].macs), fw).start()
            click.echo(f"powered on {len(chosen)} guest(s); consoles in {work / 'guests'}\n")
            done_at: dict[str, float] = {}
            last: dict[str, str] = {}
            deadline = time.monotonic() + timeout
            while not stop["now"]:
                nodes = c.nodes()
                for name, _ in chosen:
                    st = nodes.get(name)
                    if st and st.stage in FINAL and name not in done_at:
                        done_at[name] = c.guests[name].elapsed()
                rows = _rows(inv, chosen, nodes, c, done_at)
                if live:
                    click.echo("\x1b[H\x1b[2J" + _screen(inv, rows), nl=False)
                else:
                    for r in rows:
                        if last.get(r[0]) != r[3]:
                            last[r[0]] = r[3]
                            click.echo(f"{r[5]:>6}s  {r[0]}: {r[3]}  {r[4]}")
                if len(done_at) == len(chosen) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            final = c.nodes()
            ok = all(final.get(n, NodeStatus(n, None, None, None, None)).stage == "ready"
                     for n, _ in chosen)
            click.echo("\nsummary:")
            click.echo(table(["HOST", "FIRMWARE", "MAC", "RESULT", "ADDRESSES", "SECONDS"],
                             [[n, fw, inv.hosts[n].macs[0],
                               (final[n].stage if n in final and final[n].stage else
                                "interrupted" if stop["now"] else "timed out"),
                               (final[n].reason or "") if n in final else "",
                               f"{done_at[n]:.1f}" if n in done_at else "-"]
                              for n, fw in chosen]))
            if stay and not stop["now"]:
                click.echo(f"\nthe lab stays up: ip netns exec {c.master.name} ping "
                           f"{inv.hosts[chosen[0][0]].primary_interface.address}; "
                           "Ctrl-C to stop and clean up")
                while not stop["now"]:
                    time.sleep(0.5)
            click.echo("stopping the guests and the master, removing the namespace")
            c.stop()
            return 0 if ok else 1
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)


def _rows(inv: Inventory, chosen: list[tuple[str, str]], nodes: dict[str, NodeStatus],
          c: LabCluster, done_at: dict[str, float]) -> list[list[str]]:
    rows = []
    for name, fw in chosen:
        st = nodes.get(name)
        guest = c.guests[name]
        stage = st.stage if st and st.stage else "power-on / PXE"
        secs = done_at.get(name, guest.elapsed())
        rows.append([name, fw, inv.hosts[name].macs[0], stage,
                     (st.reason or "") if st and st.stage else "", f"{secs:.1f}"])
    return rows


def _screen(inv: Inventory, rows: list[list[str]]) -> str:
    head = (f"dsas demo: cluster {inv.cluster.name}, master {inv.cluster.master_address} "
            f"(Ctrl-C stops and cleans up)\n\n")
    return head + table(["HOST", "FIRMWARE", "MAC", "STAGE", "DETAIL", "SECONDS"], rows) + "\n"
