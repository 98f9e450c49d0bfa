"""`dsas master`: the master pair (issue 18): its key, its keepalived, its status, and
`join` (make a host a master)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..ha import join as hj
from ..ha import pair as ha
from ..ha.wire import WireError
from ..sshtrust import DEFAULT_PORT, DEFAULT_USER
from .common import fail, inventory_option, load_inventory, table

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False), default="/var/lib/dsas",
    show_default=True, help="The serve's state directory (the pair key, the status file).")
master_option = click.option(
    "--master", "master_name", default=None, metavar="HOST",
    help="Which master this is (default: the one whose address is local).")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def master() -> None:
    """The master pair: two masters behind the VIP cluster.master_address."""


def _me(inventory_path: str | None, name: str | None) -> tuple[Any, ha.Me]:
    inv = load_inventory(inventory_path)
    try:
        return inv, ha.resolve(inv, name)
    except ha.PairError as e:
        fail(str(e), 1)
        raise AssertionError from None


@master.command("key")
@inventory_option
@state_dir_option
def key(inventory_path: str | None, state_dir: str) -> None:
    """Make the pair key (mode 0600) unless there is one; copy the file to the other
    master's state directory. Its content is never printed or logged."""
    inv = load_inventory(inventory_path)
    if inv.cluster.pair is None:
        fail("the inventory has no master pair (cluster.masters.pair)", 1)
    assert inv.cluster.pair is not None
    path, made = ha.make_key(Path(state_dir), inv.cluster.pair)
    click.echo(f"{'made' if made else 'kept the existing'} pair key {path} (mode 0600); "
               "copy it to the other master's state directory")


@master.command("keepalived")
@inventory_option
@master_option
@click.option("--interface", "-I", required=True, metavar="IF",
              help="The interface the VIP goes on.")
def keepalived(inventory_path: str | None, master_name: str | None, interface: str) -> None:
    """Print the keepalived.conf that holds the VIP on this master (what `dsas serve`
    runs itself unless --no-keepalived)."""
    _, me = _me(inventory_path, master_name)
    click.echo(ha.render_keepalived(me, interface), nl=False)


@master.command("status")
@inventory_option
@state_dir_option
@master_option
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@click.option("--timeout", type=click.FloatRange(0.1, 60), default=2.0, show_default=True,
              help="Seconds to wait for the peer.")
def status(inventory_path: str | None, state_dir: str, master_name: str | None,
           as_json: bool, timeout: float) -> None:
    """Each master's role (active/standby), whether it reaches its peer, the
    replication lag (changes not acked by the peer, and for how long) and the last
    successful sync of the leases and of the other state (events, push and inventory
    history), and each mirrored kind (inventory, known_hosts, boot tree, image
    store): its last verified sync, and whether it is stale. This master from its
    serve's status file, the peer over the channel. Exit 1 when a master cannot be
    read or a mirror is stale."""
    inv, me = _me(inventory_path, master_name)
    assert inv.cluster.pair is not None
    now = time.time()
    masters: list[dict[str, Any]] = []
    local = hj.local_status(Path(state_dir), me, now)
    masters.append(local)
    try:
        key_bytes = ha.read_key(Path(state_dir), inv.cluster.pair)
        peer = ha.ask_status(me, key_bytes, timeout)
        peer["reachable_from_here"] = True
    except (ha.PairError, OSError, ConnectionError, WireError) as e:
        peer = {"name": me.peer_name, "side": me.peer_side, "role": "unknown",
                "reachable_from_here": False, "error": str(e)}
    masters.append(peer)
    report = {"vip": str(me.vip), "masters": masters}
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        rows = [[m.get("name"), m.get("side"), m.get("role"),
                 _yes(m.get("peer_reachable")), m.get("lag_updates", "-"),
                 m.get("lag_seconds", "-"), _when(m.get("last_sync"), now),
                 _when(m.get("last_sync_other") or m.get("last_applied_other"), now),
                 m.get("error", "")] for m in masters]
        click.echo(f"master VIP {me.vip}")
        click.echo(table(["master", "side", "role", "peer reachable", "lag (updates)",
                          "lag (s)", "last lease sync", "last other sync", "problem"], rows))
        click.echo("\nmirror (from the active to the standby, sha256-verified)")
        click.echo(table(["master", "kind", "last sync", "files", "bytes", "state"],
                         _mirror_rows(masters, now)))
    stale = any(k.get("stale") for m in masters for k in (m.get("mirror") or {}).values())
    sys.exit(1 if stale or any(m.get("role") == "unknown" for m in masters) else 0)


def _mirror_rows(masters: list[dict[str, Any]], now: float) -> list[list[Any]]:
    rows = []
    for m in masters:
        for kind, k in sorted((m.get("mirror") or {}).items()):
            state = f"STALE: {k.get('why')}" if k.get("stale") else (
                "source (active)" if k.get("role") == "source" else "in sync")
            rows.append([m.get("name"), kind, _when(k.get("last_sync"), now), k.get("files"),
                         k.get("bytes"), state])
    return rows


@master.command("join")
@click.argument("host")
@inventory_option
@state_dir_option
@master_option
@click.option("--remote-state-dir", default=None, metavar="DIR",
              help="HOST's state directory (default: the same as --state-dir).")
@click.option("--remote-inventory", default=None, metavar="PATH",
              help="Where HOST's serve reads the inventory (default: this one's path).")
@click.option("--remote-dsas", default="dsas", show_default=True, metavar="PATH",
              help="dsas on HOST (checked to be this version).")
@click.option("--no-install", is_flag=True,
              help="Refuse a HOST without this dsas version instead of installing it.")
@click.option("--install-from", default=None, metavar="PREFIX", type=click.Path(file_okay=False),
              help="The installed dsas (`make install`'s PREFIX) to copy to HOST "
                   "(default: the one running).")
@click.option("--start", "start_cmd", default="systemctl restart dsas-serve",
              show_default=True, metavar="CMD",
              help="Shell command that starts `dsas serve` on HOST.")
@click.option("--user", default=DEFAULT_USER, show_default=True, help="SSH user on HOST.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT,
              show_default=True, help="SSH port on HOST.")
@click.option("--identity", type=click.Path(dir_okay=False), default=None,
              help="SSH key (default: <state-dir>/ssh/id_ed25519, dsas-push's).")
@click.option("--wait", type=click.FloatRange(0, 3600), default=120.0, show_default=True,
              help="Seconds to wait for HOST to be in sync (0: do not wait).")
def join(host: str, inventory_path: str | None, state_dir: str, master_name: str | None,
         remote_state_dir: str | None, remote_inventory: str | None, remote_dsas: str,
         no_install: bool, install_from: str | None, start_cmd: str, user: str, port: int,
         identity: str | None, wait: float) -> None:
    """Make HOST a master: it takes the place of the other master of the pair (the
    secondary, run on the primary), gets the pair key, dsas-push's SSH key and the
    inventory over SSH (HOST's host key verified: `dsas trust HOST` first), and its
    serve, started with --start, pulls the leases, the boot tree, the image store
    and the other state from this master before it starts keepalived.

    \b
    The inventory edit is committed like any (history; `dsas inventory revert`
    undoes it) and this master's serve follows it live. A HOST without dsas or
    with another version first gets this master's own installation (`make
    install`'s PREFIX venv, links, unit, man pages; same paths), copied over the
    same SSH connection, its sha256 sums checked there, swapped in whole (the old
    one kept on any failure); HOST's python3 must be the venv's version.
    --no-install refuses such a HOST instead. Exit 0 when HOST is in sync and its mirror is
    not stale, 3 when it did not get there within --wait, 1 on an error (the
    step is named)."""
    from ..sshtrust.sshconf import SshConfig
    from . import editcommon

    inv = load_inventory(inventory_path)
    try:
        p = hj.plan(inv, master_name, host)
        cfg = SshConfig(Path(state_dir), user, port, Path(identity) if identity else None)
        remote = hj.Remote(cfg, host, p.address)
        click.echo(f"1/4 {host} ({p.address}) joins as the {p.side}, in place of "
                   f"{p.replaces}; checking its dsas")
        version = f"dsas, version {__version__}"
        have = hj.remote_version(remote, remote_dsas)
        if have != version and not no_install:
            from ..ha import install as hi
            inst = hi.Installation.find(install_from)
            click.echo(f"    {host} has {have or 'no dsas'}: installing {inst.prefix} there")
            hi.install(remote, inst, version, click.echo)
            remote_dsas = str(inst.prefix / "bin" / "dsas")
        hj.check_dsas(remote, remote_dsas, version)
    except hj.JoinError as e:
        fail(e.one_line(), 1)
    click.echo(f"2/4 the inventory: cluster.masters.{p.side}: {host}")
    edit = editcommon.start(inventory_path)
    editcommon.apply(edit, lambda doc: hj.edit_inventory(doc, p))
    editcommon.finish(edit, f"master join {host}", state_dir, quiet_diff=True)
    new_inv = editcommon.validated(edit)
    assert new_inv.cluster.pair is not None
    rstate = remote_state_dir or state_dir
    click.echo(f"3/4 {host}: the pair key, dsas-push's key and the inventory; {start_cmd}")
    try:
        hj.deliver(remote, cfg, Path(state_dir), rstate, new_inv,
                 remote_inventory or str(edit.path), edit.new_text)
        remote.run("the start command", start_cmd)
    except (hj.JoinError, ha.PairError) as e:
        fail(f"{e} (the inventory names {host} already: run join again, or `dsas "
             "inventory revert`)", 1)
    if wait == 0:
        return
    click.echo(f"4/4 waiting up to {wait:g} s for {host} to be in sync")
    me = ha.resolve(new_inv, p.me)
    why = hj.wait_joined(me, Path(state_dir), new_inv, wait)
    if why:
        fail(f"{host} is not in sync after {wait:g} s: {why} (see `dsas master status`)", 3)
    click.echo(f"{host} is the {p.side} master: in sync, its mirror verified")


def _yes(v: Any) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _when(t: Any, now: float) -> str:
    return "never" if not t else f"{now - float(t):.1f} s ago"
