"""`dsas-push` (deploy a tree to hosts), `dsas push log` and `dsas trust HOST`.

The logic lives in ``provision.push``; this module parses options, picks
the targets, asks for confirmation, prints the summary and sets the exit code:
0 every target ok, 1 some failed (named on stderr), 2 usage error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TextIO

import click

from ..inventory.model import Inventory
from ..push import fanout, multicast
from ..push.options import DEFAULT_KEEP, DEFAULT_TO, PushOptions, default_parallel
from ..push.progress import human_bytes, reporter_for
from ..push.push import Pusher
from ..push.release import local_manifest
from ..push.targets import Target, select_targets
from ..sshtrust.hostkeys import TrustPlan, plan_trust, trusted_keys, untrustworthy
from ..sshtrust.sshconf import (
    DEFAULT_PORT,
    SshConfig,
    add_known_host,
    ensure_client_key,
    fingerprint,
    parse_key_lines,
    scan_host_keys,
)
from ..state import StateStore
from ..state.events import ReportedKey, reported_keys
from ..state.pushes import History, HostResult
from .common import (
    OneLineErrors,
    fail,
    inventory_option,
    load_inventory,
    make_ssh,
    setup_logging,
    ssh_options,
    state_dir_option,
    table,
)


def open_history(state_dir: str) -> History:
    """The push history in ``<state-dir>/state.db``."""
    return History(StateStore(Path(state_dir)))


@click.command(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"],
                                                     "max_content_width": 100})
@click.argument("src", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--to", "to", default=DEFAULT_TO, show_default=True,
              help="Live path on the nodes (a symlink to <to>.releases/<id>).")
@click.option("--role", "-r", "roles", multiple=True, help="All hosts of this role (repeatable).")
@click.option("--host", "-H", "hosts", multiple=True, help="This host (repeatable).")
@click.option("--all", "all_hosts", is_flag=True, help="Every host of the inventory.")
@click.option("--parallel", "-j", type=click.IntRange(1, 256), default=None,
              help=f"Hosts at a time (default {default_parallel()} on this machine).")
@click.option("--dry-run", "-n", is_flag=True, help="Show what would move; change nothing.")
@click.option("--delete", is_flag=True,
              help="Files gone from SRC are gone from the new release (else carried over).")
@click.option("--exclude", "excludes", multiple=True, help="rsync exclude pattern (repeatable).")
@click.option("--checksum", "-c", is_flag=True, help="Compare files by content, not size+mtime.")
@click.option("--then", "then", default=None,
              help="Shell command run on each node after its switch (cwd: the live path).")
@click.option("--keep", type=click.IntRange(1, 1000), default=DEFAULT_KEEP, show_default=True,
              help="Releases kept per node (older ones are pruned; the live one never).")
@click.option("--transport", type=click.Choice(["auto", "paramiko", "ssh"]), default="auto",
              show_default=True,
              help="rsync's carrier: the remote steps' paramiko connection (one login per "
                   "node), a second, OpenSSH connection (faster for big transfers), or auto: "
                   "OpenSSH for a node's first push, paramiko for updates. paramiko needs "
                   "pidfd_getfd (Linux 5.6); where it is refused, OpenSSH is used and the "
                   "log says why.")
@click.option("--transfer", type=click.Choice(["auto", "rsync", "uftp", "fanout"]),
              default="auto", show_default=True,
              help="What carries the changed files: rsync to each node, one uftp multicast "
                   "session to all nodes (uftpd started on each over SSH; rsync then completes "
                   "and verifies each node as usual), or fanout: the master rsyncs to "
                   "--fanout-width nodes and each node holding the verified release rsyncs it "
                   "to the next ones over SSH (needs --delete; a node whose parent failed gets "
                   "it from the master). auto: uftp from --uftp-min-nodes targets.")
@click.option("--fanout-width", type=click.IntRange(1, 1000), default=fanout.DEFAULT_WIDTH,
              show_default=True,
              help="With --transfer fanout: nodes the master feeds, and children per node.")
@click.option("--uftp-min-nodes", type=click.IntRange(1), default=multicast.DEFAULT_MIN_NODES,
              show_default=True, help="With --transfer auto: use uftp from this many targets.")
@click.option("--uftp-interface", default=None,
              help="Interface (name or address) the master multicasts from (uftp -I).")
@click.option("--uftp-group", default=multicast.DEFAULT_GROUP, show_default=True,
              help="Multicast group (sent with TTL 1: it stays on the link).")
@click.option("--uftp-port", type=click.IntRange(1, 65535), default=multicast.DEFAULT_PORT,
              show_default=True, help="UDP port of the uftp sessions.")
@click.option("--uftp-rate", type=click.IntRange(100), default=multicast.DEFAULT_RATE_KBPS,
              show_default=True, help="uftp's send rate in kbit/s.")
@click.option("--uftp-block", type=click.IntRange(512, 8800), default=multicast.DEFAULT_BLOCK,
              show_default=True, metavar="BYTES",
              help="Data bytes per uftp packet (uftp -b). The default fits a 1500-byte MTU "
                   "with uftp's headers and encryption (about 87 bytes); up to 8800 on a "
                   "segment with jumbo frames, fewer bytes of headers per byte sent.")
@click.option("--agent-wait", type=click.FloatRange(0.5, 3600), default=30.0,
              show_default=True, metavar="SECONDS",
              help="How long after a uftp session the nodes' push agents (push: {agent: "
                   "true}) have to report their switch; a node without a good report by "
                   "then is done over SSH.")
@click.option("--no-prelink", is_flag=True, hidden=True,
              help="Always --link-dest, never cp -al (for comparisons).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.option("--rollback", is_flag=True, help="Switch the targets back to their previous release.")
@click.option("--status", is_flag=True, help="Drift report: the live release of each target.")
@click.option("--retry-failed", is_flag=True,
              help="Retry only the hosts that failed in the last push to --to.")
@click.option("--rolling", type=click.IntRange(1, 10000), default=None, metavar="N",
              help="N hosts at a time, each batch out of the balancers while it changes: "
                   "drained (weight 0 on the directors, 0 active connections), pushed, "
                   "then back in its pools once keepalived's health check passes. A failed "
                   "batch stops the rollout.")
@click.option("--drain", "drain_flag", is_flag=True, help="Same as --rolling 1.")
@click.option("--drain-timeout", type=click.FloatRange(0, 3600), default=30, show_default=True,
              help="With --rolling: seconds to wait for a batch's connections to reach 0.")
@click.option("--check-timeout", type=click.FloatRange(1, 3600), default=120,
              show_default=True,
              help="With --rolling: seconds to wait for a batch to be back in its pools.")
@inventory_option
@ssh_options
@click.option("--json", "as_json", is_flag=True, help="With --status: the report as JSON.")
@click.option("--verbose", "-v", count=True)
@click.option("--quiet", "-q", is_flag=True)
def push_cmd(src: str | None, to: str, roles: tuple[str, ...], hosts: tuple[str, ...],
             all_hosts: bool, parallel: int | None, dry_run: bool, delete: bool,
             excludes: tuple[str, ...], checksum: bool, then: str | None, keep: int,
             transport: str, transfer: str, fanout_width: int, uftp_min_nodes: int,
             uftp_interface: str | None,
             uftp_group: str, uftp_port: int, uftp_rate: int, uftp_block: int,
             agent_wait: float,
             no_prelink: bool, yes: bool,
             rollback: bool, status: bool, retry_failed: bool, rolling: int | None,
             drain_flag: bool, drain_timeout: float, check_timeout: float,
             inventory_path: str | None,
             state_dir: str, user: str, port: int, identity: str | None, as_json: bool,
             verbose: int, quiet: bool) -> None:
    """Deploy the tree SRC to hosts: in parallel, atomically per host, verified.

    \b
    dsas-push SRC --role web [--to /srv/site]     push to every web host
    dsas-push --status --all                       which release each host serves
    dsas-push --rollback --host w101               back to the previous release
    dsas-push --retry-failed                       again, only where the last push failed

    Targets are explicit: give --all, --role or --host (a retry defaults to the
    hosts that failed).

    Each host gets SRC in <to>.releases/<id> beside the live path, which is a
    symlink switched by rename only after the copy is verified (entry count and
    SHA-256 of its listing against the master's). With --delete, an update
    starts each host's new release as hard links of the release it serves (or
    a recent one it has), and rsync visits only the names that differ from it;
    a host whose release was changed behind dsas's back gets a full rsync.
    """
    setup_logging(verbose, quiet)
    _check_modes(src, rollback, status, retry_failed)
    inv = load_inventory(inventory_path)
    ssh = make_ssh(state_dir, user, port, identity)
    history = open_history(state_dir)
    pusher = Pusher(ssh, history, reporter_for(sys.stderr))
    par = parallel or default_parallel()
    mcast = _mcast(uftp_interface, uftp_group, uftp_port, uftp_rate, uftp_block, agent_wait)
    opts: PushOptions | None = None
    release: str | None = None
    if retry_failed:
        targets, opts, release = _retry_plan(history, inv, to, src, roles, hosts, all_hosts)
        opts.parallel, opts.dry_run, opts.transport = par, dry_run, transport
        opts.prelink = not no_prelink
        opts.transfer, opts.uftp_min_nodes, opts.mcast = transfer, uftp_min_nodes, mcast
        opts.fanout_width = fanout_width
    else:
        targets = select_targets(inv, roles, hosts, all_hosts)
        if src is not None:  # a push (not --rollback, --status)
            opts = PushOptions(src, to, delete, list(excludes), checksum, then, keep,
                               dry_run, par, transport, not no_prelink, transfer,
                               uftp_min_nodes, mcast, fanout_width)
    if as_json and not status:
        raise click.UsageError("--json goes with --status")
    if status:
        sys.exit(_status(pusher, targets, to, par, as_json))
    _confirm(targets, rollback, src or (opts.src if opts else ""), to, dry_run or yes)
    ensure_client_key(ssh)
    if rollback:
        outcome = pusher.rollback(targets, to, par)
    else:
        assert opts is not None
        if (rolling or drain_flag) and not dry_run:
            _rolling(inv, ssh, state_dir, pusher, targets, opts, rolling or 1, drain_timeout,
                     check_timeout, release, "retry" if retry_failed else "push")
            return
        outcome = pusher.push(targets, opts, release=release,
                              action="retry" if retry_failed else "push")
    _summary(outcome.results, outcome.release, dry_run)


def _rolling(inv: Inventory, ssh: SshConfig, state_dir: str, pusher: Pusher,
             targets: list[Target], opts: PushOptions, n: int, drain_timeout: float,
             check_timeout: float, release: str | None, action: str) -> None:
    """--rolling N: batches drained, pushed and put back (balancer.rolling)."""
    from ..balancer import members as lbmembers
    from ..balancer import rolling
    from ..push.release import new_release_id

    rid = release or new_release_id()
    results: list[HostResult] = []

    def push(batch: list[Target]) -> list[tuple[str, bool, str]]:
        out = pusher.push(batch, opts, release=rid, action=action)
        results.extend(out.results)
        return [(r.host, r.ok, r.reason) for r in out.results]

    store = StateStore(Path(state_dir))
    try:
        pools = rolling.LivePools(inv, ssh, store, timeout=120)
        ro = rolling.run(lambda h, ov: lbmembers.roles_in(inv, h, ov), pools, targets, n,
                         push, drain_timeout, check_timeout,
                         say=lambda m: click.echo(m, err=True))
    finally:
        store.close()
    if results:
        try:
            _summary(results, rid, False)
        except SystemExit:
            pass
    if ro.stopped:
        click.echo(f"error: rolling push stopped: {ro.stopped}"
                   + (f"; not pushed: {', '.join(ro.not_pushed)}" if ro.not_pushed else ""),
                   err=True)
        sys.exit(1)


def _mcast(interface: str | None, group: str, port: int, rate: int, block: int,
           agent_wait: float) -> multicast.McastConfig:
    try:
        return multicast.McastConfig(interface, group, port, rate, block=block,
                                     agent_wait=agent_wait)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def _check_modes(src: str | None, rollback: bool, status: bool, retry_failed: bool) -> None:
    """At most one of --rollback, --status and --retry-failed, and SRC where it belongs."""
    if sum([rollback, status, retry_failed]) > 1:
        raise click.UsageError("--rollback, --status and --retry-failed exclude each other")
    if not (rollback or status or retry_failed) and src is None:
        raise click.UsageError("SRC is required (or --rollback / --status / --retry-failed)")
    if (rollback or status) and src is not None:
        raise click.UsageError("SRC makes no sense with --rollback or --status")


def _confirm(targets: list[Target], rollback: bool, src: str, to: str, unasked: bool) -> None:
    """Ask on a terminal before anything changes (not with --dry-run or --yes)."""
    if not unasked and sys.stdin.isatty():
        what = "roll back" if rollback else f"push {src} to"
        names = ", ".join(t.name for t in targets)
        click.confirm(f"{what} {to} on {len(targets)} host(s): {names}?", abort=True)


def _status(pusher: Pusher, targets: list[Target], to: str, par: int, as_json: bool) -> int:
    """The drift report. A host whose state could not be read is *unreachable*, not
    drift: its release is unknown. Exit 1 when any host is not current."""
    rows = pusher.status(targets, to, par)
    unreachable = [r[0] for r in rows if r[2].startswith("unreachable")]
    drift = [r[0] for r in rows if r[2] != "current" and r[0] not in unreachable]
    if as_json:
        hosts = []
        for name, live, verdict, kept in rows:
            state, _, reason = verdict.partition(" (")
            if state.startswith("unreachable"):
                state, reason = "unreachable", verdict
            hosts.append({"host": name, "live": None if live == "-" else live,
                          "state": state.rstrip(":"), "reason": reason.rstrip(")") or None,
                          "releases": kept})
        click.echo(json.dumps({"to": to, "hosts": hosts, "drift": drift,
                               "unreachable": unreachable}, indent=2))
        return 1 if drift or unreachable else 0
    click.echo(table(["host", "live release", "state", "releases"], rows))
    if drift:
        click.echo(f"drift: {len(drift)} host(s) not current: {', '.join(drift)}", err=True)
    if unreachable:
        click.echo(f"unreachable: {len(unreachable)} host(s): {', '.join(unreachable)}",
                   err=True)
    return 1 if drift or unreachable else 0


def _retry_plan(history: History, inv: Inventory, to: str, src: str | None,
                roles: tuple[str, ...], hosts: tuple[str, ...], all_hosts: bool
                ) -> tuple[list[Target], PushOptions, str | None]:
    last = history.last_push(os.path.normpath(to))
    if last is None:
        raise click.UsageError(f"no push to {to} recorded: nothing to retry")
    failed = [r["host"] for r in history.results(last["id"]) if r["result"] != "ok"]
    if not failed:
        click.echo(f"run {last['id']}: every host succeeded, nothing to retry")
        sys.exit(0)
    if roles or hosts or all_hosts:
        chosen = {t.name for t in select_targets(inv, roles, hosts, all_hosts)}
        failed = [h for h in failed if h in chosen]
    targets = select_targets(inv, (), [h for h in failed if h in inv.hosts], False)
    rec = json.loads(last["options"])
    src = src or last["src"]
    opts = PushOptions(src, last["to_path"], bool(rec.get("delete")),
                       list(rec.get("excludes", [])), bool(rec.get("checksum")), rec.get("then"),
                       int(rec.get("keep", DEFAULT_KEEP)))
    now = local_manifest(src, opts.excludes)
    same = last["manifest"] == f"{now.entries} {now.digest}"
    if not same:
        click.echo(f"{src} changed since run {last['id']}: retrying as a new release", err=True)
    return targets, opts, (last["release"] if same else None)


def _summary(results: list[HostResult], release: str | None, dry_run: bool) -> None:
    rows = [[r.host, "ok" if r.ok else "FAILED", human_bytes(r.bytes), f"{r.seconds:.1f}",
             r.reason or (f"live {r.release}" if r.release else "")] for r in results]
    click.echo(table(["host", "result", "bytes" if not dry_run else "would move", "seconds",
                      "reason"], rows))
    failed = [r.host for r in results if not r.ok]
    ok = len(results) - len(failed)
    tail = f" release {release}" if release and not dry_run else ""
    click.echo(f"{ok}/{len(results)} ok{tail}" + (" (dry run)" if dry_run else ""))
    if failed:
        click.echo(f"failed: {', '.join(failed)}", err=True)
        sys.exit(1)


def main() -> None:
    push_cmd(prog_name="dsas-push")


# -- `dsas push log` and `dsas trust` ---------------------------------------------------------


@click.group("push")
def push_group() -> None:
    """Push history (the pushes themselves: dsas-push)."""


@push_group.command("log")
@state_dir_option
@click.option("--limit", "-n", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option("--run", "run_id", type=int, default=None, help="Show one run, host by host.")
@click.option("--to", "to", default=None, help="Only runs to this live path.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
def push_log(state_dir: str, limit: int, run_id: int | None, to: str | None,
             as_json: bool) -> None:
    """Past pushes, rollbacks and retries: when, who, what, where, results."""
    history = open_history(state_dir)
    if run_id is not None:
        run = history.run(run_id)
        if run is None:
            fail(f"no run {run_id}")
            return
        if as_json:
            click.echo(json.dumps({**run, "results": history.results(run_id)}, indent=2,
                                  default=str))
            return
        click.echo(f"run {run_id}: {run['action']} {run['src'] or ''} -> {run['to_path']} "
                   f"release {run['release'] or '-'} by {run['user']}"
                   + (f"; multicast {human_bytes(run['mcast_bytes'])} once"
                      if run.get("mcast_bytes") else ""))
        rows = [[r["host"], r["result"], r["previous"] or "-", r["release"] or "-",
                 human_bytes(r["bytes"]), f"{r['seconds']:.1f}", r["reason"]]
                for r in history.results(run_id)]
        click.echo(table(["host", "result", "before", "after", "bytes", "seconds", "reason"],
                         rows))
        return
    runs = history.runs(limit, os.path.normpath(to) if to else None)
    if as_json:
        click.echo(json.dumps({"runs": runs}, indent=2, default=str))
        return
    rows = [[r["id"], _when(r["started"]), r["user"], r["action"], r["src"] or "-",
             r["to_path"], r["release"] or "-", f"{r['ok']}/{r['ok'] + r['failed']}",
             human_bytes(r["mcast_bytes"]) if r.get("mcast_bytes") else "-"]
            for r in runs]
    click.echo(table(["run", "started", "user", "action", "src", "to", "release", "ok",
                      "multicast"], rows))


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.command("trust")
@click.argument("host", required=False)
@inventory_option
@state_dir_option
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--key-file", type=click.File("r"), default=None,
              help="Public host key(s) of the node (a *.pub file, or '-'), instead of a scan.")
@click.option("--from-boot-report", is_flag=True,
              help="The key HOST sent in its ready report (dsas serve's HTTP API), "
                   "instead of a scan.")
@click.option("--all-reported", is_flag=True,
              help="Every inventory host that reported a key (implies --from-boot-report).")
@click.option("--replace", is_flag=True,
              help="Accept a reported key that differs from the trusted one "
                   "(the node was reinstalled): the host's trusted keys become "
                   "exactly the reported ones, the old install's of other types go.")
@click.option("--yes", "-y", is_flag=True, help="Trust without asking.")
def trust(host: str | None, inventory_path: str | None, state_dir: str, port: int,
          key_file: TextIO | None, from_boot_report: bool, all_reported: bool, replace: bool,
          yes: bool) -> None:
    """Trust HOST's SSH host key(s) for dsas-push: scan them (or take them from a file
    or from the node's boot report), show the fingerprints, and add them to dsas's
    known_hosts. A reported key that differs from the trusted one is refused
    unless --replace."""
    inv = load_inventory(inventory_path)
    ssh = SshConfig(Path(state_dir), port=port)
    if all_reported or from_boot_report:
        if key_file is not None:
            raise click.UsageError("--key-file and --from-boot-report exclude each other")
        if all_reported == (host is not None):
            raise click.UsageError("give HOST with --from-boot-report, or --all-reported alone")
        _trust_reported(inv, ssh, state_dir, host, replace, yes)
        return
    if host is None:
        raise click.UsageError("HOST is required (or --all-reported)")
    if host not in inv.hosts:
        raise click.UsageError(f"unknown host {host!r}")
    address = str(inv.hosts[host].primary_interface.address)
    keys = parse_key_lines(key_file.read()) if key_file else scan_host_keys(address, port)
    if not keys:
        fail(f"{host} ({address}:{port}): no host key " +
             ("in the file" if key_file else "answered the scan"))
    for ktype, blob in keys:
        click.echo(f"{host} {address}:{port} {ktype} {fingerprint(blob)}")
    if not yes and not click.confirm("trust these keys?", default=False):
        fail("not trusted")
    n = add_known_host(ssh, address, keys)
    click.echo(f"{n} key(s) of {host} trusted in {ssh.known_hosts}")


def _trustworthy(inv: Inventory, reports: list[ReportedKey]
                 ) -> tuple[dict[str, list[ReportedKey]], list[str]]:
    """The reported keys of inventory hosts by host, and the hosts whose report is not
    from the host itself (each refused key is shown)."""
    by_host: dict[str, list[ReportedKey]] = {}
    forged: list[str] = []
    for r in reports:
        if r.host not in inv.hosts:
            continue
        why = untrustworthy(r, inv)
        if why is not None:
            click.echo(f"{r.host} {r.key_type} {fingerprint(r.key)} REFUSED: {why}", err=True)
            if r.host not in forged:
                forged.append(r.host)
            continue
        by_host.setdefault(r.host, []).append(r)
    return by_host, forged


def _trust_plans(inv: Inventory, ssh: SshConfig, by_host: dict[str, list[ReportedKey]],
                 replace: bool) -> tuple[dict[str, tuple[str, TrustPlan]], list[str]]:
    """What to add to known_hosts per host (each key is shown with its state), and the
    hosts refused because their trusted key changed (without --replace)."""
    plans: dict[str, tuple[str, TrustPlan]] = {}
    refused: list[str] = []
    for name, rows in by_host.items():
        address = str(inv.hosts[name].primary_interface.address)
        plan = plan_trust([(r.key_type, r.key) for r in rows], trusted_keys(ssh, address))
        for r in rows:
            state = ("already trusted" if (r.key_type, r.key) in plan.same else
                     "new" if (r.key_type, r.key) in plan.new else "CHANGED")
            click.echo(f"{name} {address}:{ssh.port} {r.key_type} {fingerprint(r.key)} {state} "
                       f"(reported {_when(r.ts)} from {r.address or '?'})")
        for ktype, _, old in plan.changed:
            click.echo(f"  {name}: the trusted {ktype} key was {fingerprint(old)}", err=True)
        for ktype, blob in plan.dropped:
            click.echo(f"  {name}: its {ktype} key {fingerprint(blob)} was not reported "
                       f"(the old install's){': no longer trusted' if replace else ''}",
                       err=True)
        if plan.changed and not replace:
            refused.append(name)
        elif plan.new or plan.changed:
            plans[name] = (address, plan)
    return plans, refused


def _trust_reported(inv: Inventory, ssh: SshConfig, state_dir: str, host: str | None,
                    replace: bool, yes: bool) -> None:
    if host is not None and host not in inv.hosts:
        raise click.UsageError(f"unknown host {host!r}")
    reports = reported_keys(StateStore(Path(state_dir)), host)
    if host is not None and not reports:
        fail(f"{host}: no SSH host key in its boot reports (the node sends "
             "/etc/ssh/ssh_host_ed25519_key.pub when it reports ready)")
    by_host, forged = _trustworthy(inv, reports)
    plans, refused = _trust_plans(inv, ssh, by_host, replace)
    if plans and not yes and not click.confirm("trust these keys?", default=False):
        fail("not trusted")
    for name, (address, plan) in plans.items():
        add_known_host(ssh, address, plan.keys)
        click.echo(f"{len(plan.new) + len(plan.changed)} key(s) of {name} trusted "
                   f"in {ssh.known_hosts}")
    if forged:
        fail(f"reported key not trusted, not from the host itself: {', '.join(forged)} "
             "(see above; `dsas trust HOST` scans the key instead)")
    if not by_host:
        fail("no inventory host has reported an SSH host key")
    if refused:
        fail(f"reported key differs from the trusted one, not trusted: {', '.join(refused)} "
             "(check the node; --replace if it was reinstalled)")
