"""`dsas check`, `dsas hosts`, `dsas render`: read the inventory, show it, render files."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click

from ..inventory import InventoryError, load
from ..inventory.model import Host, Inventory
from ..render import HOST_FILES, RenderError, render_host, render_zone
from .common import fail, inventory_option, load_inventory, table

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")


@click.command()
@inventory_option
@click.option("--boot-root", type=click.Path(file_okay=False), default=None,
              help="Also warn about the loaders and images the hosts need that are not "
                   "in this boot tree (with the command that puts each there).")
@json_option
def check(inventory_path: str | None, boot_root: str | None, as_json: bool) -> None:
    """Validate the inventory; list every problem (file:line: key: reason).

    Exits 0 with a one-line summary when the inventory is clean, 1 otherwise.
    With --json, the summary or the problems (file, line, key, reason) go to stdout.
    Missing files in --boot-root are warnings (on stderr): they do not change
    the exit status.
    """
    if not as_json:
        inv = load_inventory(inventory_path)
        click.echo(summary(inv))
    else:
        try:
            inv = load(inventory_path)
        except InventoryError as e:
            click.echo(json.dumps({"ok": False, "problems": [
                {"file": getattr(p, "file", None), "line": getattr(p, "line", None),
                 "key": getattr(p, "key", None), "reason": getattr(p, "reason", None),
                 "message": str(p)} for p in e.problems]}, indent=2))
            sys.exit(e.exit_code)
        c = inv.cluster
        click.echo(json.dumps({"ok": True, "source": str(inv.source), "cluster": c.name,
                               "domain": c.domain, "hosts": len(inv.hosts),
                               "roles": len(inv.roles), "networks": len(inv.networks),
                               "virtual_services": len(inv.virtual_services),
                               "lvs_pairs": len(inv.lvs_pairs)}, indent=2))
    if boot_root is not None:
        from ..imaging.build import has_recipe
        from ..policy.presence import missing_files

        for m in missing_files(inv, boot_root, has_recipe, disk=True):
            click.echo(f"warning: {boot_root}/{m.path} missing ({m.why}): run `{m.fix}`",
                       err=True)


def summary(inv: Inventory) -> str:
    return (
        f"{inv.source}: ok: cluster {inv.cluster.name} ({inv.cluster.domain}): "
        f"{len(inv.hosts)} hosts, {len(inv.roles)} roles, {len(inv.networks)} networks, "
        f"{len(inv.virtual_services)} virtual services, {len(inv.lvs_pairs)} LVS pair(s)"
    )


def host_rows(inv: Inventory) -> list[list[str]]:
    rows = []
    for h in inv.hosts.values():
        rows.append([
            h.name,
            h.role.name,
            " ".join(h.macs),
            " ".join(f"{i.device}={i.cidr}" for i in h.interfaces),
            h.hwtype.name,
            h.boot,
            f"{h.image}" if h.image else "-",
        ])
    return rows


def host_doc(h: Host) -> dict[str, object]:
    return {"host": h.name, "role": h.role.name, "macs": list(h.macs),
            "interfaces": [{"device": i.device, "network": i.network.name,
                            "address": str(i.address), "cidr": i.cidr} for i in h.interfaces],
            "hwtype": h.hwtype.name, "boot": h.boot,
            "image": str(h.image) if h.image else None}


@click.command()
@inventory_option
@click.option("--role", "-r", multiple=True, help="Only hosts of this role (repeatable).")
@json_option
def hosts(inventory_path: str | None, role: tuple[str, ...], as_json: bool) -> None:
    """List the hosts: name, role, MACs, addresses, hardware type, boot mode, image."""
    inv = load_inventory(inventory_path)
    for r in role:
        if r not in inv.roles:
            fail(f"unknown role {r!r} (roles: {', '.join(inv.roles)})", 2)
    if as_json:
        click.echo(json.dumps({"hosts": [host_doc(h) for h in inv.hosts.values()
                                         if not role or h.role.name in role]}, indent=2))
        return
    rows = [r for r in host_rows(inv) if not role or r[1] in role]
    click.echo(table(["HOST", "ROLE", "MACS", "ADDRESSES", "HWTYPE", "BOOT", "IMAGE"], rows))


WHATS = [*HOST_FILES, "zone"]


@click.command()
@inventory_option
@click.argument("host", required=False)
@click.option("--what", "-w", type=click.Choice(WHATS), default="dsas.conf", show_default=True,
              help="Which file to render for HOST.")
@click.option("--all", "all_", is_flag=True, help="Render every file of every host into --out.")
@click.option("--out", "-o", type=click.Path(file_okay=False), help="Output directory (--all).")
@click.option("--templates", type=click.Path(file_okay=False, exists=True),
              help="Directory of template overrides (same file names as the packaged ones).")
def render(inventory_path: str | None, host: str | None, what: str, all_: bool,
           out: str | None, templates: str | None) -> None:
    """Render one host's file to stdout, or every file with --all --out DIR.

    \b
    Files per host: dsas.conf, ipxe (the iPXE script), pxelinux (its
    pxelinux.cfg), keepalived (for the hosts of an LVS pair). Cluster-wide:
    zone (DNS records). With --all, DIR/<host>/... and DIR/zone are written
    atomically (a temporary directory renamed into place). DIR must be absent,
    empty, or a directory dsas rendered before (it holds a .dsas-render
    marker): anything else is refused, never deleted.
    """
    inv = load_inventory(inventory_path)
    try:
        if all_:
            if host or not out:
                fail("use either HOST or --all --out DIR", 2)
            assert out is not None
            n = render_all(inv, Path(out), templates)
            click.echo(f"wrote {n} files for {len(inv.hosts)} hosts into {out}")
            return
        if what == "zone":
            click.echo(render_zone(inv, templates), nl=False)
            return
        if not host:
            fail("name a HOST (or use --all --out DIR)", 2)
        assert host is not None
        h = inv.hosts.get(host)
        if h is None:
            fail(f"unknown host {host!r}", 1)
        assert h is not None
        click.echo(render_host(inv, h, what, templates), nl=False)
    except RenderError as e:
        fail(str(e), e.exit_code)


def host_files(inv: Inventory, templates: str | None = None) -> dict[str, str]:
    """Every rendered file, keyed by relative path."""
    files: dict[str, str] = {"zone": render_zone(inv, templates)}
    lvs = {h.name for h, _, _ in inv.lvs_hosts()}
    for h in inv.hosts.values():
        files[f"{h.name}/dsas.conf"] = render_host(inv, h, "dsas.conf", templates)
        if h.image and h.boot == "netboot":
            files[f"{h.name}/boot.ipxe"] = render_host(inv, h, "ipxe", templates)
            files[f"{h.name}/pxelinux.cfg"] = render_host(inv, h, "pxelinux", templates)
        if h.name in lvs:
            files[f"{h.name}/keepalived.conf"] = render_host(inv, h, "keepalived", templates)
    return files


MARKER = ".dsas-render"


class NotOurs(RenderError):
    """The output directory holds files dsas did not write: refuse, delete nothing."""


def render_all(inv: Inventory, out: Path, templates: str | None = None) -> int:
    """Write every file into ``out``, replacing it atomically.

    ``out`` is replaced only if it is absent, empty, or was written by an earlier
    render (it holds ``MARKER``); anything else raises ``NotOurs``.
    """
    files = host_files(inv, templates)
    out = out.resolve()
    if out.exists() and not out.is_dir():
        raise NotOurs(f"{out} exists and is not a directory")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()):
        raise NotOurs(f"{out} is not empty and dsas did not render it (no {MARKER}); "
                      "choose an empty or new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        (tmp / MARKER).write_text("written by `dsas render --all`; the next run replaces "
                                  "this directory\n")
        tmp.chmod(0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            _rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        _rmtree(tmp)
        raise
    return len(files)


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
