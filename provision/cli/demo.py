"""`dsas demo`: show the bundled example cluster (the live PXE lab comes with the lab issue)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import load_inventory, table
from .inventory import host_rows, render_all, summary

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "dsas" / "cluster.yaml"


def register(cli: click.Group) -> None:
    cli.add_command(demo)


@click.command()
@click.option("--inventory", "-i", "inventory_path", type=click.Path(dir_okay=False),
              default=str(EXAMPLE), show_default=True)
@click.option("--out", "-o", type=click.Path(file_okay=False), default="out/demo",
              show_default=True, help="Where the rendered files go.")
def demo(inventory_path: str, out: str) -> None:
    """Validate the example cluster, render every host's files and show the hosts."""
    inv = load_inventory(inventory_path)
    click.echo(summary(inv))
    click.echo()
    click.echo(table(["HOST", "ROLE", "MACS", "ADDRESSES", "HWTYPE", "BOOT", "IMAGE"],
                     host_rows(inv)))
    n = render_all(inv, Path(out))
    click.echo()
    click.echo(f"rendered {n} files into {out}/ (dsas.conf, boot.ipxe, pxelinux.cfg per host, "
               "keepalived.conf for the LVS pair, the DNS zone)")
