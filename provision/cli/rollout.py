"""`dsas rollout IMAGE@VERSION`: move hosts to another image version, batch by batch,
drained and verified (issue 23). The plan is ``rollout.plan``, the execution
``rollout.run``, the hosts ``rollout.farm``; this module asks, records and reports."""

from __future__ import annotations

import json
import logging
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from .. import layout
from ..assign import live
from ..balancer import members as lbmembers
from ..balancer.rolling import LivePools
from ..imaging.content import parse_ref
from ..imaging.store import ImageStore
from ..inventory import Inventory, InventoryError, loads
from ..inventory.edit import Document, EditError
from ..rollout import owner as rowner
from ..rollout import plan as rplan
from ..rollout import run as rrun
from ..rollout.farm import DISK_ROOT, LiveNodes
from ..sshtrust.sshconf import SshConfig, ensure_client_key
from ..state import FILENAME, StateStore, events
from ..state.rollout import Owner as RunOwner
from ..state.rollout import RolloutRun, RolloutStore, state_text
from .common import inventory_option, ssh_login_options
from .editcommon import apply, fail_problems, finish, start, state_dir_option, validated
from .image import boot_root_option

T = TypeVar("T")


@dataclass(frozen=True)
class _Args:
    ref: str | None
    roles: tuple[str, ...]
    hosts: tuple[str, ...]
    batch: int
    canary: str | None
    max_failures: int
    back: bool
    resume: bool = False
    again: bool = False      # --resume
    abandon: bool = False
    dry_run: bool = False


@click.command()
@click.argument("ref", metavar="IMAGE@VERSION", required=False)
@click.option("--role", "-r", "roles", multiple=True, metavar="ROLE",
              help="Only the hosts of ROLE that boot IMAGE (repeatable).")
@click.option("--host", "-H", "hosts", multiple=True, metavar="HOST",
              help="Only HOST (repeatable; with --role: both).")
@click.option("--batch", "-b", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Hosts moved at a time (after the canary).")
@click.option("--canary", metavar="HOST", help="Move HOST alone first.")
@click.option("--pause", type=click.FloatRange(0, 86400), default=0.0, show_default=True,
              help="Seconds to wait after the canary before the other batches.")
@click.option("--max-failures", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Stop the rollout after this many failed hosts.")
@click.option("--back", is_flag=True,
              help="Return the hosts the last rollout of IMAGE moved (done or failed) to "
                   "the version they had; give IMAGE only.")
@click.option("--wait", is_flag=True,
              help="With --canary: stop after it (recorded as paused) until `dsas rollout "
                   "IMAGE --continue`.")
@click.option("--continue", "resume", is_flag=True,
              help="Go on with the paused rollout of IMAGE (its other batches); give IMAGE "
                   "only.")
@click.option("--resume", "again", is_flag=True,
              help="Go on with the unfinished rollout of IMAGE (interrupted, or its dsas "
                   "killed): its drains lifted, the hosts already moved skipped, the one "
                   "that was moving checked by its ready report; refused while its dsas is "
                   "alive; give IMAGE only.")
@click.option("--abandon", is_flag=True,
              help="End the unfinished rollout of IMAGE where it is (recorded abandoned): "
                   "its drains lifted, its hosts left on the version they run; refused "
                   "while its dsas is alive; give IMAGE only.")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True,
              help="The plan (and, with --yes, the outcome) as JSON on stdout; with "
                   "--history, the runs (each with its owner and whether it is live).")
@click.option("--history", is_flag=True, help="List the recorded rollouts; nothing else.")
@inventory_option
@state_dir_option
@boot_root_option
@click.option("--drain-timeout", type=click.FloatRange(0, 3600), default=live.DRAIN_TIMEOUT,
              show_default=True, help="Seconds to wait for a batch's connections to end.")
@click.option("--ready-timeout", type=click.FloatRange(1, 7200), default=live.READY_TIMEOUT,
              show_default=True, help="Seconds to wait for a host's ready report.")
@click.option("--check-timeout", type=click.FloatRange(1, 3600), default=live.CHECK_TIMEOUT,
              show_default=True,
              help="Seconds to wait for the health check to put a host back in its pools.")
@click.option("--disk-root", default=DISK_ROOT, show_default=True, metavar="DIR",
              help="Where a disk host receives the image's tree (a dsas-push release of "
                   "DIR/IMAGE).")
@click.option("--reboot-command", default=None, metavar="SH",
              help="How a netboot host is rebooted over SSH (default: `systemctl reboot "
                   "|| reboot`, detached).")
@click.option("--reapply-command", default=None, metavar="SH",
              help="What a disk host runs once the image's release is live (default: "
                   "its dsas.conf for the new version written as /etc/dsas.conf.new, "
                   "then `dsas-init reapply`, detached).")
@click.option("--trust-reported/--no-trust-reported", default=True, show_default=True,
              help="A netboot host makes new SSH host keys at every boot: trust the key "
                   "its ready report carried, in place of the old one, when that report "
                   "is its own (from its inventory address, with its boot's valid token). "
                   "With --no-trust-reported, run `dsas trust HOST` after the rollout.")
@ssh_login_options
@click.option("--timeout", "ssh_timeout", type=click.FloatRange(0.5, 300), default=10,
              show_default=True, help="Seconds to connect to each host and director.")
def rollout(ref: str | None, roles: tuple[str, ...], hosts: tuple[str, ...], batch: int,
            canary: str | None, pause: float, max_failures: int, back: bool, wait: bool,
            resume: bool, again: bool, abandon: bool, dry_run: bool,
            yes: bool, as_json: bool, history: bool, inventory_path: str | None,
            state_dir: str, boot_root: str, drain_timeout: float, ready_timeout: float,
            check_timeout: float, disk_root: str, reboot_command: str | None,
            reapply_command: str | None, trust_reported: bool, user: str,
            port: int, identity: str | None, ssh_timeout: float) -> None:
    """Move the hosts that boot IMAGE to VERSION, batch by batch, on a live farm.

    The plan names every host, the version it runs now, its boot mode (netboot
    or disk), the batches in order (a --canary alone first) and the pools it
    leaves and rejoins. Without --dry-run it asks (unless --yes), then per batch:

    \b
    1. drain: weight 0 in the host's pools on every director (reloaded, never
       restarted), wait for its active connections to end (--drain-timeout);
    2. move: a netboot host is pinned to VERSION (the master's boot files name it)
       and rebooted over SSH; a disk host gets the image's tree as an atomic,
       manifest-verified dsas-push release (--disk-root) and re-applies;
    3. ready: wait for its ready report naming IMAGE@VERSION (--ready-timeout);
    4. rejoin: back in its pools once the health check passes (--check-timeout).

    A failed host stays out of its pools; after --max-failures failed hosts the
    rollout stops and the later batches stay on their version. --back returns
    the hosts of the last rollout of IMAGE the same way. With --canary and --wait
    the rollout stops after the canary until `dsas rollout IMAGE --continue`
    (or --pause waits some seconds). SIGINT or SIGTERM stops the rollout after
    the batch it is moving (recorded interrupted); after that, or after its dsas
    was killed, a new rollout is refused until `dsas rollout IMAGE --resume`
    goes on with it or --abandon ends it. While a dsas rollout runs it holds
    STATE-DIR/rollout.lock and its run records its PID: another rollout,
    --resume or --abandon is refused, naming the PID (wait for it, or stop it
    with SIGINT); once that dsas is killed, its run shows as killed (owner PID
    N gone) and --resume or --abandon takes it over. The inventory's version
    of IMAGE changes only when every host that boots it is on VERSION. Every run
    (who, when, each host's version and outcome) is in the state store, and
    `dsas status` shows a running one.

    \b
    Examples:
      dsas rollout web@3d7ae7dd --role web --dry-run
      dsas rollout web@3d7ae7dd --role web --canary w101 --batch 2 --yes
      dsas rollout web@3d7ae7dd --role web --canary w101 --wait --yes
      dsas rollout web --continue --yes
      dsas rollout web --resume --yes
      dsas rollout web --abandon
      dsas rollout web@3d7ae7dd --host w101 --dry-run --json
      dsas rollout base@9f00c2e1 --role db --max-failures 2 --yes
      dsas rollout web --back --yes
      dsas rollout --history
    """
    if history:
        _show_history(state_dir, as_json)
        return
    args = _Args(ref, roles, hosts, batch, canary, max_failures, back, resume, again,
                 abandon, dry_run)
    _check_args(args, as_json, dry_run, yes)
    with _locked(state_dir, not dry_run or abandon) as locked:
        cfg = SshConfig(Path(state_dir), user=user, port=port, connect_timeout=ssh_timeout,
                        identity=Path(identity) if identity else None)
        if abandon:
            assert ref is not None
            _abandon(ref, inventory_path, state_dir, cfg, max(120.0, ssh_timeout * 3))
            return
        if wait and canary is None:
            fail_problems("--wait needs --canary (it waits after the canary)", [], 2)
        inv, p, paused = _plan(args, inventory_path, state_dir, boot_root, locked)
        out = p.as_json()
        if as_json and dry_run:
            click.echo(json.dumps(out, indent=2))
        elif not as_json:
            click.echo(rplan.describe(p))
        if dry_run:
            if not as_json:
                click.echo("dry run: nothing changed")
            return
        if not p.moves and not again:
            click.echo("nothing to move", err=as_json)
            return
        if not yes:
            _confirm(p)
        ensure_client_key(cfg)
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        t = rrun.Timeouts(drain_timeout, ready_timeout, check_timeout, pause, wait)
        settings = (disk_root, reboot_command, reapply_command, max(120.0, ssh_timeout * 3),
                    trust_reported)
        res, run_id, took = _execute(p, inv, cfg, state_dir, (boot_root, paused), t, settings,
                                     as_json)
        rev = _catch_up(p, res, inventory_path, state_dir, run_id, as_json)
        _report(p, res, run_id, rev, took, out, as_json)


@contextmanager
def _locked(state_dir: str, take: bool) -> Iterator[bool]:
    """The rollout lock held for the whole command (``take``: all but a dry run); exit
    1 naming the live run and its PID when another dsas holds it. True: held."""
    if not take:
        yield False
        return
    lock = rowner.RunLock(state_dir)
    if not lock.take():
        _refuse_live(state_dir, lock.holder())
    try:
        yield True
    finally:
        lock.close()


def _read_runs(state_dir: str, read: Callable[[RolloutStore], T], empty: T) -> T:
    """``read`` of the state store's rollouts, or ``empty`` when there is no store yet."""
    if not (Path(state_dir) / FILENAME).exists():
        return empty
    store = StateStore(state_dir)
    try:
        return read(RolloutStore(store))
    finally:
        store.close()


def _refuse_live(state_dir: str, holder: RunOwner | None) -> None:
    """Exit 1: another dsas rollout (``holder``, as its lock file says) holds the lock."""
    run = _read_runs(state_dir, RolloutStore.unfinished, None)
    if run is not None and run.outcome == "running" and run.owner is not None and (
            holder is None or holder == run.owner):
        holder = run.owner
    else:
        run = None
    _live_error(run, holder)


def _live_error(run: RolloutRun | None, who: RunOwner | None) -> None:
    pid = str(who.pid) if who is not None else "?"
    what = (f"rollout {run.id} of image {run.image} to {run.version}" if run is not None
            else "another dsas rollout")
    fail_problems(f"{what} is live: dsas PID {pid} on host {who.host if who else '?'} is "
                  "running it; wait for it to end, or stop it with SIGINT (`kill -INT "
                  f"{pid}`: it stops after the batch it is moving; then `dsas rollout "
                  f"{run.image if run else 'IMAGE'} --resume` goes on)", [])


def _check_args(a: _Args, as_json: bool, dry_run: bool, yes: bool) -> None:
    """Exit 2 on arguments that make no sense together."""
    if a.ref is None:
        fail_problems("give IMAGE@VERSION (or IMAGE with --back, or --history)", [], 2)
    assert a.ref is not None
    if as_json and not (dry_run or yes):
        fail_problems("--json needs --dry-run or --yes (it cannot ask)", [], 2)
    modes = [n for n, on in (("back", a.back), ("continue", a.resume), ("resume", a.again),
                             ("abandon", a.abandon)) if on]
    if len(modes) > 1:
        fail_problems(" or ".join(f"--{m}" for m in modes) + ", not both", [], 2)
    if modes and "@" in a.ref:
        fail_problems(f"--{modes[0]} takes IMAGE only: the version comes from the last"
                      " rollout", [], 2)
    if not modes and "@" not in a.ref:
        fail_problems(f"{a.ref}: name the version, as IMAGE@VERSION", [], 2)


def _plan(a: _Args, inventory_path: str | None, state_dir: str,
          boot_root: str, locked: bool) -> tuple[Inventory, rplan.Plan, int | None]:
    """The inventory, the plan and (--continue) the paused run it goes on with; exit 1
    with one line when it cannot be made. ``locked``: this process holds the rollout
    lock (a run left running is a killed one)."""
    assert a.ref is not None
    edit = start(inventory_path)
    try:
        inv = loads(edit.snap.text, str(edit.path))
    except InventoryError as e:
        fail_problems(f"{edit.path} is invalid now; fix it first (`dsas check`):",
                      [str(p) for p in e.problems])
    images = ImageStore(layout.image_store(boot_root))
    image, version = parse_ref(a.ref)
    # no state file yet: nothing pinned, drained or rolled out (and none is made)
    store = StateStore(state_dir) if (Path(state_dir) / FILENAME).exists() else None
    try:
        rs = RolloutStore(store) if store is not None else None
        pins = rs.pins(image) if rs is not None else {}
        overrides = lbmembers.load(store) if store is not None else {}
        roles, hosts, paused = a.roles, a.hosts, None
        if rs is not None and not (a.resume or a.again):
            _refuse_unfinished(rs, image, locked)
        if a.back:
            version, hosts = _back_of(rs, image)
            roles = ()
        if a.resume:
            paused, version, hosts, later = _paused_of(rs, image)
            roles = ()
        if a.again:
            _unfinished_of(rs, image)  # none: exit 1
            assert store is not None and rs is not None
            paused, version, hosts, later, pins = _resumed_of(rs, store, image, images,
                                                              write=not a.dry_run)
            roles = ()
        req = rplan.Request(image, version, roles, hosts, a.batch, a.canary, a.max_failures)
        p = rplan.make(inv, req, images.resolve, pins, overrides)
        if paused is not None:  # the batches as planned, less the canary's
            names = {m.host for m in p.moves}
            p.batches = [[h for h in b if h in names] for b in later]
            p.batches = [b for b in p.batches if b]
    except rplan.PlanError as e:
        fail_problems(str(e), [])
    finally:
        if store is not None:
            store.close()
    p.back = a.back
    return inv, p, paused


def _back_of(rs: RolloutStore | None, image: str) -> tuple[str, tuple[str, ...]]:
    """The version and the hosts of ``--back``: those the last rollout of ``image``
    moved, or tried to."""
    last = rs.last(image, back=False) if rs is not None else None
    if last is None:
        fail_problems(f"no rollout of image {image} recorded: nothing to go back from", [])
    assert last is not None
    return last.previous, tuple(h.host for h in last.hosts
                                if h.outcome in ("done", "failed", "moving"))


def _refuse_unfinished(rs: RolloutStore, image: str, locked: bool) -> None:
    """Exit 1 while a rollout is unfinished: one at a time. ``locked``: its dsas is
    gone (this one holds the lock); else (a dry run) /proc says."""
    run = rs.unfinished()
    if run is None:
        return
    live = False if locked else rowner.live(run)
    if live:
        _live_error(run, run.owner)
    hint = ("--continue" if run.outcome == "paused" else "--resume")
    left = [h.host for h in run.hosts if h.outcome in ("pending", "moving")]
    state = state_text(run.outcome, vars(run.owner) if run.owner else None, live)
    fail_problems(f"rollout {run.id} of image {run.image} to {run.version} is unfinished "
                  f"({state}; {len(left)} host(s) not moved: {', '.join(left) or 'none'}): "
                  f"`dsas rollout {run.image} {hint}` goes on with it, `dsas rollout "
                  f"{run.image} --abandon` ends it" + ("" if run.image == image else
                                                       f" (before a rollout of {image})"),
                  [])


def _unfinished_of(rs: RolloutStore | None, image: str) -> RolloutRun:
    run = rs.unfinished() if rs is not None else None
    if run is None or run.image != image:
        fail_problems(f"no unfinished rollout of image {image}: nothing to resume or "
                      "abandon", [])
    assert run is not None
    return run


def _resumed_of(rs: RolloutStore, store: StateStore, image: str, images: ImageStore,
                write: bool = True
                ) -> tuple[int, str, tuple[str, ...], list[list[str]], dict[str, str]]:
    """The unfinished run of ``image`` (``--resume``): its id, version, the hosts left
    and its batches. A host it was moving is done when its ready report since names the
    version; else it is moved again (its pin back to the version it had). The last item:
    the pins the plan sees."""
    run = _unfinished_of(rs, image)

    def reported(host: str, since: float) -> bool:
        for r in events.outcomes_since(store, host, since):
            name, _, v = (r.image or "").partition("@")
            if r.stage == "ready" and name == image and v and (
                    v == run.version or images.resolve(image, v) == run.version):
                return True
        return False

    moving = [(h.host, h.at) for h in run.hosts if h.outcome == "moving"]
    done, redo = rrun.check_moving(moving, reported)
    left = tuple(h.host for h in run.hosts if h.outcome == "pending") + tuple(redo)
    frm = {h.host: h.from_version for h in run.hosts}
    for h in done:
        click.echo(f"{h}: was moving; its ready report names {run.version}: done", err=True)
        if write:
            rs.host(run.id, h, "done", f"on {run.version} (its ready report, seen by "
                    "--resume)")
    _redo(rs, run, redo, write)
    pins = rs.pins(image)
    for h in redo:  # as written above (not written by a dry run)
        pins.pop(h, None)
        if frm[h] != run.previous:
            pins[h] = frm[h]
    return run.id, run.version, left, list(run.plan.get("batches", [])), pins


def _redo(rs: RolloutStore, run: RolloutRun, redo: list[str], write: bool) -> None:
    """The hosts moved again: pending, pinned back to the version they had."""
    frm = {h.host: h.from_version for h in run.hosts}
    for h in redo:
        click.echo(f"{h}: was moving; no ready report on {run.version}: moved again",
                   err=True)
        if not write:
            continue
        if frm[h] == run.previous:
            rs.unpin(run.image, [h])
        else:
            rs.pin(h, run.image, frm[h], run.id)
        rs.host(run.id, h, "pending", "was moving when the rollout stopped: moved again")


def _abandon(image: str, inventory_path: str | None, state_dir: str, cfg: SshConfig,
             timeout: float) -> None:
    """End the unfinished run of ``image`` where it is: its drains lifted, recorded."""
    store = StateStore(state_dir) if (Path(state_dir) / FILENAME).exists() else None
    try:
        rs = RolloutStore(store) if store is not None else None
        run = _unfinished_of(rs, image)
        assert rs is not None and store is not None
        edit = start(inventory_path)
        inv = loads(edit.snap.text, str(edit.path))
        ensure_client_key(cfg)
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)
        lifted, why = rrun.lift_drains(LivePools(inv, cfg, store, timeout=timeout), run.id,
                                       [h.host for h in run.hosts])
        if why is not None:
            fail_problems(f"rollout {run.id}: the directors refused to lift its drains "
                          f"({', '.join(lifted)}): {why}; it stays unfinished", [])
        for h in run.hosts:
            if h.outcome in ("pending", "moving"):
                rs.host(run.id, h.host, "not-run", "the rollout was abandoned")
        rs.finish(run.id, "abandoned")
    finally:
        if store is not None:
            store.close()
    click.echo(f"rollout {run.id} of image {image}: abandoned"
               + (f"; drains lifted on {', '.join(lifted)}" if lifted else ""))


def _paused_of(rs: RolloutStore | None, image: str
               ) -> tuple[int, str, tuple[str, ...], list[list[str]]]:
    """The paused run of ``image``: its id, version, pending hosts and later batches."""
    last = rs.last(image, outcome="paused") if rs is not None else None
    if last is None:
        fail_problems(f"no paused rollout of image {image}: nothing to continue", [])
    assert last is not None
    pending = tuple(h.host for h in last.hosts if h.outcome == "pending")
    return last.id, last.version, pending, list(last.plan.get("batches", [])[1:])


def _confirm(p: rplan.Plan) -> None:
    if not sys.stdin.isatty():
        fail_problems("not confirmed (no terminal to ask on): use --yes, or --dry-run to "
                      "only see the plan", [])
    if not click.confirm(f"move {len(p.moves)} host(s) to {p.image}@{p.version}?",
                         default=False):
        fail_problems("not confirmed: nothing changed", [])


def _execute(p: rplan.Plan, inv: Inventory, cfg: SshConfig, state_dir: str,
             where: tuple[str, int | None],
             t: rrun.Timeouts, settings: tuple[str, str | None, str | None, float, bool],
             as_json: bool) -> tuple[rrun.Result, int, float]:
    """Record the run, run its batches, record the end."""
    disk_root, reboot, reapply, timeout, trust_reported = settings
    boot_root, paused = where
    store = StateStore(state_dir)
    try:
        rs = RolloutStore(store)
        me = rowner.me()
        if paused is not None:
            run_id = paused
            rs.resume(run_id, me)
        else:
            run_id = rs.start(p.image, p.version, p.previous, p.back, p.as_json(),
                              [(h, i, p.move(h).current) for i, b in enumerate(p.batches)
                               for h in b], me)
        nodes = LiveNodes(inv, cfg, store, ImageStore(layout.image_store(boot_root)),
                          disk_root=disk_root, timeout=timeout, trust_reported=trust_reported)
        nodes.reboot = reboot or nodes.reboot
        nodes.reapply = reapply or nodes.reapply
        pools = LivePools(inv, cfg, store, timeout=timeout)
        t0 = time.monotonic()
        if paused is not None:  # a killed run's drains: lifted before it goes on
            lifted, why = rrun.lift_drains(pools, run_id,
                                           [h.host for h in rs.run(run_id).hosts])
            if lifted:
                click.echo(f"drains of run {run_id} lifted: {', '.join(lifted)}"
                           + (f" (the directors refused: {why})" if why else ""),
                           err=as_json)
        stop: list[str] = []
        old = {sig: signal.signal(sig, _on_stop(stop, as_json))
               for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            res = rrun.run(p, pools, nodes, rs, run_id, t,
                           say=lambda s: click.echo(s, err=as_json), stop=lambda: bool(stop))
        except BaseException:
            rs.finish(run_id, "failed")
            raise
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            nodes.close()
        rs.finish(run_id, res.outcome)
    finally:
        store.close()
    return res, run_id, time.monotonic() - t0


def _on_stop(stop: list[str], as_json: bool) -> Any:
    """SIGINT/SIGTERM: stop after the batch being moved (its hosts are mid-move)."""
    def handler(sig: int, _frame: object) -> None:
        if not stop:
            click.echo(f"{signal.Signals(sig).name}: stopping after this batch "
                       "(`dsas rollout IMAGE --resume` goes on)", err=True)
        stop.append(signal.Signals(sig).name)
    return handler


def _catch_up(p: rplan.Plan, res: rrun.Result, inventory_path: str | None, state_dir: str,
              run_id: int, as_json: bool) -> int | None:
    """Once every host of the image is on the version: the inventory says it, and the
    pins go. The revision written, or None."""
    if res.outcome != "done" or not p.inventory_after or res.failed:
        return None
    edit = start(inventory_path)
    apply(edit, lambda d: set_image_version(d, p.image, p.version))
    validated(edit)
    command = shlex.join(["rollout", f"{p.image}@{p.version}", f"(run {run_id})"])
    saved = sys.stdout
    if as_json:
        sys.stdout = sys.stderr  # keep stdout one JSON document
    try:
        rev = finish(edit, command, state_dir, quiet_diff=True)
    finally:
        sys.stdout = saved
    store = StateStore(state_dir)
    try:
        RolloutStore(store).unpin(p.image)
    finally:
        store.close()
    return rev


def set_image_version(doc: Document, image: str, version: str) -> None:
    """``images.IMAGE.version: VERSION`` in the inventory's tree (comments kept)."""
    images = doc.data.get("images") if isinstance(doc.data, dict) else None
    entry = images.get(image) if isinstance(images, dict) else None
    if not isinstance(entry, dict):
        raise EditError([f"images.{image}: not a mapping in the inventory"])
    entry["version"] = version


def _report(p: rplan.Plan, res: rrun.Result, run_id: int, rev: int | None, took: float,
            out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.update({"run": run_id, "outcome": res.outcome, "why": res.why,
                    "moved": res.moved, "failed": res.failed, "not_run": res.not_run,
                    "pending": res.pending, "owner": vars(rowner.me()),
                    "live": False,  # this dsas drove it, and it has ended
                    "inventory_revision": rev, "seconds": round(took, 3),
                    "host_seconds": {h: round(s, 3) for h, s in res.seconds.items()}})
        click.echo(json.dumps(out, indent=2))
    if res.outcome == "paused":
        click.echo(f"rollout {run_id}: paused after the canary ({', '.join(res.moved)} on "
                   f"{p.image}@{p.version}); `dsas rollout {p.image} --continue` moves "
                   f"{', '.join(res.pending)}", err=as_json)
        return
    if res.outcome == "interrupted":
        click.echo(f"error: rollout {run_id} interrupted: {res.why}; moved: "
                   f"{', '.join(res.moved) or 'none'}; `dsas rollout {p.image} --resume` "
                   f"moves {', '.join(res.pending)}, `--abandon` leaves them", err=True)
        sys.exit(1)
    if res.outcome == "done" and not res.failed:
        click.echo(f"rollout {run_id}: {len(res.moved)} host(s) on {p.image}@{p.version} "
                   f"in {took:.1f} s" + (f"; inventory revision {rev}" if rev else ""),
                   err=as_json)
        return
    failed = "; ".join(f"{h}: {w}" for h, w in res.failed.items())
    click.echo(f"error: rollout {run_id} {res.outcome}: {res.why or failed}; "
               f"moved: {', '.join(res.moved) or 'none'}; failed hosts are out of their "
               f"pools (`dsas rollout {p.image} --back` returns the moved hosts)", err=True)
    sys.exit(1)


def _show_history(state_dir: str, as_json: bool) -> None:
    runs: list[RolloutRun] = _read_runs(state_dir, lambda rs: rs.runs(), [])
    if as_json:
        click.echo(json.dumps([{**r.as_json(), "live": rowner.live(r)} for r in runs],
                              indent=2))
        return
    if not runs:
        click.echo(f"no rollout recorded in {state_dir}")
    for r in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started))
        state = state_text(r.outcome, vars(r.owner) if r.owner else None, rowner.live(r))
        click.echo(f"run {r.id} {when} {r.user}: {r.image} {r.previous} -> {r.version}"
                   f"{' (back)' if r.back else ''}: {state}")
        for h in r.hosts:
            click.echo(f"  batch {h.batch + 1} {h.host}: {h.from_version} -> {h.to_version}"
                       f" {h.outcome}" + (f" ({h.detail})" if h.detail else ""))
