"""`dsas discovered`: machines that asked for an address and are not in the inventory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ..observability.logsafe import safe
from ..protocol import dhcp_options as o
from ..state import FILENAME, StateStore
from ..state.leases import LeaseJournal
from .common import fail, table

ARCH_NAMES = {o.ARCH_X86_BIOS: "bios", o.ARCH_EFI_IA32: "efi-ia32", o.ARCH_EFI_X64: "efi-x64",
              o.ARCH_EFI_BC: "efi-x64", o.ARCH_EFI_ARM32: "efi-arm32",
              o.ARCH_EFI_ARM64: "efi-arm64"}


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@click.command()
@click.option("--state-dir", type=click.Path(file_okay=False), default="/var/lib/dsas",
              show_default=True, help="The state directory `dsas serve` uses.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def discovered(state_dir: str, as_json: bool) -> None:
    """List unknown machines seen by DHCP with discovery on (oldest first).

    \b
    Columns: MAC, first and last seen, client architecture (RFC 4578), vendor class
    (option 60), PXE UUID (option 97; all zeros on most VMs), the address leased from
    the discovery pool, the interface, and how many times it was recorded.
    """
    if not (Path(state_dir) / FILENAME).exists():
        fail(f"no state in {state_dir} (has `dsas serve` run with --state-dir {state_dir}?)")
    store = StateStore(state_dir)
    try:
        rows = LeaseJournal(store).discovered()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"machines": [_doc(r) for r in rows]}, indent=2))
        return
    if not rows:
        click.echo("no machines discovered")
        return
    click.echo(table(
        ["MAC", "FIRST SEEN", "LAST SEEN", "ARCH", "VENDOR CLASS", "UUID", "ADDRESS",
         "INTERFACE", "SEEN"],
        [_row(r) for r in rows]))


def _doc(r: dict[str, Any]) -> dict[str, object]:
    arch = r["arch"]
    return {"mac": r["mac"], "first_seen": r["first_seen"], "last_seen": r["last_seen"],
            "arch": arch, "arch_name": None if arch is None else ARCH_NAMES.get(arch),
            "vendor_class": r["vendor_class"], "uuid": r["uuid"], "address": r["address"],
            "interface": r["interface"], "seen": r["seen"]}


def _row(r: dict[str, Any]) -> tuple[object, ...]:
    """One table row; what the client sent (vendor class, UUID...) escaped (logsafe): a
    newline or a terminal escape in option 60 must not break or forge a row."""
    arch = r["arch"]
    return (safe(r["mac"]), _when(r["first_seen"]), _when(r["last_seen"]),
            "-" if arch is None else ARCH_NAMES.get(arch, str(arch)),
            safe(r["vendor_class"], 60) or "-", safe(r["uuid"], 40) or "-",
            r["address"] or "-", safe(r["interface"]) or "-", r["seen"])
