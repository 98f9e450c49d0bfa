"""`dsas assign HOST ROLE`: move a host to another role (the inventory side, and the plan)."""

from __future__ import annotations

import ipaddress
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..assign import live
from ..assign.farm import LiveFarm
from ..balancer import members as lbmembers
from ..balancer.members import Override
from ..balancer.reload import directors
from ..inventory import Inventory, InventoryError, loads
from ..inventory.commit import CommitError, commit, read
from ..inventory.edit import assign_role
from ..policy.assignplan import Plan, describe, plan
from ..render import render_host
from ..services.servepid import notify_serve
from ..sshtrust.sshconf import SshConfig, ensure_client_key
from ..state import FILENAME, StateStore
from ..state.assign import AssignJournal
from ..state.inventory import sha256
from .common import inventory_option, ssh_login_options
from .editcommon import (
    Edit,
    apply,
    fail_problems,
    file_diff,
    finish,
    start,
    state_dir_option,
    validated,
)
from .hostedit import _addresses, address_option, leased_elsewhere


@click.command()
@inventory_option
@state_dir_option
@click.argument("host")
@click.argument("role", required=False)
@address_option
@click.option("--undo", is_flag=True,
              help="Return HOST to the role (and addresses) it had before its last "
                   "`dsas assign`, from the inventory history; no ROLE.")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True,
              help="The plan as JSON on stdout (with --dry-run, or with --yes).")
@click.option("--journal", is_flag=True,
              help="Show HOST's assign runs and their steps from the journal; no ROLE.")
@click.option("--drain-timeout", type=click.FloatRange(0, 3600), default=live.DRAIN_TIMEOUT,
              show_default=True,
              help="Seconds to wait for HOST's active connections to reach 0 on every "
                   "director (then the move goes on).")
@click.option("--ready-timeout", type=click.FloatRange(1, 7200), default=live.READY_TIMEOUT,
              show_default=True,
              help="Seconds to wait for HOST's ready report in its new role.")
@click.option("--check-timeout", type=click.FloatRange(1, 3600), default=live.CHECK_TIMEOUT,
              show_default=True,
              help="Seconds to wait for keepalived's health check to put HOST in its new "
                   "pools on every director.")
@ssh_login_options
@click.option("--timeout", "ssh_timeout", type=click.FloatRange(0.5, 300), default=10,
              show_default=True, help="Seconds to connect to HOST and to each director.")
def assign(inventory_path: str | None, state_dir: str, host: str, role: str | None,
           addresses: tuple[str, ...], undo: bool, dry_run: bool, yes: bool,
           as_json: bool, journal: bool, drain_timeout: float, ready_timeout: float,
           check_timeout: float, user: str, port: int, identity: str | None,
           ssh_timeout: float) -> None:
    """Move HOST to ROLE: show the plan, change the inventory, move the host live.

    The plan: the host's dsas.conf before and after, the services that stop and
    start, the balancer pools (virtual services of the old and new role) the host
    leaves and joins, and whether the move needs a reboot (another image,
    hardware type, disk layout, boot mode, loader or kernel command line) or can
    be applied live. Addresses on networks both roles join are kept; the new
    role's other networks get the lowest free address unless --address gives one.

    Without --dry-run it asks, then writes the inventory (validated, locked,
    atomic, kept in `dsas inventory log`), reloads a running `dsas serve`, and
    moves the host live:

    \b
    1. drain: HOST gets weight 0 in the pools it is in (keepalived.conf from
       the master, both directors reloaded by SIGHUP, never restarted); wait
       until IPVS shows it no active connection (--drain-timeout);
    2. deliver: its new dsas.conf over SSH (host key verified);
    3. reapply: `dsas-init reapply` on it (old role's services stop, addresses
       and VLANs change, new role's services start) and its ready report with
       the new role (--ready-timeout); or, where the plan needs one, a reboot
       into the new role and its ready report (a netboot host made new SSH
       host keys: the one its report carries is trusted in place of the old
       boot's when the report is its own, from its address with its boot's
       token, as `dsas rollout` does; otherwise the step says why not);
    4. rebalance: the directors reloaded with HOST in its new pools, where
       keepalived's health check must pass (alpha) before it gets traffic
       (--check-timeout).

    A director leaving its LVS pair first hands over: the pair's next active
    must run the pair's virtual services; it is reloaded at priority 254 with
    preempt and takes every VIP while HOST still holds them (no moment without
    a holder), and only then does keepalived stop on HOST. The rebalance gives
    the next active its own priority back. A host becoming a director
    must run the pair's virtual services before the move is done. A host given
    the role of the two masters of a pair then joins the pair: `dsas master join
    HOST` runs after the move (HOST takes the other master's place).

    A failed step stops the move and puts back what it changed: the inventory
    (a revision of its own), HOST's old dsas.conf re-applied when the move had
    touched it, and the pools as they were (the directors reloaded): a host that
    did not come up in its new role is never added to a pool. The error is one
    line naming HOST, the step, the cause and what was put back. --undo walks the
    last assign that went through back the same way.

    \b
    Examples:
      dsas assign log1 web --dry-run
      dsas assign log1 web --dry-run --json
      dsas assign w108 db --yes
      dsas assign w101 lvs --address outside=203.0.113.13
      dsas assign w103 master --yes   # then joins the master pair
      dsas assign --undo w108 --dry-run
      dsas assign --journal w108

    Every confirmed run is journaled in the state store with each step's
    status (done, failed, or not-run with the reason).
    """
    if journal:
        if role is not None or undo:
            fail_problems("--journal takes HOST only", [], 2)
        _show_journal(state_dir, host)
        return
    _check_args(role, undo, addresses, as_json, dry_run, yes)
    if undo:
        role, given = _before_last_assign(inventory_path, state_dir, host)
    else:
        given = _addresses(addresses)
    assert role is not None
    prepared = _prepare(inventory_path, state_dir, host, role, given)
    if prepared is None:
        return
    edit, old_inv, new_inv, p, why = prepared
    out = _show_plan(p, edit, why, as_json)
    joins = _show_join(new_inv, host, role, out, as_json)
    if dry_run:
        click.echo(json.dumps(out, indent=2) if as_json else "dry run: nothing written")
        return
    if not yes:
        _confirm(host, role)
    command = shlex.join(["assign", "--undo", host, f"(back to {role})"] if undo else
                         ["assign", host, role, *[f"--address={a}" for a in addresses]])
    # paramiko logs a failed handshake with a traceback; the step names the reason
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    cfg = SshConfig(Path(state_dir), user=user, port=port,
                    identity=Path(identity) if identity else None, connect_timeout=ssh_timeout)
    ensure_client_key(cfg)
    timeouts = (drain_timeout, ready_timeout, check_timeout)
    t0 = time.monotonic()
    outcome, rev, run = _run_live(edit, command, state_dir, old_inv, new_inv, host, role, p,
                                  cfg, timeouts, ssh_timeout, as_json)
    took = time.monotonic() - t0
    if as_json:
        _json_outcome(out, outcome, rev, run)
    if not outcome.ok:
        click.echo(_failure_line(host, p.old_role, outcome), err=True)
        sys.exit(1)
    click.echo(f"{host} is {role} now ({took:.1f} s for the live steps)", err=as_json)
    if joins:  # the seed's "a web server can become the master" (issue 18)
        from .master import join
        click.get_current_context().invoke(
            join, host=host, inventory_path=inventory_path, state_dir=state_dir,
            master_name=None, remote_state_dir=None, remote_inventory=None,
            remote_dsas="dsas", start_cmd="systemctl restart dsas-serve", user=user,
            port=port, identity=identity, wait=120.0)


def _show_join(inv: Inventory, host: str, role: str, out: dict[str, Any],
               as_json: bool) -> bool:
    """Will a master join follow the move? Said in the plan and its JSON."""
    joins = out["joins_master_pair"] = _joins_pair(inv, host, role)
    if joins and not as_json:
        click.echo(f"  then: {host} joins the master pair (`dsas master join {host}`, run "
                   "here: it takes the other master's place, gets the pair key, the state "
                   "and the boot tree)")
    return joins


def _joins_pair(inv: Inventory, host: str, role: str) -> bool:
    """Does ROLE make HOST one of a master pair: the masters' role, a pair, HOST not
    already one of its two masters (then `dsas master join` follows the move)."""
    masters = inv.masters
    return (inv.cluster.pair is not None and bool(masters)
            and all(m.role.name == role for m in masters)
            and host not in {m.name for m in masters})


def _failure_line(host: str, old_role: str, outcome: live.Outcome) -> str:
    """One line: the host, the step and its cause, and what was put back (or not)."""
    line = f"error: {host}: step {outcome.failed_step} failed: {outcome.reason}"
    if outcome.back:
        line += "; put back: " + ", ".join(outcome.back)
    left = []
    if not outcome.reverted:
        left.append(f"the inventory still says its new role (`dsas assign --undo {host}` "
                    f"returns it to {old_role})")
    if not outcome.host_back:
        left.append(f"{host} may run neither role (see /run/dsas/reapply.log on it)")
    if not outcome.restored:
        left.append("the directors could not all be told the pools as they were (they keep "
                    "what they ran; `dsas lb reload` once they answer)")
    return line + ("; NOT put back: " + "; ".join(left) if left else "")


def _check_args(role: str | None, undo: bool, addresses: tuple[str, ...], as_json: bool,
                dry_run: bool, yes: bool) -> None:
    """Exit 2 on a combination of arguments that makes no sense."""
    if as_json and not (dry_run or yes):
        fail_problems("--json needs --dry-run or --yes (it cannot ask)", [], 2)
    if undo == (role is not None):
        fail_problems("give ROLE, or --undo without ROLE", [], 2)
    if undo and addresses:
        fail_problems("--undo takes the addresses from the history; no --address", [], 2)


def _prepare(inventory_path: str | None, state_dir: str, host: str, role: str,
             given: Any) -> tuple[Edit, Inventory, Inventory, Plan, Any] | None:
    """The edit (started, applied, validated), the inventories before and after, the
    plan and the addresses the edit chose; None when there is nothing to do."""
    edit = start(inventory_path)
    try:
        old_inv = loads(edit.snap.text, str(edit.path))
    except InventoryError as e:
        fail_problems(f"{edit.path} is invalid now; fix it first (`dsas check`):",
                      [str(p) for p in e.problems])
    if host not in old_inv.hosts:
        fail_problems(f"no host {host!r} in {edit.path}", [])
    if old_inv.hosts[host].role.name == role and not given:
        click.echo(f"{host} already has role {role}: nothing to do")
        return None
    busy = leased_elsewhere(state_dir, old_inv.hosts[host].macs)
    why = apply(edit, lambda d: assign_role(d, host, role, given, busy=busy))
    new_inv = validated(edit)
    return edit, old_inv, new_inv, plan(old_inv, new_inv, host), why


def _show_plan(p: Plan, edit: Edit, why: Any, as_json: bool) -> dict[str, Any]:
    """Print the plan (not with --json); the plan as JSON (for --json)."""
    diff = file_diff(edit)
    out: dict[str, Any] = p.as_json()
    out["addresses_chosen"] = why
    out["inventory_diff"] = diff
    out["live_steps_implemented"] = True
    out["written"] = False
    if not as_json:
        click.echo(describe(p))
        click.echo("  inventory:")
        click.echo("".join(f"    {ln}" for ln in diff.splitlines(keepends=True)) or
                   "    (unchanged)\n", nl=False)
        click.echo("  steps after the inventory edit (" + ("reboot" if p.reboot else "live")
                   + "):")
        for i, s in enumerate(p.steps, 1):
            click.echo(f"    {i}. {s['step']}: {s['does']}")
    return out


def _confirm(host: str, role: str) -> None:
    """Ask on the terminal; exit 1 when there is none or the answer is no."""
    if not sys.stdin.isatty():
        fail_problems("not confirmed (no terminal to ask on): use --yes, or --dry-run "
                      "to only see the plan", [])
    if not click.confirm(f"write the inventory: {host} becomes {role}?", default=False):
        fail_problems("not confirmed: nothing written", [])


def _run_live(edit: Edit, command: str, state_dir: str, old_inv: Inventory, new_inv: Inventory,
              host: str, role: str, p: Plan, cfg: SshConfig, timeouts: tuple[float, float, float],
              ssh_timeout: float, as_json: bool) -> tuple[live.Outcome, int | None, int]:
    """Journal the run, write the inventory (the host drained where it is and held out of
    its new pools first), then the live steps; their outcome, the revision and the run."""
    store = StateStore(state_dir)
    try:
        jr = AssignJournal(store)
        run = jr.start(host, p.old_role, p.new_role, "reboot" if p.reboot else "live",
                       p.as_json())
        prior = lbmembers.of_host(lbmembers.load(store), host)
        move = _move(old_inv, new_inv, host, prior, p.reboot, *timeouts, f"assign run {run}")
        # before the serve reads the new inventory: drained where it is, held out of
        # its new pools until it is up in its new role
        lbmembers.set_host(store, host, move.transitional())

        def refused(why: str) -> None:
            lbmembers.set_host(store, host, prior)
            jr.step(run, "inventory", "failed", why)
            for s in p.steps:
                jr.step(run, s["step"], "not-run", "the inventory edit failed")

        if as_json:
            # keep stdout one JSON document: the commit's messages go to stderr
            with _stdout_to_stderr():
                rev = finish(edit, command, state_dir, quiet_diff=True, on_error=refused)
        else:
            rev = finish(edit, command, state_dir, quiet_diff=True, on_error=refused)
        jr.step(run, "inventory", "done", f"revision {rev}" if rev else "no change")
        click.echo(f"{host}: inventory says role {role} now; the live steps "
                   f"({'reboot' if p.reboot else 'live'}):", err=as_json)
        farm = LiveFarm(host, new_inv, cfg, store, timeout=max(120.0, ssh_timeout * 3),
                        becoming=_becoming_director(old_inv, new_inv, host))

        def revert() -> tuple[bool, str]:
            return _revert(edit, command, state_dir, old_inv, farm)

        outcome = live.run(move, farm, jr, run, say=lambda m: click.echo(m, err=as_json),
                           revert=revert if rev is not None else None)
    finally:
        store.close()
    return outcome, rev, run


REVERTED = "revert of the failed"  # the command of the revision a failed assign writes


def _revert(edit: Edit, command: str, state_dir: str, old_inv: Inventory,
            farm: LiveFarm) -> tuple[bool, str]:
    """The inventory as it was before the assign (a new revision), the serve reloaded
    and the farm told (its pools are the old inventory's again); refused, with the
    reason, when the file changed since the assign wrote it."""
    try:
        snap = read(edit.path)
        if snap.data != edit.new_text.encode():
            return False, (f"{edit.path} changed since the assign wrote it: not reverted "
                           "(`dsas inventory revert` once it is right)")
        rev = commit(edit.path, snap, edit.snap.text, f"{REVERTED} {command}", state_dir,
                     validated=True)
    except (CommitError, InventoryError, OSError) as e:
        return False, f"{edit.path} not reverted: {e}"
    notice = notify_serve(state_dir, edit.path, sha256(edit.snap.data))
    farm.inv = old_inv
    return True, f"{edit.path} as before the assign (revision {rev}); {notice.message}"


def _json_outcome(out: dict[str, Any], outcome: live.Outcome, rev: int | None, run: int) -> None:
    """Print the plan with what the run did, as one JSON document."""
    out["written"] = rev is not None
    out["revision"] = rev
    out["journal_run"] = run
    out["ok"] = outcome.ok
    out["failed_step"] = outcome.failed_step
    out["reason"] = outcome.reason
    out["restored"] = outcome.restored
    out["reverted"] = outcome.reverted
    out["host_back"] = outcome.host_back
    out["put_back"] = outcome.back
    out["steps"] = [{"step": a, "status": b, "detail": c} for a, b, c in outcome.steps]
    out["seconds"] = {k: round(v, 3) for k, v in outcome.timings.items()}
    click.echo(json.dumps(out, indent=2))


def _move(old_inv: Inventory, new_inv: Inventory, host: str, prior: list[Override],
          reboot: bool, drain_timeout: float, ready_timeout: float, check_timeout: float,
          why: str) -> live.Move:
    """What the live steps need: where the host is in the pools now (the inventory
    before, with the overrides it has), and where it goes."""
    overrides = {(o.host, o.role): o for o in prior}
    old, new = old_inv.hosts[host], new_inv.hosts[host]
    pooled = {vs.role for vs in new_inv.virtual_services.values()}
    was = {p.name for h, p, _ in old_inv.lvs_hosts() if h.name == host}
    now = {p.name for h, p, _ in new_inv.lvs_hosts() if h.name == host}
    return live.Move(
        host=host, old_role=old.role.name, new_role=new.role.name,
        old_address=str(old.primary_interface.address),
        new_address=str(new.primary_interface.address),
        before=lbmembers.roles_in(old_inv, host, overrides),
        new_pooled=new.role.name in pooled, reboot=reboot,
        dsas_conf=render_host(new_inv, new, "dsas.conf"),
        drain_timeout=drain_timeout, ready_timeout=ready_timeout,
        check_timeout=check_timeout, why=why,
        old_dsas_conf=render_host(old_inv, old, "dsas.conf"), prior=list(prior),
        leaves_pair=min(was - now, default=None), joins_pair=min(now - was, default=None))


def _show_journal(state_dir: str, host: str) -> None:
    if not (Path(state_dir) / FILENAME).exists():
        click.echo(f"no assign of {host} journaled in {state_dir}")
        return
    store = StateStore(state_dir)
    try:
        runs = AssignJournal(store).runs(host)
    finally:
        store.close()
    if not runs:
        click.echo(f"no assign of {host} journaled in {state_dir}")
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.at))
        click.echo(f"run {r.id} {when} {r.user}: {r.host} {r.old_role} -> {r.new_role} "
                   f"({r.mode})")
        for s in r.steps:
            click.echo(f"  {s.seq}. {s.step}: {s.status}" + (f" ({s.detail})" if s.detail
                                                             else ""))


def _becoming_director(old_inv: Inventory, new_inv: Inventory, host: str) -> set[str]:
    """{host} when the new inventory makes it a director and the old one did not."""
    def of(inv: Inventory) -> set[str]:
        return {n for n, _ in directors(inv)}

    return {host} if host in of(new_inv) - of(old_inv) else set()


def _before_last_assign(inventory_path: str | None, state_dir: str,
                        host: str) -> tuple[str, dict[str, ipaddress.IPv4Address]]:
    """The role and addresses ``host`` had in the revision before its last assign."""
    from .invhistory import _history

    path, revs = _history(inventory_path, state_dir)
    prefix = shlex.join(["assign", host]) + " "
    for i in range(len(revs) - 1, 0, -1):
        reverted = i + 1 < len(revs) and revs[i + 1].command.startswith(REVERTED)
        if revs[i].command.startswith(prefix) and not reverted:
            try:
                before = loads(revs[i - 1].content.decode(), f"{path} (revision "
                                                             f"{revs[i - 1].rev})")
            except InventoryError as e:
                fail_problems(f"revision {revs[i - 1].rev} is invalid; cannot undo from it:",
                              [str(p) for p in e.problems])
            h = before.hosts.get(host)
            if h is None:
                fail_problems(f"{host} is not in revision {revs[i - 1].rev}", [])
            assert h is not None
            return h.role.name, dict(h.addresses)
    fail_problems(f"no `dsas assign {host}` in the history of {path}: nothing to undo", [])
    raise AssertionError("unreachable")


class _stdout_to_stderr:
    def __enter__(self) -> None:
        self.saved = sys.stdout
        sys.stdout = sys.stderr

    def __exit__(self, *exc: object) -> None:
        sys.stdout = self.saved
