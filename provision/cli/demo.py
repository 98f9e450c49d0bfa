"""`dsas demo`: a master PXE-boots virtual machines into their hosts, live on screen.

The lab runs on this machine only: a network namespace with a bridge holds the
master (`dsas serve`), and QEMU guests (TCG) with two NICs each power on and
boot from it. Addresses come from 198.18.0.0/15 and never leave the namespace.

The lab itself (``lab/`` beside ``provision/``) is not in the dsas wheel: the demo
runs from a source checkout (`make demo`) and says so if it is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from ..inventory.model import Inventory
from ..render import RenderError
from .common import fail, load_inventory, table
from .inventory import host_rows, render_all, summary

if TYPE_CHECKING:
    from lab.cluster import LabCluster, StageEvent

ROOT = Path(__file__).resolve().parents[2]  # the source checkout (editable install)
NO_LAB = ("dsas demo needs a source checkout: the lab package (lab/ beside provision/) "
          "is not installed with dsas; run `make demo` in a clone of the repository")
LAB = ROOT / "etc" / "dsas" / "lab.yaml"
DEFAULT_GUESTS = "w101:bios,w102:bios,w103:uefi"
FINAL = ("ready", "failed")


NICS = {"virtio": "virtio-net-pci", "e1000": "e1000"}  # --guests name -> QEMU device


@dataclass(frozen=True)
class Choice:
    """One guest of --guests: its host, firmware and NIC model."""

    host: str
    firmware: str = "bios"
    nic: str = "virtio"


def _guests(value: str, inv: Inventory) -> list[Choice]:
    out = []
    for item in value.split(","):
        parts = item.strip().split(":")
        if len(parts) > 3:
            raise click.BadParameter(f"{item!r}: HOST[:FIRMWARE[:NIC]]")
        name, fw, nic = (parts + ["", ""])[:3]
        fw, nic = fw or "bios", nic or "virtio"
        if name not in inv.hosts:
            raise click.BadParameter(f"{name!r} is not a host of the inventory")
        if fw not in ("bios", "uefi"):
            raise click.BadParameter(f"{item!r}: firmware must be bios or uefi")
        if nic not in NICS:
            raise click.BadParameter(f"{item!r}: NIC model must be one of {', '.join(NICS)}")
        out.append(Choice(name, fw, nic))
    return out


@click.command()
@click.option("--inventory", "-i", "inventory_path", type=click.Path(dir_okay=False),
              default=str(LAB), show_default=True, help="The lab inventory.")
@click.option("--guests", default=DEFAULT_GUESTS, show_default=True,
              metavar="HOST[:FW[:NIC]],...",
              help="Which hosts to power on, their firmware (bios or uefi) and NIC model "
                   "(virtio or e1000; default virtio).")
@click.option("--workdir", type=click.Path(file_okay=False), default="/var/tmp/dsas-demo",
              show_default=True, help="Boot tree, state, logs and consoles of the run.")
@click.option("--timeout", type=click.IntRange(30, 1800), default=300, show_default=True,
              help="Seconds to wait for every guest to be ready.")
@click.option("--stay", is_flag=True,
              help="Keep the lab running after the summary, until Ctrl-C.")
@click.option("--offline", is_flag=True,
              help="No VMs: validate the example cluster and render its files into --workdir.")
@click.option("--no-prepare", is_flag=True, hidden=True,
              help="Build nothing: use the boot tree in --workdir as it is (for tests).")
def demo(inventory_path: str, guests: str, workdir: str, timeout: int, stay: bool,
         offline: bool, no_prepare: bool) -> None:
    """PXE-boot virtual machines from a dsas master, with a live table.

    \b
    Builds what is missing (the netboot initramfs and the tiny image, from
    Debian's packages, cached), starts `dsas serve` in a lab namespace, powers
    on the guests and shows each one's stage as the master records it, until
    all are ready; then a summary with the seconds from power-on to ready.
    Ctrl-C, SIGTERM or SIGHUP (a closed terminal, a dropped ssh session) stop
    everything and clean up; every process of the lab dies with the demo even if
    it is killed, and the next run removes what such a run left behind (recorded
    in WORKDIR/lab.json). Needs root, qemu-system-x86 and ovmf (`make deps`
    installs them).
    """
    if offline:
        _offline(Path(workdir))
        return
    use_source_lab()
    from lab.netns import LabError

    if os.geteuid() != 0:
        fail("the demo needs root (network namespaces, taps); try: sudo make demo", 2)
    inv = load_inventory(inventory_path)
    chosen = _guests(guests, inv)
    try:
        code = _run(inv, Path(inventory_path).resolve(), chosen, Path(workdir), timeout, stay,
                    not no_prepare)
    except LabError as e:
        fail(str(e), e.exit_code)
    sys.exit(code)


def use_source_lab(root: Path | None = None) -> None:
    """Make the source tree's ``lab`` package importable (the editable install's
    ``sys.path`` has ``provision`` but not the repository root), or fail with one
    line if there is none: dsas was installed from a wheel."""
    root = root or ROOT
    if not (root / "lab" / "__init__.py").is_file():
        fail(NO_LAB, 2)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


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


class _Stop(Exception):
    """A stop signal arrived while the demo was not in its polling loop."""


def _run(inv: Inventory, inv_path: Path, chosen: list[Choice], work: Path,
         timeout: int, stay: bool, prepare: bool = True) -> int:
    from lab.cluster import LabCluster
    from lab.netns import Lab

    # Until the guests are on, a stop signal unwinds the set-up (_Stop); from then on
    # it only ends the polling, and the normal path stops and removes everything.
    stop = {"now": False, "setup": True}
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    old = {sig: signal.signal(sig, _on_signal(stop)) for sig in sigs}
    live = sys.stdout.isatty()
    try:
        record = _clear_workdir(work)
        boot = work / "boot"
        if prepare:
            _prepare(boot)
        with Lab(die_with_parent=True, record=record) as lab:
            c = LabCluster(lab, inv, inv_path, work, boot, ["-v"])
            c.setup_network()
            click.echo(f"master: namespace {c.master.name}, {inv.cluster.master_address} on "
                       f"br0; starting dsas serve (log: {work / 'serve.log'})")
            c.start_serve()
            powered = _power_on(c, inv, chosen, work)
            stop["setup"] = False
            history = _watch(c, inv, chosen, powered, timeout, stop, live)
            return _finish(c, inv, chosen, history, powered, stop, stay)
    except _Stop as e:
        click.echo(f"stopped by {e}; the lab is cleaned up", err=True)
        return 130
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _on_signal(stop: dict[str, bool]) -> Callable[[int, FrameType | None], None]:
    """The demo's handler of SIGINT, SIGTERM and SIGHUP (see ``_run``)."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:  # the terminal is gone: writing to it would fail
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
        stop["now"] = True
        if stop["setup"]:
            stop["setup"] = False  # once: the unwinding itself is not interrupted
            raise _Stop(signal.Signals(signum).name)

    return on_signal


def _clear_workdir(work: Path) -> Path:
    """Remove what an earlier run left behind; the record of this run's lab."""
    from lab.netns import remove_leftovers

    record = work / "lab.json"
    done = remove_leftovers(record)
    if done:
        click.echo(done)
    for sub in ("state", "guests"):
        shutil.rmtree(work / sub, ignore_errors=True)
    return record


def _power_on(c: LabCluster, inv: Inventory, chosen: list[Choice],
              work: Path) -> dict[str, float]:
    """Start the chosen guests; host -> wall-clock power-on time."""
    powered: dict[str, float] = {}
    for ch in chosen:
        c.add_guest(ch.host, list(inv.hosts[ch.host].macs), ch.firmware,
                    nic_model=NICS[ch.nic]).start()
        powered[ch.host] = time.time()
    click.echo(f"powered on {len(chosen)} guest(s); consoles in {work / 'guests'}\n")
    return powered


def _finish(c: LabCluster, inv: Inventory, chosen: list[Choice],
            history: dict[str, list[StageEvent]], powered: dict[str, float],
            stop: dict[str, bool], stay: bool) -> int:
    """The summary, the lab kept up with --stay, then everything stopped; the exit code."""
    click.echo("\nsummary:")
    click.echo(table(["HOST", "FIRMWARE", "NIC", "MAC", "RESULT", "DETAIL", "SECONDS"],
                     _summary_rows(inv, chosen, history, powered, stop["now"])))
    ok = all(history.get(ch.host) and history[ch.host][-1].stage == "ready"
             for ch in chosen)
    if stay and not stop["now"]:
        click.echo(f"\nthe lab stays up: ip netns exec {c.master.name} ping "
                   f"{inv.hosts[chosen[0].host].primary_interface.address}; "
                   "Ctrl-C to stop and clean up")
        while not stop["now"]:
            time.sleep(0.5)
    click.echo("stopping the guests and the master, removing the namespace")
    c.stop()
    return 0 if ok else 1


def _watch(c: LabCluster, inv: Inventory, chosen: list[Choice], powered: dict[str, float],
           timeout: int, stop: dict[str, bool], live: bool) -> dict[str, list[StageEvent]]:
    """Show every stage of every guest as the master records it, until all are done."""
    shown: dict[str, int] = {}
    history: dict[str, list[StageEvent]] = {}
    deadline = time.monotonic() + timeout
    while not stop["now"]:
        history = c.stage_history(since=min(powered.values()) - 1)
        if live:
            click.echo("\x1b[H\x1b[2J" + _screen(inv, _rows(inv, chosen, history, powered)),
                       nl=False)
        else:
            for ch in chosen:
                events = history.get(ch.host, [])
                for ev in events[shown.get(ch.host, 0):]:
                    click.echo(f"{ev.ts - powered[ch.host]:7.2f}s  {ch.host}: {ev.stage}"
                               + (f"  {ev.detail}" if ev.detail else ""))
                shown[ch.host] = len(events)
        finished = [ch for ch in chosen
                    if history.get(ch.host) and history[ch.host][-1].stage in FINAL]
        if len(finished) == len(chosen) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return history


def _stages(events: list[StageEvent], t0: float) -> str:
    """Every stage with its time since power-on: dhcp 2.31s, kernel 5.02s, ..."""
    return ", ".join(f"{ev.stage} {ev.ts - t0:.2f}s" for ev in events) or "power-on / PXE"


def _rows(inv: Inventory, chosen: list[Choice], history: dict[str, list[StageEvent]],
          powered: dict[str, float]) -> list[list[str]]:
    rows = []
    now = time.time()
    for ch in chosen:
        events = history.get(ch.host, [])
        t0 = powered[ch.host]
        last = events[-1] if events else None
        secs = (last.ts if last and last.stage in FINAL else now) - t0
        rows.append([ch.host, ch.firmware, ch.nic, inv.hosts[ch.host].macs[0],
                     _stages(events, t0), (last.detail or "") if last else "", f"{secs:.1f}"])
    return rows


def _summary_rows(inv: Inventory, chosen: list[Choice], history: dict[str, list[StageEvent]],
                  powered: dict[str, float], interrupted: bool) -> list[list[str]]:
    rows = []
    for ch in chosen:
        events = history.get(ch.host, [])
        last = events[-1] if events else None
        done = last is not None and last.stage in FINAL
        result = last.stage if done and last else "interrupted" if interrupted else "timed out"
        rows.append([ch.host, ch.firmware, ch.nic, inv.hosts[ch.host].macs[0], result,
                     (last.detail or "") if last else "",
                     f"{last.ts - powered[ch.host]:.2f}" if done and last else "-"])
    return rows


def _screen(inv: Inventory, rows: list[list[str]]) -> str:
    head = (f"dsas demo: cluster {inv.cluster.name}, master {inv.cluster.master_address} "
            f"(Ctrl-C stops and cleans up)\n\n")
    return head + table(["HOST", "FIRMWARE", "NIC", "MAC", "STAGES (seconds since power-on)",
                         "DETAIL", "SECONDS"], rows) + "\n"
