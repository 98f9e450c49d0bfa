"""What the master would hand out, and whether it is in the boot root: the loaders
DHCP may name (``LoaderPresence``) and every file the inventory's hosts would boot
(``missing_files``). Split from ``boottree.py``, which re-exports these names.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import layout
from ..inventory.model import Host, Inventory

# The loaders DHCP may name (TFTP file names at the boot root).
DHCP_LOADERS = (layout.LOADER_BIOS, layout.LOADER_EFI_X64, layout.LOADER_EFI_ARM64,
                layout.LOADER_PXELINUX, layout.LOADER_SHIM)
SETUP_COMMAND = "dsas setup"


def is_static_file(root: str | os.PathLike[str], name: str) -> bool:
    """A regular file at ``name`` under ``root`` (following links that stay inside)."""
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, name))
    return os.path.commonpath([base, real]) == base and os.path.isfile(real)


class LoaderPresence:
    """Which of DHCP's loaders are in the boot root, re-checked at most every ``interval`` s.

    DHCP asks on every packet: the answer is a cached frozenset (the same object
    while nothing changes), so a packet costs one clock read, and a rescan five
    stat calls. A loader copied in (``dsas setup``) is offered within ``interval``.
    """

    def __init__(self, root: str | os.PathLike[str], interval: float = 5.0,
                 clock: Callable[[], float] | None = None):
        self.root = root
        self.interval = interval
        self._clock = clock or time.monotonic
        self._at = float("-inf")
        self._present: frozenset[str] = frozenset()

    def current(self) -> frozenset[str]:
        now = self._clock()
        if now - self._at >= self.interval:
            self._at = now
            found = frozenset(n for n in DHCP_LOADERS if is_static_file(self.root, n))
            if found != self._present:
                self._present = found
        return self._present


@dataclass(frozen=True)
class Missing:
    """A file the master would hand out that is not in the boot root."""

    path: str  # relative to the boot root
    why: str  # who needs it
    fix: str  # the command that puts it there


def missing_files(inv: Inventory, root: str | os.PathLike[str],
                  recipes: Callable[[str], bool] | None = None,
                  disk: bool = False) -> list[Missing]:
    """Every loader and image file the inventory's netboot hosts would boot that is
    missing (``disk``: also the images of hosts that boot from disk, which
    dsas-clone copies: their manifest).

    ``recipes(name)`` says whether an image has a recipe (then the fix is
    ``dsas image build``, else ``dsas image import``).
    """
    netboot = [h for h in inv.hosts.values() if h.boot == "netboot" and h.image]
    out = _missing_loaders(netboot, root)
    seen: set[tuple[str, str]] = set()
    wanted = [h for h in inv.hosts.values() if h.image and (disk or h.boot == "netboot")]
    for h in wanted:
        img = layout.host_image(inv, h)
        if img is None or img in seen:
            continue
        seen.add(img)
        users = sorted(x.name for x in wanted if layout.host_image(inv, x) == img)
        boots = any(layout.host_image(inv, x) == img for x in netboot)
        who = f"image {img[0]}@{img[1]} of {', '.join(users[:3])}" + (
            f" and {len(users) - 3} more" if len(users) > 3 else "")
        fix = _image_fix(img, recipes, root)
        if not os.path.isdir(os.path.join(root, layout.image_dir(*img))):
            out.append(Missing(layout.image_dir(*img) + "/", who, fix))  # one line, not three
            continue
        for f in (layout.KERNEL, layout.INITRD) if boots else (layout.MANIFEST,):
            path = layout.image_file(*img, f)
            if not is_static_file(root, path):
                out.append(Missing(path, who, fix))
    return out


def _missing_loaders(netboot: list[Host], root: str | os.PathLike[str]) -> list[Missing]:
    """The boot loaders the netboot hosts need that are not in the boot root."""
    loaders = [layout.LOADER_BIOS, layout.LOADER_EFI_X64] if netboot else []
    if any(h.loader == "pxelinux" for h in netboot):
        loaders += [layout.LOADER_PXELINUX, layout.LDLINUX]
    if any(h.loader == "grub-secure" for h in netboot):
        loaders += [layout.LOADER_SHIM, layout.LOADER_GRUB]
    return [Missing(name, "boot loader", f"{SETUP_COMMAND} --boot-root {root}")
            for name in loaders if not is_static_file(root, name)]


def _image_fix(img: tuple[str, str], recipes: Callable[[str], bool] | None,
               root: str | os.PathLike[str]) -> str:
    """The command that puts image ``img`` (name, version) into the boot root."""
    if recipes is None or recipes(img[0]):
        fix = f"dsas image build {img[0]} --boot-root {root}"
    else:
        fix = (f"dsas image import {img[0]} --kernel FILE --initrd FILE "
               f"--boot-root {root}")
    if img[1] != "current":
        fix = f"{fix} (then promote or pin version {img[1]})"
    return fix
