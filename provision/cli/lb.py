"""`dsas lb`: the load balancers as the directors see them (issue 16)."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..balancer import members as lbmembers
from ..balancer import reads as lbreads
from ..balancer.status import collect, status
from ..sshtrust.sshconf import SshConfig, ensure_client_key
from ..state import StateStore
from .common import inventory_option, load_inventory, ssh_options, table


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def lb() -> None:
    """The LVS directors: IPVS tables and VRRP, live."""


@lb.command("status")
@inventory_option
@ssh_options
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@click.option("--timeout", type=click.FloatRange(0.5, 300), default=10, show_default=True,
              help="Seconds to connect to and hear from each director.")
def lb_status(inventory_path: str | None, state_dir: str, user: str, port: int,
              identity: str | None, as_json: bool, timeout: float) -> None:
    """Per virtual service, each director's real servers with state, weight and
    connections (`ipvsadm -Ln` over SSH, host keys as dsas trusts them), and which
    director holds each VRRP instance. Unreachable directors are named with the
    reason. What was read (and who could not be) is kept in the state store as each
    director's latest read, for the status page. Exit 1 if a director could not be asked."""
    inv = load_inventory(inventory_path)
    # paramiko logs a failed handshake with a traceback; the table gives the reason
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    cfg = SshConfig(Path(state_dir), user=user, port=port,
                    identity=Path(identity) if identity else None, connect_timeout=timeout)
    ensure_client_key(cfg)  # as dsas push: created on first use
    views = collect(inv, cfg, timeout=timeout + 10)
    store = StateStore(Path(state_dir))
    try:
        report = status(inv, views, lbmembers.load(store))
        lbreads.record(store, inv, views, report, time.time())
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    else:
        click.echo(render_text(report))
    sys.exit(1 if report["unreachable"] else 0)


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


def render_text(report: dict[str, Any]) -> str:
    out: list[str] = []
    for vs in report["services"]:
        out.append(f"{vs['name']}: {vs['protocol']} {vs['vip']}:{vs['port']} (pair {vs['pair']})")
        rows = []
        for d in vs["directors"]:
            if "error" in d:
                rows.append([d["host"], "-", "-", "unreachable", "-", "-", "-"])
                continue
            if not d["in_ipvs"]:
                rows.append([d["host"], "-", "-", "not in IPVS", "-", "-", "-"])
            for r in d["reals"]:
                rows.append([d["host"], r["host"] or "?", f"{r['address']}:{r['port']}",
                             r["state"], _n(r["weight"]), _n(r["active"]), _n(r["inactive"])])
        out.append(table(["director", "real server", "address", "state", "weight", "active",
                          "inactive"], rows))
        out.append("")
    rows = [[i["name"], i["vrid"], " ".join(i["vips"]),
             " ".join(i["holders"]) or ("?" if i["unknown"] else "nobody")]
            for i in report["vrrp"]]
    out.append(table(["VRRP instance", "id", "VIPs", "held by"], rows))
    for u in report["unreachable"]:
        out.append(f"unreachable: {u['host']} ({u['address']}): {u['reason']}")
    return "\n".join(out)


@lb.command("reload")
@inventory_option
@ssh_options
@click.option("--timeout", type=click.FloatRange(0.5, 300), default=10, show_default=True,
              help="Seconds to connect to each director.")
@click.argument("directors", nargs=-1)
def lb_reload(inventory_path: str | None, state_dir: str, user: str, port: int,
              identity: str | None, timeout: float, directors: tuple[str, ...]) -> None:
    """Make each director (all, or DIRECTORS) install the keepalived.conf the master
    serves for it now: over SSH (host keys as dsas trusts them) `dsas-init
    --reload-lvs` fetches it with its checksum, lets `keepalived --config-test`
    judge it, replaces the file atomically and sends keepalived SIGHUP (never a
    restart: that would drop every VIP and IPVS rule). A file keepalived refuses is
    not installed: its reason is printed and the running one kept. Each director
    must end up running what the master renders from the inventory and the pools'
    drains and holds (`dsas assign`), or the reload is tried again (5 times).
    Exit 1 if a director could not be reloaded."""
    from ..balancer import reload as lbreload

    inv = load_inventory(inventory_path)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)
    cfg = SshConfig(Path(state_dir), user=user, port=port,
                    identity=Path(identity) if identity else None, connect_timeout=timeout)
    ensure_client_key(cfg)
    known = [n for n, _ in lbreload.directors(inv)]
    unknown = [d for d in directors if d not in known]
    if unknown:
        click.echo(f"error: not a director: {', '.join(unknown)} (directors: "
                   f"{', '.join(known) or 'none'})", err=True)
        sys.exit(2)
    store = StateStore(Path(state_dir))
    try:
        overrides = lbmembers.load(store)
    finally:
        store.close()
    ds = [(n, a) for n, a in lbreload.directors(inv) if not directors or n in directors]
    bad = 0
    for n, a in ds:
        r = lbreload.reload_one(cfg, n, a, lbreload.expected_sha(inv, n, overrides),
                                timeout=timeout + 50)
        bad += not r.ok
        click.echo(f"{n} ({a}): {'reloaded' if r.ok else 'NOT reloaded'}: {r.detail}")
    sys.exit(1 if bad else 0)
