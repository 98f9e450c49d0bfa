"""What every command shares: the inventory option, logging set-up, one-line errors."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ..inventory import ENV_VAR, Inventory, InventoryError, load

F = TypeVar("F", bound=Callable[..., Any])

inventory_option = click.option(
    "--inventory",
    "-i",
    "inventory_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Inventory file. Default: ${ENV_VAR}, then /etc/dsas/cluster.yaml.",
)


def load_inventory(path: str | None) -> Inventory:
    """Load or exit 1 with every problem, one per line, on stderr."""
    try:
        return load(path)
    except InventoryError as e:
        for p in e.problems:
            click.echo(f"error: {p}", err=True)
        n = len(e.problems)
        click.echo(f"{n} problem{'s' if n != 1 else ''} found", err=True)
        sys.exit(e.exit_code)


def fail(message: str, code: int = 1) -> None:
    """One clear line for an expected failure, never a traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class _QuietLibraries(logging.Filter):
    """fbtftp logs every connection on the root logger at INFO; our own TFTP
    service logs each transfer with its host, so keep only fbtftp's warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "/fbtftp/" not in record.pathname


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose < 2:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_QuietLibraries())
    # paramiko's transport thread logs a traceback for every connection that fails (a
    # silent port, a close during the banner); dsas-push reports the cause in one line
    logging.getLogger("paramiko").setLevel(logging.DEBUG if verbose > 1 else logging.CRITICAL)
    # one line per file served (TFTP, HTTP): only with -v
    logging.getLogger("provision.served").setLevel(logging.INFO if verbose else logging.WARNING)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain, aligned text table."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
