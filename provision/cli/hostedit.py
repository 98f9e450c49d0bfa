"""`dsas host add|set|rm` and `dsas enlist`: edit the hosts of the inventory.

Every edit keeps the file's comments, key order and untouched lines, is validated whole
before anything is written, is refused if another edit holds the lock or the file
changed since it was read, is written atomically with the replaced version kept in the
history (`dsas inventory log`), and is picked up by a running `dsas serve` at once.
"""

from __future__ import annotations

import ipaddress
import shlex
import time
from collections.abc import Sequence
from pathlib import Path

import click

from ..inventory.edit import (
    Document,
    add_host,
    parse_addresses,
    parse_assignments,
    remove_host,
    set_host,
)
from ..inventory.model import normalize_mac
from ..observability.logsafe import safe
from ..state import FILENAME, StateStore
from ..state.leases import LeaseJournal
from .common import inventory_option
from .editcommon import NOTHING, apply, fail_problems, finish, start, state_dir_option, validated

address_option = click.option(
    "--address", "-a", "addresses", multiple=True, metavar="NET=IP",
    help="Address on network NET (repeatable). Networks of the role not given get the "
         "lowest free address (not a gateway, VIP, DNS server, the master or another "
         "host's).")


def leased_elsewhere(state_dir: str, own_macs: Sequence[str]) -> set[ipaddress.IPv4Address]:
    """Addresses the serve's DHCP has leased, live, to machines other than ``own_macs``
    (a discovery-pool address in use must not become another host's reservation)."""
    if not (Path(state_dir) / FILENAME).exists():
        return set()
    own = set()
    for m in own_macs:
        try:
            own.add(normalize_mac(m))
        except ValueError:
            continue
    store = StateStore(state_dir)
    try:
        now = time.time()
        return {lease.address for lease in LeaseJournal(store).load()
                if lease.live(now) and lease.mac not in own}
    finally:
        store.close()


def _report(why: dict[str, str], doc: Document | None, name: str) -> None:
    assert doc is not None
    addrs = doc.host(name).get("addresses") or {}
    for net, how in why.items():
        click.echo(f"{name}: {net} {addrs.get(net)} ({how})")


@click.group("host")
def host_group() -> None:
    """Add, change or remove hosts in the inventory.

    \b
    Examples:
      dsas host add w109 --role web --mac 52:54:00:00:01:09 --mac 52:54:00:00:11:09
      dsas host add w110 --role web --mac 52:54:00:00:01:10 --mac 52:54:00:00:11:10 \\
          --address inside=198.18.1.10
      dsas host set w108 bond.primary=eth0 kernel_args="quiet"
      dsas host set w108 --unset bond
      dsas host rm w108

    To move a host to another role, use `dsas assign HOST ROLE`.
    """


@host_group.command("add")
@inventory_option
@state_dir_option
@click.argument("name")
@click.option("--role", "-r", required=True, help="The host's role.")
@click.option("--mac", "-m", "macs", multiple=True, required=True, metavar="MAC",
              help="A NIC's MAC, in the hardware type's NIC order (repeat per NIC).")
@address_option
@click.option("--hwtype", default=None, help="Hardware type, when not the role's.")
def add(inventory_path: str | None, state_dir: str, name: str, role: str,
        macs: tuple[str, ...], addresses: tuple[str, ...], hwtype: str | None) -> None:
    """Add host NAME with role ROLE and its MACs.

    The entry goes after the last host of the same role, in that host's style.

    \b
    Example:
      dsas host add w109 --role web --mac 52:54:00:00:01:09 --mac 52:54:00:00:11:09
    """
    edit = start(inventory_path)
    busy = leased_elsewhere(state_dir, macs)
    why = apply(edit, lambda d: add_host(d, name, role, macs, _addresses(addresses),
                                         hwtype, busy=busy))
    validated(edit)  # every problem first; then what was chosen
    _report(why, edit.doc, name)
    finish(edit, shlex.join(["host", "add", name, "--role", role,
                             *[f"--mac={m}" for m in macs],
                             *[f"--address={a}" for a in addresses]]
                            + ([f"--hwtype={hwtype}"] if hwtype else [])), state_dir)


def _addresses(pairs: tuple[str, ...]) -> dict[str, ipaddress.IPv4Address]:
    from ..inventory.edit import EditError

    try:
        return parse_addresses(pairs)
    except EditError as e:
        fail_problems(NOTHING, e.problems, 2)
    raise AssertionError("unreachable")


@host_group.command("set")
@inventory_option
@state_dir_option
@click.argument("name")
@click.argument("assignments", nargs=-1, metavar="KEY=VALUE...")
@click.option("--unset", multiple=True, metavar="KEY", help="Remove KEY (repeatable).")
def set_(inventory_path: str | None, state_dir: str, name: str,
         assignments: tuple[str, ...], unset: tuple[str, ...]) -> None:
    """Set keys of host NAME; VALUE is YAML, KEY may be dotted.

    \b
    Keys: macs, addresses.NET, hwtype, bond(.mode|.primary|.miimon|...),
    boot (netboot|disk), image, loader (ipxe|pxelinux), kernel_args, services.
    Examples:
      dsas host set w108 bond.primary=eth0
      dsas host set w108 macs='[52:54:00:00:01:08, 52:54:00:00:11:18]'
      dsas host set w108 addresses.inside=198.18.1.80 boot=disk
      dsas host set w108 --unset bond
    """
    if not assignments and not unset:
        fail_problems("give KEY=VALUE or --unset KEY (see --help)", [], 2)
    from ..inventory.edit import EditError

    try:
        pairs = parse_assignments(assignments)
    except EditError as e:
        fail_problems(NOTHING, e.problems, 2)
    edit = start(inventory_path)
    apply(edit, lambda d: set_host(d, name, pairs, unset))
    finish(edit, shlex.join(["host", "set", name, *assignments,
                             *[f"--unset={u}" for u in unset]]), state_dir)


@host_group.command("rm")
@inventory_option
@state_dir_option
@click.argument("name")
def rm(inventory_path: str | None, state_dir: str, name: str) -> None:
    """Remove host NAME (refused while an LVS pair or the masters name it).

    \b
    Example:
      dsas host rm w108
    """
    edit = start(inventory_path)
    apply(edit, lambda d: remove_host(d, name))
    finish(edit, shlex.join(["host", "rm", name]), state_dir)


@click.command()
@inventory_option
@state_dir_option
@click.argument("mac")
@click.argument("name")
@click.option("--role", "-r", required=True, help="The role the machine gets.")
@click.option("--mac", "-m", "more_macs", multiple=True, metavar="MAC",
              help="The MACs of its other NICs, in NIC order (a machine is discovered by "
                   "the one NIC it boots from).")
@address_option
@click.option("--hwtype", default=None, help="Hardware type, when not the role's.")
def enlist(inventory_path: str | None, state_dir: str, mac: str, name: str, role: str,
           more_macs: tuple[str, ...], addresses: tuple[str, ...],
           hwtype: str | None) -> None:
    """Adopt a machine from `dsas discovered` as host NAME with role ROLE.

    Its MAC becomes the host's first; the address it holds from the discovery pool is
    kept when it is on a network of the role and free, so the machine keeps it.

    \b
    Examples:
      dsas discovered
      dsas enlist 52:54:00:aa:00:01 w109 --role web --mac 52:54:00:aa:10:01
    """
    try:
        mac = normalize_mac(mac)
    except ValueError as e:
        fail_problems(str(e), [], 2)
    row = _discovered(state_dir, mac)
    prefer: dict[str, ipaddress.IPv4Address] = {}
    if row.get("address") and row.get("network"):
        prefer[str(row["network"])] = ipaddress.IPv4Address(str(row["address"]))
    edit = start(inventory_path)
    busy = leased_elsewhere(state_dir, [mac, *more_macs])
    why = apply(edit, lambda d: add_host(d, name, role, [mac, *more_macs],
                                         _addresses(addresses), hwtype, prefer=prefer,
                                         busy=busy))
    validated(edit)  # every problem first; then what was chosen
    _report(why, edit.doc, name)
    if prefer and "leased" not in why.values():
        click.echo(f"note: {name} held {prefer.popitem()[1]} from the discovery pool; that "
                   "address is not free on its role's networks, so it gets the one above at "
                   "its next DHCP request")
    finish(edit, shlex.join(["enlist", mac, name, "--role", role,
                             *[f"--mac={m}" for m in more_macs],
                             *[f"--address={a}" for a in addresses]]), state_dir)


def _discovered(state_dir: str, mac: str) -> dict[str, object]:
    if not (Path(state_dir) / FILENAME).exists():
        fail_problems(f"no state in {state_dir} (has `dsas serve --discovery` run with "
                      f"--state-dir {state_dir}?)", [])
    store = StateStore(state_dir)
    try:
        rows = LeaseJournal(store).discovered()
    finally:
        store.close()
    for r in rows:
        if r["mac"] == mac:
            return r
    fail_problems(f"{safe(mac)} is not in `dsas discovered` (to add a machine that was "
                  "never seen, use `dsas host add`)", [])
    raise AssertionError("unreachable")
