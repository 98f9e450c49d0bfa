"""`dsas dns query NAME [TYPE]`, `dsas dns zone`: the DNS answers, without a server."""

from __future__ import annotations

import ipaddress
import sys

import click
from dnslib import QTYPE, RCODE

from ..policy.dns import Zone, ptr_name
from ..render import RenderError, render_zone
from .common import fail, inventory_option, load_inventory


@click.group()
def dns() -> None:
    """What the master's DNS service answers, straight from the inventory."""


@dns.command()
@inventory_option
@click.argument("name")
@click.argument("qtype", metavar="[TYPE]", default="A")
def query(inventory_path: str | None, name: str, qtype: str) -> None:
    """Answer NAME (type A by default: A, PTR, NS, SOA, ANY) as the server would.

    \b
    An address as NAME asks for its PTR record (like dig -x).
    Prints the reply in dig's layout. Exit status: 0 NOERROR (with or without
    records), 1 NXDOMAIN or REFUSED, 2 usage error.
    """
    inv = load_inventory(inventory_path)
    qtype = qtype.upper()
    if qtype not in QTYPE.reverse:
        fail(f"unknown record type {qtype!r}", 2)
    address = _address(name)
    if address is not None:
        name, qtype = ptr_name(address), "PTR"
    reply = Zone(inv, serial=1).lookup(name, qtype)
    click.echo(str(reply))
    sys.exit(0 if reply.header.rcode == RCODE.NOERROR else 1)


@dns.command()
@inventory_option
def zone(inventory_path: str | None) -> None:
    """Print every record the server holds (SOA, NS, A, PTR with TTLs), master-file style."""
    try:
        click.echo(render_zone(load_inventory(inventory_path)), nl=False)
    except RenderError as e:
        fail(str(e), e.exit_code)


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None
