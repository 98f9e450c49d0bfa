"""`dsas-clone HOST --target DEVICE|FILE`: a verified, bootable disk for one host.

Exit status: 0 the disk is ready; 1 refused or failed (the target is left with
no partition table once writing began); 2 usage error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..clone import clone as c
from ..clone.disklayout import MIB, parse_size
from ..errors import DsasError
from ..imaging.content import parse_ref
from ..imaging.store import ImageStore
from ..inventory.model import Host, Inventory
from .common import OneLineErrors, fail, inventory_option, load_inventory, make_ssh, ssh_options


class Meter:
    """Bytes, rate and ETA: redrawn in place on a terminal, a line every 5 s otherwise."""

    def __init__(self, stream: object = sys.stderr):
        self.tty = getattr(stream, "isatty", lambda: False)()
        self.stage, self.t0, self.last = "", 0.0, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.t0, self.last = stage, now, 0.0
        if now - self.last < (0.2 if self.tty else 5.0) and done < total:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-3)
        eta = (total - done) / rate if rate and total > done else 0
        pct = 100 * done / total if total else 0
        line = (f"  {stage}: {done / MIB:8.1f} / {total / MIB:.1f} MiB ({pct:3.0f}%)"
                f"  {rate / MIB:6.1f} MiB/s  ETA {eta:4.0f}s")
        if self.tty:
            click.echo("\r" + line, nl=done >= total, err=True)
        else:
            click.echo(line, err=True)


@click.command(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host")
@click.option("--target", required=True, type=click.Path(path_type=Path),
              help="Whole-disk block device, or an image file (created with --size).")
@click.option("--size", default=None, help="Size of an image file target, e.g. 4G.")
@click.option("--image", "image_ref", default=None, metavar="NAME[@VERSION]",
              help="Image to copy (default: the host's image, version as the inventory says).")
@click.option("--from", "peer", default=None, metavar="HOST",
              help="Copy a running peer's file system over rsync+ssh instead of an image.")
@click.option("--from-path", default="/", show_default=True,
              help="The peer's root directory to copy.")
@click.option("--boot-root", type=click.Path(file_okay=False), default="/srv/dsas/boot",
              show_default=True, envvar="DSAS_BOOT_ROOT", help="Boot tree holding images/.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan; write nothing.")
@inventory_option
@ssh_options
def cli(host: str, target: Path, size: str | None, image_ref: str | None, peer: str | None,
        from_path: str, boot_root: str, yes: bool, dry_run: bool,
        inventory_path: str | None, state_dir: str, user: str, port: int,
        identity: str | None) -> None:
    """Partition TARGET for HOST's hardware type, copy an image (or --from a peer),
    write HOST's dsas.conf, fstab and SSH host keys, install extlinux, verify.

    --from uses dsas-push's SSH set-up: its key, and only the host keys in
    <state-dir>/ssh/known_hosts (`dsas trust PEER` adds one)."""
    if image_ref and peer:
        raise click.UsageError("--image and --from exclude each other")
    try:
        size_b = parse_size(size) if size else None
    except ValueError as exc:
        raise click.UsageError(f"--size: {exc}") from None
    inv = load_inventory(inventory_path)
    h = inv.hosts.get(host)
    if h is None:
        fail(f"unknown host {host!r}: not in {inv.source}; nothing written", 2)
    assert h is not None
    try:
        if peer:
            source = c.peer_source(inv, peer, from_path,
                                   make_ssh(state_dir, user, port, identity))
        else:
            source = _image_source(inv, h, image_ref, boot_root)
        plan = c.make_plan(inv, host, target, size_b, source)
    except DsasError as exc:  # a refusal, or a check's command failed: nothing written yet
        fail(f"refused: {exc.one_line()}; nothing written", exc.exit_code)
        return
    click.echo(plan.describe())
    if dry_run:
        click.echo("dry run: nothing written")
        return
    if not yes:
        if not sys.stdin.isatty():
            fail("refused: not a terminal to confirm on; give --yes", 1)
        click.confirm(f"Erase {target} and make it {host}'s disk?", abort=True, err=True)
    _execute(plan)


def _image_source(inv: Inventory, h: Host, image_ref: str | None,
                  boot_root: str) -> c.Source:
    """--image, else the host's image in the inventory (its version, else current)."""
    if image_ref:
        name, version = parse_ref(image_ref)
    elif h.image:
        name = h.image
        img = inv.images.get(name)
        version = img.version if img else "current"
    else:
        raise c.Refused(f"host {h.name} has no image in the inventory: give --image")
    return c.image_source(ImageStore(Path(boot_root) / "images"), name, version)


def _execute(plan: c.Plan) -> None:
    cloner = c.Cloner(plan, progress=Meter(), say=lambda s: click.echo(s, err=True))
    try:
        with c.interrupts_as_errors():
            stats = cloner.run()
    except KeyboardInterrupt:
        fail(f"interrupted: {plan.target} is left UNUSABLE (no partition table); "
             "run dsas-clone again", 1)
    except (DsasError, OSError) as exc:  # the line says the target is unusable now
        why = exc.one_line() if isinstance(exc, DsasError) else str(exc)
        fail(f"{why}; {plan.target} is left UNUSABLE (no partition table); "
             "fix the cause and run dsas-clone again", getattr(exc, "exit_code", 1))
    else:
        rate = stats["copy_bytes"] / max(stats["copy_seconds"], 1e-3) / MIB
        click.echo(f"done: {plan.target} is {plan.host.name}'s disk "
                   f"({plan.source.describe()}); copied {stats['copy_bytes'] / MIB:.0f} MiB "
                   f"in {stats['copy_seconds']:.1f}s ({rate:.0f} MiB/s), verified "
                   f"{stats.get('verified_files', '-')} files in "
                   f"{stats['verify_seconds']:.1f}s, total {stats['seconds']:.1f}s")


def main() -> None:
    cli(prog_name="dsas-clone")


if __name__ == "__main__":
    main()
