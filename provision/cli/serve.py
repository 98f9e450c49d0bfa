"""`dsas serve`: run the master's DHCP, TFTP, HTTP and DNS services."""

from __future__ import annotations

import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ..inventory import resolve_path
from ..inventory.model import Inventory
from ..services.base import DEFAULT_SERVICES, SERVICE_NAMES, ServeContext
from ..services.servepid import ServePidFile
from ..services.supervisor import Supervisor, create_services
from ..state.inventory import sha256
from .common import fail, inventory_option, load_inventory, setup_logging

log = logging.getLogger("provision.serve")


def _services(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    bad = [n for n in names if n not in SERVICE_NAMES]
    if bad or not names:
        raise click.BadParameter(
            f"unknown service(s) {', '.join(bad) or '(none)'}; choose from "
            f"{', '.join(SERVICE_NAMES)}"
        )
    return names


@click.command()
@inventory_option
@click.option("--interface", "-I", "interfaces", multiple=True, metavar="IF",
              help="Serve on this interface (repeatable). DHCP binds to each.")
@click.option("--only", default=",".join(DEFAULT_SERVICES), show_default=True,
              metavar="LIST", help="Comma-separated services to run.")
@click.option("--state-dir", type=click.Path(file_okay=False), default="/var/lib/dsas",
              show_default=True, help="Leases, discovered machines, node events (sqlite).")
@click.option("--boot-root", type=click.Path(file_okay=False), default="/srv/dsas/boot",
              show_default=True, help="Root of the boot tree (loaders, image store).")
@click.option("--bind", "bind_address", default=None, metavar="ADDR",
              help="Address to serve on (default: the inventory's master_address).")
@click.option("--http-port", type=click.IntRange(1, 65535), default=None,
              help="HTTP port (default: the inventory's http_port, 80).")
@click.option("--http-max-connections", type=click.IntRange(1, 1_000_000), default=512,
              show_default=True,
              help="Open HTTP connections at most; one more is closed at once (counted).")
@click.option("--http-max-per-client", type=click.IntRange(1, 1_000_000), default=64,
              show_default=True, help="Open HTTP connections from one address at most.")
@click.option("--http-header-timeout", type=click.FloatRange(0.5, 600), default=10.0,
              show_default=True, help="Seconds an HTTP client may take to send a request head.")
@click.option("--http-idle-timeout", type=click.FloatRange(0.5, 3600), default=30.0,
              show_default=True,
              help="Seconds a keep-alive HTTP connection may wait between requests.")
@click.option("--http-event-rate", type=click.FloatRange(0.01, 10000), default=2.0,
              show_default=True,
              help="Boot reports per second one address may post (after the burst); "
                   "more get 429.")
@click.option("--http-event-burst", type=click.IntRange(1, 100000), default=20,
              show_default=True, help="Boot reports one address may post at once.")
@click.option("--http-events-per-host", type=click.IntRange(1, 1_000_000), default=100,
              show_default=True,
              help="Boot events kept per host (the newest, plus the last of each stage).")
@click.option("--tftp-port", type=click.IntRange(1, 65535), default=69, show_default=True)
@click.option("--tftp-max-transfers", type=click.IntRange(1, 4096), default=128,
              show_default=True,
              help="Concurrent TFTP transfers (a process each, or on the batched engine); more "
                   "get ERROR 0 \"busy\".")
@click.option("--tftp-max-per-client", type=click.IntRange(1, 4096), default=8,
              show_default=True,
              help="Concurrent TFTP transfers per client address; more get ERROR 0 \"busy\".")
@click.option("--tftp-timeout", type=click.FloatRange(1, 300), default=5.0, show_default=True,
              help="Seconds without progress before a TFTP transfer is abandoned; also the "
                   "largest RFC 2349 timeout a client may ask for (a larger one is declined).")
@click.option("--tftp-busy-poll", type=click.IntRange(0, 10000), default=50,
              show_default=True, metavar="US",
              help="Microseconds a TFTP transfer polls for the next ACK before sleeping, "
                   "while fewer transfers run than there are CPUs (0: never poll).")
@click.option("--tftp-batch/--no-tftp-batch", default=True, show_default=True,
              help="Serve TFTP storms from one batched process (recvmmsg/sendmmsg, one "
                   "socket): lock-step octet transfers of files on disk, once "
                   "--tftp-batch-from transfers run; the others get a process each.")
@click.option("--tftp-batch-from", type=click.IntRange(0, 4096), default=None, metavar="N",
              help="Transfers running from which new ones are batched (0: every one; "
                   "default: the number of CPUs, below which a process each, polling "
                   "for ACKs, is faster).")
@click.option("--dns-port", type=click.IntRange(1, 65535), default=53, show_default=True)
@click.option("--dns-forward", "dns_forwarders", multiple=True, metavar="ADDR[:PORT]",
              help="Forward names outside the cluster's zones to this resolver (repeatable); "
                   "without it they are REFUSED.")
@click.option("--dns-forward-timeout", type=click.FloatRange(0.1, 30), default=2.0,
              show_default=True, help="Seconds to wait for the forwarders before SERVFAIL.")
@click.option("--discovery/--no-discovery", default=False, show_default=True,
              help="Answer machines that are not in the inventory from the discovery pool.")
@click.option("--discovery-rate", type=click.FloatRange(0, 100000), default=16.0,
              show_default=True, help="New unknown MACs answered per second (bursts of 4 "
              "seconds' worth); more are dropped until a retry. 0: no limit.")
@click.option("--dhcp-workers", type=click.IntRange(1, 16), default=1, show_default=True,
              metavar="N",
              help="DHCP processes sharing its ports, each machine served by one of them "
                   "(steered by its MAC in the kernel) from its own share of the pool: "
                   "more than one core for DHCP. Not with a master pair; /metrics counts "
                   "the first worker's requests only.")
@click.option("--proxy", is_flag=True,
              help="ProxyDHCP: give PXE clients boot information only, never an address "
                   "(another DHCP server on the network hands out addresses).")
@click.option("--templates", type=click.Path(file_okay=False, exists=True), default=None,
              help="Directory of template overrides.")
@click.option("--master", "master_name", default=None, metavar="HOST",
              help="With a master pair (cluster.masters.pair): which master this is "
                   "(default: the one whose address is local).")
@click.option("--keepalived/--no-keepalived", default=True, show_default=True,
              help="With a master pair: run keepalived for the VIP as a child (it dies "
                   "with serve), or not (the operator runs it with `dsas master "
                   "keepalived`'s config).")
@click.option("--resync-wait", type=click.FloatRange(0, 3600), default=10.0,
              show_default=True, help="With a master pair: seconds to try to pull the "
              "peer's leases at start before serving with our own.")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def serve(inventory_path: str | None, interfaces: tuple[str, ...], only: str, state_dir: str,
          boot_root: str, bind_address: str | None, http_port: int | None,
          http_max_connections: int, http_max_per_client: int, http_header_timeout: float,
          http_idle_timeout: float,
          http_event_rate: float, http_event_burst: int, http_events_per_host: int,
          tftp_port: int,
          tftp_max_transfers: int, tftp_max_per_client: int, tftp_timeout: float,
          tftp_busy_poll: int, tftp_batch: bool, tftp_batch_from: int | None,
          dns_port: int, dns_forwarders: tuple[str, ...], dns_forward_timeout: float,
          discovery: bool, discovery_rate: float, dhcp_workers: int, proxy: bool,
          templates: str | None,
          master_name: str | None, keepalived: bool, resync_wait: float,
          verbose: int) -> None:
    """Run the netboot services for the inventory until SIGTERM.

    \b
    SIGHUP reloads the inventory and the templates (they are read once, not
    on every request); a broken inventory is refused (its errors are logged)
    and the running one is kept. `dsas host`, `enlist`, `assign`
    and `inventory revert` send it themselves: the serve's pid is in
    <state-dir>/serve.pid (flock-held while it runs), the sha256 of the
    inventory it serves in <state-dir>/serve.loaded. A service that dies stops the
    whole process with exit status 1, so a supervisor (systemd) restarts it.
    """
    setup_logging(verbose)
    names = _services(only)
    first_sha = _sha_of(resolve_path(inventory_path))  # read before the load (see below)
    inv = load_inventory(inventory_path)
    bind = _checked_bind(bind_address, names, interfaces, inv.cluster.pair is not None)
    if dhcp_workers > 1 and inv.cluster.pair is not None:
        fail("--dhcp-workers: one DHCP process per master of a pair (its replication "
             "is one stream)", 2)
    ctx = ServeContext(
        inventory=inv,
        interfaces=list(interfaces),
        state_dir=Path(state_dir),
        boot_root=Path(boot_root),
        http_port=http_port or inv.cluster.http_port,
        http_max_connections=http_max_connections,
        http_max_per_client=http_max_per_client,
        http_header_timeout=http_header_timeout,
        http_idle_timeout=http_idle_timeout,
        http_event_rate=http_event_rate,
        http_event_burst=http_event_burst,
        http_events_per_host=http_events_per_host,
        tftp_port=tftp_port,
        tftp_max_transfers=tftp_max_transfers,
        tftp_max_per_client=tftp_max_per_client,
        tftp_timeout=tftp_timeout,
        tftp_busy_poll=tftp_busy_poll,
        tftp_batch=tftp_batch,
        tftp_batch_from=tftp_batch_from,
        dns_port=dns_port,
        dns_forwarders=dns_forwarders,
        dns_forward_timeout=dns_forward_timeout,
        bind_address=bind,
        discovery=discovery,
        discovery_rate=discovery_rate,
        proxy=proxy,
        templates=Path(templates) if templates else None,
        dhcp6="dhcp6" in names,
        inventory_path=str(resolve_path(inventory_path)),
        dhcp_workers=dhcp_workers,
    )
    pair = _start_pair(ctx, master_name, keepalived, resync_wait,
                       resolve_path(inventory_path)) if inv.cluster.pair is not None else None
    sys.exit(_run(ctx, names, inventory_path, first_sha, pair))


def _checked_bind(bind_address: str | None, names: list[str], interfaces: tuple[str, ...],
                  pair: bool = False) -> ipaddress.IPv4Address | None:
    """--bind as an address; exits 2 when it is malformed or a service needs --interface.
    A master of a pair binds every address by default: the VIP comes and goes."""
    try:
        bind = ipaddress.IPv4Address(bind_address) if bind_address else None
    except ValueError:
        fail(f"--bind: malformed address {bind_address!r}", 2)
    for needs_if in ("dhcp", "ra", "dhcp6"):
        if needs_if in names and not interfaces:
            fail(f"{needs_if} needs at least one --interface", 2)
    if pair and bind is None:
        bind = ipaddress.IPv4Address("0.0.0.0")
    return bind


def _run(ctx: ServeContext, names: list[str], inventory_path: str | None,
         first_sha: str | None, pair: Any) -> int:
    """Start the services and supervise them until SIGTERM; the exit status."""
    inv = ctx.inventory
    if {"dhcp", "tftp", "http"} & set(names):
        report_missing(inv, ctx.boot_root)
    try:
        services = create_services(ctx, names)
    except (ImportError, ValueError) as e:
        fail(f"cannot set up services: {e}", 1)
    inv_file = resolve_path(inventory_path)
    pidfile = ServePidFile(ctx.state_dir, inv_file)
    # poll 0.2 s: a SIGHUP (an inventory edit waits for its receipt) is acted on within
    # 0.2 s instead of 1 s; a tick only checks flags and services' liveness
    sup = Supervisor(ctx, services, str(inv_file), poll=0.2, on_loaded=pidfile.loaded)
    if pair is not None:
        _hook_pair(ctx, sup, pair, pidfile)
    sup.install_signals()  # before the pid file: an edit's SIGHUP must never kill us
    if pidfile.acquire():
        # An edit made before the pid file existed signalled nobody: if the file is not
        # what was hashed before the load, reload once so the receipt is exact.
        if first_sha is None or _sha_of(inv_file) != first_sha:
            sup.request_reload()
        else:
            pidfile.loaded(first_sha)
    log.info("serving %s for cluster %s (%d hosts) on %s", ",".join(names),
             inv.cluster.name, len(inv.hosts), ",".join(ctx.interfaces) or str(ctx.bind_address))
    try:
        if pair is not None:
            pair.start_vip()
        code = sup.run(on_tick=pair.check if pair is not None else None)
    except OSError as e:
        log.error("cannot serve: %s", e)
        code = 1
    finally:
        if pair is not None:
            pair.stop()
        pidfile.release()
    return code


def _hook_pair(ctx: ServeContext, sup: Supervisor, pair: Any, pidfile: ServePidFile) -> None:
    """A standby's mirrored inventory is reloaded; after each reload the pair follows
    the inventory (a new peer from `dsas master join`, or this master left)."""
    def loaded(sha: str) -> None:
        pidfile.loaded(sha)
        pair.retarget(ctx.inventory)

    sup.on_loaded = loaded
    if pair.mirror is not None:
        pair.mirror.on_changed = lambda kind: sup.request_reload() if kind == "inventory" \
            else None


def _start_pair(ctx: ServeContext, name: str | None, keepalived: bool,
                resync_wait: float, inventory: Path) -> Any:
    """This master of the pair: the replication channel up, the store resynced and the
    files mirrored from the peer (before any service answers); the VIP follows once the
    services run."""
    from ..ha.mirror import trees
    from ..ha.pair import PairError, PairRuntime, read_key, resolve
    from ..services.dhcp import interface_address

    inv = ctx.inventory
    assert inv.cluster.pair is not None
    try:
        me = resolve(inv, name)
        key = read_key(ctx.state_dir, inv.cluster.pair)
    except PairError as e:
        fail(f"master pair: {e}", 1)
    iface = next((i for i in ctx.interfaces if _on(interface_address, i, me.network)),
                 ctx.interfaces[0] if ctx.interfaces else "")
    if keepalived and not iface:
        fail("master pair: keepalived needs the --interface the VIP goes on", 2)
    pair = PairRuntime(me, key, ctx.store, ctx.metrics, ctx.state_dir, iface, keepalived,
                       resync_wait, trees(inventory, ctx.boot_root, ctx.state_dir))
    try:
        pair.start_sync()
    except PairError as e:
        fail(f"master pair: {e}", 1)
    ctx.pair = pair
    return pair


def _on(addr_of: Any, ifname: str, network: Any) -> bool:
    try:
        return bool(addr_of(ifname)[0] in network)
    except OSError:
        return False


def _sha_of(path: Path) -> str | None:
    try:
        return sha256(path.read_bytes())
    except OSError:
        return None


def report_missing(inv: Inventory, boot_root: Path) -> int:
    """One line per loader or image file the hosts would boot that is not there."""
    from ..imaging.build import has_recipe
    from ..policy.presence import missing_files

    missing = missing_files(inv, boot_root, has_recipe)
    for m in missing:
        log.warning("missing %s/%s (%s): run `%s`", boot_root, m.path, m.why, m.fix)
    return len(missing)
