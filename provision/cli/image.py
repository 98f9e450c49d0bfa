"""`dsas image`: build, list and verify node images in the boot tree's image store."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from .. import layout
from ..imaging.build import Builder, default_recipes_dir
from ..imaging.content import parse_ref, verify_archive
from ..imaging.store import ImageStore, import_image
from .common import table

DEFAULT_BOOT_ROOT = "/srv/dsas/boot"
IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
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
    store = ImageStore(layout.image_store(boot_root))
    builder = Builder(Path(recipes) if recipes else default_recipes_dir(), store, Path(cache),
                      progress=click.echo)
    for name in names:
        builder.build(name)


@image.command("list")
@boot_root_option
def list_images(boot_root: str) -> None:
    """The images and versions in the store (* marks current).

    `image: NAME` in the inventory (version `current`, the default) means the
    version marked here; `dsas image promote NAME@VERSION` moves the mark.
    """
    store = ImageStore(layout.image_store(boot_root))
    rows = []
    for name in store.images():
        current = store.resolve(name)
        for version in store.versions(name):
            m = store.manifest(name, version) or {}
            size = sum(f.get("size", 0) for f in m.get("files", {}).values())
            rows.append(["*" if version == current else "", name, version,
                         m.get("kind", "?"), m.get("kernel_release", "?"),
                         f"{size / 1e6:.1f}M", m.get("built", m.get("imported", "-")),
                         m.get("recipe_hash", "-")])
    if not rows:
        click.echo(f"no images in {store.root}")
        return
    click.echo(table(["", "IMAGE", "VERSION", "KIND", "KERNEL", "SIZE", "BUILT", "RECIPE"],
                     rows))


def _resolve(store: ImageStore, ref: str, version: str | None = None) -> tuple[str, str]:
    name, v = parse_ref(ref)
    concrete = store.resolve(name, version or v)
    if concrete is None:
        _error(f"no image {name}@{version or v} in {store.root}"
               + (f" (versions: {', '.join(store.versions(name))})"
                  if store.versions(name) else ""))
    assert concrete is not None
    return name, concrete


@image.command()
@click.argument("ref", metavar="IMAGE[@VERSION]")
@click.argument("version", required=False)
@click.option("--content/--no-content", default=True, show_default=True,
              help="Also check every file inside the root fs archive against the manifest.")
@boot_root_option
def verify(ref: str, version: str | None, content: bool, boot_root: str) -> None:
    """Re-hash IMAGE (default version: current) against its manifest.

    Every artifact's sha256 and size, and (--content) every file, symlink and
    mode inside rootfs.tar.gz. Prints each difference; exit 1 on any.
    """
    store = ImageStore(layout.image_store(boot_root))
    name, concrete = _resolve(store, ref, version)
    problems = store.verify(name, concrete)
    if content and not problems:
        problems = verify_archive(store, name, concrete)
    for p in problems:
        click.echo(f"error: {p}", err=True)
    if problems:
        click.echo(f"{name}@{concrete}: {len(problems)} difference(s)", err=True)
        sys.exit(1)
    m = store.manifest(name, concrete) or {}
    click.echo(f"{name}@{concrete}: ok ({len(m.get('files', {}))} artifacts"
               + (f", {len(m.get('rootfs', {}))} entries" if content else "") + ")")


@image.command()
@click.argument("ref", metavar="IMAGE@VERSION")
@boot_root_option
def promote(ref: str, boot_root: str) -> None:
    """Make VERSION the `current` IMAGE: what `image: IMAGE` in the inventory boots
    and what dsas-clone copies by default. The version must verify first."""
    store = ImageStore(layout.image_store(boot_root))
    if "@" not in ref:
        _error(f"{ref}: name the version to promote, as IMAGE@VERSION")
    name, concrete = _resolve(store, ref)
    problems = store.verify(name, concrete)
    if problems:
        for p in problems:
            click.echo(f"error: {p}", err=True)
        _error(f"{name}@{concrete} does not verify; not promoted")
    before = store.resolve(name)
    store.set_current(name, concrete)
    click.echo(f"{name}: current is now {concrete}" + (f" (was {before})" if before else ""))


@image.command("import")
@click.argument("name", metavar="NAME")
@click.option("--kernel", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The kernel (bzImage) to boot.")
@click.option("--initrd", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Its initrd / initramfs.")
@click.option("--rootfs", type=click.Path(dir_okay=False, exists=True), default=None,
              metavar="TARBALL", help="A root file system tarball (stored as rootfs.tar.gz; "
              "its listing goes into the manifest for `verify --content`).")
@click.option("--kernel-args", default="", metavar="ARGS",
              help="The payload's own kernel command line (before the inventory's).")
@click.option("--dsas-boot", is_flag=True,
              help="The initrd runs dsas's boot scripts: give its hosts dsas.* arguments "
                   "(without it they get none).")
@boot_root_option
def import_(name: str, kernel: str, initrd: str, rootfs: str | None, kernel_args: str,
            dsas_boot: bool, boot_root: str) -> None:
    """Put a kernel and initrd dsas did not build (a vendor's installer or rescue
    image) into the store as NAME, versioned and checksummed like a built image.

    \b
    The version is a hash of the files and arguments: importing the same payload
    again does nothing. The new version becomes `current`. A role or host with
    `image: NAME` boots it through iPXE, pxelinux and UEFI with the payload's
    --kernel-args, then the cluster's, image's, role's and host's kernel_args;
    dsas's own dsas.* arguments only with --dsas-boot.
    """
    from ..render.engine import CMDLINE_OK

    if not IMAGE_NAME.match(name):
        _error(f"{name!r}: an image name is letters, digits, '.', '_' and '-'")
    kernel_args = " ".join(kernel_args.split())
    if not CMDLINE_OK.match(kernel_args):
        _error(f"--kernel-args {kernel_args!r}: only letters, digits, spaces and "
               "_.,:=/+@%~- pass through iPXE, pxelinux and the kernel")
    store = ImageStore(layout.image_store(boot_root))
    try:
        version, existed = import_image(store, name, Path(kernel), Path(initrd),
                                        Path(rootfs) if rootfs else None, kernel_args,
                                        dsas_boot)
    except OSError as e:
        _error(str(e))
    m = store.manifest(name, version) or {}
    size = sum(f.get("size", 0) for f in m.get("files", {}).values())
    state = "already imported" if existed else "imported"
    click.echo(f"image {name} {version}: {state} ({size / 1e6:.1f}M, "
               f"{'dsas boot scripts' if dsas_boot else 'foreign: no dsas.* arguments'}) "
               f"-> {store.dir(name, version)}")
