"""`dsas setup`: prepare this machine to be the inventory's master, idempotently."""

from __future__ import annotations

import ipaddress
import json
import sys
from pathlib import Path

import click

from .. import layout, proc
from ..errors import DsasError
from ..imaging.store import ImageStore
from ..inventory.model import Inventory
from .common import inventory_option, load_inventory
from .image import DEFAULT_BOOT_ROOT, DEFAULT_CACHE


@click.command()
@inventory_option
@click.option("--boot-root", type=click.Path(file_okay=False), default=DEFAULT_BOOT_ROOT,
              show_default=True, envvar="DSAS_BOOT_ROOT",
              help="Root of the boot tree `dsas serve --boot-root` serves.")
@click.option("--cache", type=click.Path(file_okay=False), default=DEFAULT_CACHE,
              show_default=True, help="Where downloaded Debian packages are kept.")
@click.option("--recipes", type=click.Path(file_okay=False, exists=True), default=None,
              help="Directory of image recipes (default: the installed images/).")
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build the images the inventory names that have a recipe and are "
                   "missing (--no-build: only list them).")
def setup(inventory_path: str | None, boot_root: str, cache: str, recipes: str | None,
          build: bool) -> None:
    """Prepare this machine as the master: what `dsas serve` hands out, in place.

    \b
    1. the boot loaders from Debian's packages (ipxe: undionly.kpxe, ipxe.efi,
       snponly.efi; pxelinux and syslinux-common: pxelinux.0, *.c32) copied
       into the boot root;
    2. every image a host of the inventory boots or is cloned from, built from
       its recipe when it is missing (an image without a recipe is listed with
       the `dsas image import` command that provides it);
    3. the inventory's master_address checked to be on an interface here.

    Running it again changes nothing and says so. Exit status 1 when something
    is still missing (each listed with the command that fixes it).
    """
    from ..imaging.build import Builder, default_recipes_dir, has_recipe
    from ..policy.boottree import populate_loaders

    inv = load_inventory(inventory_path)
    root = Path(boot_root)
    changed: list[str] = []
    problems: list[str] = []

    copied: list[str] = []
    try:
        present = populate_loaders(root, copied)
    except (FileNotFoundError, OSError) as e:
        problems.append(f"loaders: {e}")
        present = []
    if copied:
        changed.append(f"copied {len(copied)} loader file(s) into {root}: "
                       + ", ".join(copied[:6]) + (" ..." if len(copied) > 6 else ""))

    recipes_dir = Path(recipes) if recipes else default_recipes_dir()
    store = ImageStore(layout.image_store(root))
    builder = Builder(recipes_dir, store, Path(cache), progress=click.echo)
    images = named_images(inv)
    for name, version in images:
        if image_present(store, name, version):
            continue
        if not has_recipe(name, recipes_dir):
            problems.append(f"image {name}@{version}: not in {store.root} and no recipe in "
                            f"{recipes_dir}: `dsas image import {name} --kernel FILE "
                            f"--initrd FILE --boot-root {root}`")
            continue
        if version != "current":
            problems.append(f"image {name}@{version}: that version is not in {store.root}; "
                            f"build it with `dsas image build {name} --boot-root {root}` "
                            f"and pin the inventory to the version it prints")
            continue
        if not build:
            problems.append(f"image {name}: missing; `dsas image build {name} "
                            f"--boot-root {root}` builds it")
            continue
        try:
            res = builder.build(name)
        except (DsasError, OSError) as e:
            problems.append(f"image {name}: build failed: {e}")
            continue
        changed.append(f"image {name} {res.version} in place")

    where, why = address_check(inv)
    if where is None:
        problems.append(why)

    for line in changed:
        click.echo(f"setup: {line}")
    for p in problems:
        click.echo(f"error: {p}", err=True)
    if problems:
        click.echo(f"setup: {len(problems)} thing(s) still missing", err=True)
        sys.exit(1)
    state = "done" if changed else "nothing to do"
    click.echo(f"setup: {state}: {len(present)} loader files and {len(images)} image(s) in "
               f"{root}; master address {inv.cluster.master_address} is on {where}")


def named_images(inv: Inventory) -> list[tuple[str, str]]:
    """(image, version) of every host's image, plus the images section, in order."""
    out: dict[tuple[str, str], None] = {}
    for h in inv.hosts.values():
        img = layout.host_image(inv, h)
        if img is not None:
            out[img] = None
    for name, spec in inv.images.items():
        out[(name, spec.version)] = None
    return list(out)


def image_present(store: ImageStore, name: str, version: str) -> bool:
    """The image's manifest and every artifact it lists are there (sizes, not hashes:
    `dsas image verify` re-hashes)."""
    concrete = store.resolve(name, version)
    if concrete is None:
        return False
    m = store.manifest(name, concrete)
    if m is None or not m.get("files"):
        return False
    d = store.dir(name, concrete)
    for f, want in m["files"].items():
        try:
            if (d / f).stat().st_size != want.get("size"):
                return False
        except OSError:
            return False
    return True


def address_check(inv: Inventory) -> tuple[str | None, str]:
    """(the interface holding the master address, or None and why not)."""
    want = inv.cluster.master_address
    try:
        links = json.loads(proc.run(["ip", "-j", "addr", "show"], timeout=10).stdout)
    except (proc.CommandError, ValueError) as e:
        return None, f"cannot list this machine's addresses (ip -j addr show): {e}"
    for link in links:
        for a in link.get("addr_info", []):
            try:
                if ipaddress.ip_address(a.get("local", "")) == want:
                    return str(link.get("ifname")), ""
            except ValueError:
                continue
    net = inv.network_of(want)
    prefix = f"/{net.prefixlen}" if net is not None else ""
    return None, (f"master_address {want} is on no interface of this machine: nodes fetch "
                  f"their files from it. Add it (`ip addr add {want}{prefix} dev IF`, and in "
                  f"/etc/network/interfaces) or correct cluster.master_address")
