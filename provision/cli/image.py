"""`dsas image`: build, list and verify node images in the boot tree's image store."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..imaging.build import Builder, default_recipes_dir
from ..imaging.debs import PackageError
from ..imaging.recipe import RecipeError
from ..imaging.store import ImageStore

DEFAULT_BOOT_ROOT = "/srv/dsas/boot"
DEFAULT_CACHE = "/var/cache/dsas/images"

boot_root_option = click.option(
    "--boot-root", type=click.Path(file_okay=False), default=DEFAULT_BOOT_ROOT,
    show_default=True, envvar="DSAS_BOOT_ROOT",
    help="Root of the boot tree; images go to <boot-root>/images/<image>/<version>/.")


def _error(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.group()
def image() -> None:
    """Node images: the netboot initramfs and root file systems."""


@image.command()
@click.argument("names", nargs=-1, required=True, metavar="IMAGE...")
@boot_root_option
@click.option("--cache", type=click.Path(file_okay=False), default=DEFAULT_CACHE,
              show_default=True, help="Where downloaded Debian packages are kept.")
@click.option("--recipes", type=click.Path(file_okay=False, exists=True), default=None,
              help="Directory of image recipes (default: images/ of this checkout).")
def build(names: tuple[str, ...], boot_root: str, cache: str, recipes: str | None) -> None:
    """Build IMAGE (netboot, tiny, ...) from Debian's packages.

    The version is a hash of the image's content: building again with
    unchanged inputs does nothing. The newest build becomes `current`.
    """
    store = ImageStore(Path(boot_root) / "images")
    builder = Builder(Path(recipes) if recipes else default_recipes_dir(), store, Path(cache),
                      progress=click.echo)
    try:
        for name in names:
            builder.build(name)
    except (RecipeError, PackageError) as exc:
        _error(str(exc))


@image.command("list")
@boot_root_option
def list_images(boot_root: str) -> None:
    """The images and versions in the store (* marks current)."""
    store = ImageStore(Path(boot_root) / "images")
    for name in store.images():
        current = store.resolve(name)
        for version in store.versions(name):
            m = store.manifest(name, version) or {}
            mark = "*" if version == current else " "
            kernel = m.get("kernel_release", "?")
            click.echo(f"{mark} {name:<12} {version}  kernel {kernel}")


@image.command()
@click.argument("name", metavar="IMAGE")
@click.argument("version", default="current")
@boot_root_option
def verify(name: str, version: str, boot_root: str) -> None:
    """Check every file of IMAGE VERSION against its manifest's sha256."""
    store = ImageStore(Path(boot_root) / "images")
    concrete = store.resolve(name, version)
    if concrete is None:
        _error(f"no image {name} {version} in {store.root}")
    assert concrete is not None
    problems = store.verify(name, concrete)
    for p in problems:
        click.echo(f"error: {p}", err=True)
    if problems:
        sys.exit(1)
    click.echo(f"{name} {concrete}: ok")


def register(cli: click.Group) -> None:
    cli.add_command(image)
