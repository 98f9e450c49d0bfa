"""`dsas status`: what every host is doing, from the master's API (one line per host)."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from .common import fail, inventory_option, load_inventory

MASTER_ENV = "DSAS_MASTER"
CLEAR = "\x1b[H\x1b[J"  # cursor home, clear to the end of the screen


def _master_url(master: str | None, inventory_path: str | None) -> str:
    if master:
        return master.rstrip("/")
    if os.environ.get(MASTER_ENV):
        return os.environ[MASTER_ENV].rstrip("/")
    from .. import layout

    return layout.base_url(load_inventory(inventory_path))


def fetch_status(base: str, role: str | None, timeout: float) -> dict[str, Any]:
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise click.ClickException(f"the master's URL must be http:// or https://, not {base!r}")
    url = f"{base}/api/v1/status"
    if role:
        url += "?" + urllib.parse.urlencode({"role": role})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - operator's URL
            doc = json.loads(r.read(64 * 1024 * 1024))
    except urllib.error.HTTPError as e:
        raise click.ClickException(f"{url}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise click.ClickException(f"cannot reach the master at {base}: {reason}") from None
    except ValueError:
        raise click.ClickException(f"{url}: the answer is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("hosts"), list):
        raise click.ClickException(f"{url}: not a dsas status document")
    return doc


@click.command("status")
@click.option("--master", "-m", metavar="URL",
              help=f"The master's HTTP service. Default: ${MASTER_ENV}, then the inventory's "
                   "master address and HTTP port.")
@inventory_option
@click.option("--role", "-r", metavar="ROLE", help="Only the hosts of this role.")
@click.option("--state", "-s", type=click.Choice(["unknown", "booting", "ready", "failed"]),
              help="Only the hosts in this state.")
@click.option("--watch", "-w", is_flag=True, help="Redraw in place until Ctrl-C (or --count).")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between redraws with --watch.")
@click.option("--count", "-n", type=click.IntRange(1), default=None,
              help="With --watch: stop after this many redraws.")
@click.option("--json", "as_json", is_flag=True, help="The API's JSON, as it came.")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=10.0, show_default=True,
              help="Seconds to wait for the master.")
def status(master: str | None, inventory_path: str | None, role: str | None,
           state: str | None, watch: bool, interval: float, count: int | None, as_json: bool,
           timeout: float) -> None:
    """Show every host: state, boot stage and since when, address, image, release and
    drift against the latest push, last seen and lease expiry.

    \b
    Reads GET /api/v1/status on the master, so it works from any machine that
    can reach the master's HTTP service. Exit status 1 when a shown host has
    failed (or the master cannot be reached).
    """
    from ..observability.status import format_lines

    base = _master_url(master, inventory_path)
    if count is not None and not watch:
        fail("--count needs --watch", 2)
    rounds = 0
    failed = False
    tty = sys.stdout.isatty()
    try:
        while True:
            doc = fetch_status(base, role, timeout)
            if state:
                doc["hosts"] = [v for v in doc["hosts"] if v.get("state") == state]
            failed = any(v.get("state") == "failed" for v in doc["hosts"])
            if as_json:
                out = json.dumps(doc, indent=None if watch else 2, sort_keys=True)
            else:
                out = "\n".join(format_lines(doc, float(doc.get("now") or time.time())))
            if watch and tty and not as_json:
                out = CLEAR + out
            click.echo(out)
            rounds += 1
            if not watch or (count is not None and rounds >= count):
                break
            if not tty and not as_json:
                click.echo("")
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    sys.exit(1 if failed else 0)
