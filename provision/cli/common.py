"""What every command shares: the inventory option, the SSH options, logging set-up,
and one-line errors (``OneLineErrors``: any DsasError from below becomes one line on
stderr and its exit code)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from ..errors import DsasError
from ..inventory import ENV_VAR, Inventory, InventoryError, load
from ..sshtrust import DEFAULT_PORT, DEFAULT_USER

if TYPE_CHECKING:
    from ..sshtrust.sshconf import SshConfig

F = TypeVar("F", bound=Callable[..., Any])

inventory_option = click.option(
    "--inventory",
    "-i",
    "inventory_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Inventory file. Default: ${ENV_VAR}, then /etc/dsas/cluster.yaml.",
)

STATE_ENV = "DSAS_STATE_DIR"
DEFAULT_STATE_DIR = "/var/lib/dsas"

state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False), envvar=STATE_ENV,
    default=DEFAULT_STATE_DIR, show_default=True,
    help=f"State directory (state.db, ssh/known_hosts, ssh/id_ed25519); also ${STATE_ENV}.")


def ssh_options(f: F) -> F:
    """How dsas reaches the nodes over SSH (dsas-push, dsas-clone --from, dsas lb):
    --state-dir (its key and known_hosts), --user, --port, --identity. The command
    takes them as ``state_dir, user, port, identity``; ``make_ssh`` builds the config."""
    return state_dir_option(ssh_login_options(f))


def ssh_login_options(f: F) -> F:
    """--user, --port, --identity (for a command that declares its own --state-dir)."""
    f = click.option("--identity", type=click.Path(dir_okay=False), default=None,
                     help="SSH private key. Default: <state-dir>/ssh/id_ed25519 "
                          "(created on first use).")(f)
    f = click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT,
                     show_default=True, help="SSH port on the nodes.")(f)
    f = click.option("--user", default=DEFAULT_USER, show_default=True,
                     help="SSH user on the nodes.")(f)
    return f


def make_ssh(state_dir: str, user: str, port: int, identity: str | None) -> SshConfig:
    """The SSH configuration ``ssh_options`` describes."""
    from ..sshtrust.sshconf import SshConfig  # paramiko: only for the commands that use SSH

    return SshConfig(Path(state_dir), user=user, port=port,
                     identity=Path(identity) if identity else None)


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


def exit_with(error: DsasError) -> NoReturn:
    """The one place an expected error becomes the operator's line and the exit code."""
    click.echo(f"error: {error.one_line()}", err=True)
    raise click.exceptions.Exit(error.exit_code)


def _reporting(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    try:
        return invoke(ctx)
    except DsasError as e:
        exit_with(e)


class OneLineErrors(click.Command):
    """A command whose DsasErrors, from however deep, end as one line and their code."""

    def invoke(self, ctx: click.Context) -> Any:
        return _reporting(super().invoke, ctx)


class OneLineErrorsGroup(click.Group):
    """The same for a group: covers every subcommand it runs."""

    def invoke(self, ctx: click.Context) -> Any:
        return _reporting(super().invoke, ctx)


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
