"""The boot tree: one virtual file tree that TFTP and HTTP both serve.

Policy only: no sockets. ``BootTree.lookup(name, peer)`` answers "what are the
bytes behind this name, for this client?" with a ``BootFile`` or raises
``Refused`` carrying a reason that each protocol maps to its own error
(``tftp_code`` / ``http_status``).

Two kinds of file live in the tree (paths from ``provision.layout``):

* static files under the boot root: the loaders (copied in by
  ``populate_loaders``) and the image store (``images/<img>/<ver>/...``);
* per-host files rendered on every request from the current inventory
  (``pxelinux.cfg/01-<mac>``, ``pxelinux.cfg/<HEXIP>`` and its prefixes,
  ``pxelinux.cfg/default``, ``hosts/<name>/boot.ipxe``, ``hosts/<name>/dsas.conf``
  and ``boot.ipxe`` for the asking machine). Nothing is pre-generated, so an
  inventory change is visible to the next request.

Every name goes through ``confine()`` first: the one place that decides what a
client may name, for both protocols. Whether the files the master hands out are
there (``missing_files``, ``LoaderPresence``) is ``provision.policy.presence``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from .. import layout
from ..errors import OUT_OF_DESCRIPTORS
from ..inventory.model import Host, Inventory
from .presence import (  # re-exported: callers and tests import them from here
    SETUP_COMMAND,  # noqa: F401
    LoaderPresence,  # noqa: F401
    Missing,  # noqa: F401
    is_static_file,  # noqa: F401
    missing_files,  # noqa: F401
)

if TYPE_CHECKING:
    from ..render.engine import ImagePayload

log = logging.getLogger(__name__)

# TFTP error codes used by the tree (RFC 1350, section 5 "TFTP Packets", ERROR).
TFTP_ERR_UNDEFINED = 0  # Not defined, see error message (RFC 1350)
TFTP_ERR_FILE_NOT_FOUND = 1  # File not found (RFC 1350)
TFTP_ERR_ACCESS_VIOLATION = 2  # Access violation (RFC 1350)

# The longest name a client may ask for, in bytes. pxelinux and iPXE names are
# far shorter; the limit keeps log lines and lookups bounded.
MAX_NAME_BYTES = 255
MAX_COMPONENT_BYTES = 128


@dataclass(frozen=True)
class Reason:
    """Why a name was refused, and what each protocol answers."""

    key: str  # metrics label: dsas_*_errors_total{reason=...}
    tftp_code: int
    http_status: int


def _forbidden(key: str) -> Reason:
    """A name the client may not ask for: TFTP access violation, HTTP 403 Forbidden."""
    return Reason(key, TFTP_ERR_ACCESS_VIOLATION, 403)


def _absent(key: str) -> Reason:
    """A name with nothing behind it: TFTP file not found, HTTP 404 Not Found."""
    return Reason(key, TFTP_ERR_FILE_NOT_FOUND, 404)


TRAVERSAL, ABSOLUTE, BACKSLASH, NUL, CONTROL, TOO_LONG, OUTSIDE_ROOT, NOT_REGULAR, OTHER_HOST = (
    _forbidden(key) for key in ("traversal", "absolute", "backslash", "nul", "control_char",
                                "too_long", "outside_root", "not_regular", "other_host"))
NOT_FOUND, NOT_IN_INVENTORY = _absent("not_found"), _absent("not_in_inventory")
RENDER_FAILED = Reason("render_failed", TFTP_ERR_UNDEFINED, 500)  # a template or inventory fault
# out of descriptors or memory at open: the client's name is fine, it should try again (a
# 403 would tell iPXE the file is forbidden for good); the label the TFTP listener counts
# its own descriptor refusals under
OUT_OF_FDS = Reason("descriptors", TFTP_ERR_UNDEFINED, 503)


class Refused(Exception):
    """A name the tree will not serve; ``reason`` says which protocol error."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


# --------------------------------------------------------------------------
# Confinement: the one function both protocols call.


def confine(name: str | bytes) -> str:
    """Check a client-supplied name and return it as a clean relative path.

    One leading '/' is stripped (TFTP clients and HTTP both send it). Refused:
    '..' components, a still-absolute path, backslashes, NUL and other control
    characters, over-long names. Empty and '.' components are dropped.
    Raises ``Refused``.
    """
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    _check_characters(name)
    if name.startswith("/"):
        name = name[1:]
    if name.startswith("/"):
        raise Refused(ABSOLUTE, "absolute file name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise Refused(TRAVERSAL, "'..' in file name")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES for p in parts):
        raise Refused(TOO_LONG, f"path component longer than {MAX_COMPONENT_BYTES} bytes")
    if not parts:
        raise Refused(NOT_FOUND, "empty file name")
    return "/".join(parts)


def _check_characters(name: str) -> None:
    """No NUL, control character or backslash, and not over-long (``Refused``)."""
    if "\x00" in name:
        raise Refused(NUL, "NUL byte in file name")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise Refused(TOO_LONG, f"file name longer than {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise Refused(CONTROL, "control character in file name")
    if "\\" in name:
        raise Refused(BACKSLASH, "backslash in file name")


# --------------------------------------------------------------------------
# What a lookup returns.


@dataclass(frozen=True)
class BootFile:
    """One servable file: either bytes rendered now, or a regular file on disk."""

    path: str  # clean relative path, as confine() returned it
    size: int
    mtime: float
    data: bytes | None = None  # rendered content
    fs_path: str | None = None  # static file, already checked
    host: str | None = None  # the inventory host it was rendered for

    @property
    def rendered(self) -> bool:
        return self.data is not None

    @property
    def etag(self) -> str:
        """A strong validator: content hash when rendered, inode/size/mtime on disk."""
        if self.data is not None:
            return '"r-' + hashlib.sha256(self.data).hexdigest()[:32] + '"'
        return f'"s-{self.size:x}-{int(self.mtime * 1e9):x}"'

    def open(self) -> BinaryIO:
        """A binary reader for the content (the caller closes it)."""
        if self.data is not None:
            import io

            return io.BytesIO(self.data)
        assert self.fs_path is not None
        return _open_regular(self.fs_path)[0]


def _open_regular(path: str) -> tuple[BinaryIO, os.stat_result]:
    """Open without following a final symlink or blocking on a FIFO; must be S_ISREG."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise Refused(NOT_FOUND, "file not found") from None
    except OSError as e:  # ELOOP from O_NOFOLLOW, EACCES, ENXIO (socket) ...
        why = OUT_OF_FDS if e.errno in OUT_OF_DESCRIPTORS else NOT_REGULAR
        raise Refused(why, f"cannot open: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise Refused(NOT_FOUND, "is a directory")
        raise Refused(NOT_REGULAR, "not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st


# --------------------------------------------------------------------------
# The tree.

Renderer = Callable[..., str]  # (inventory, host, what[, lb overrides]) -> text
DefaultRenderer = Callable[[Inventory], str]

# Per-host files under hosts/<name>/ by leaf name -> the renderer's file kind.
HOST_FILES = {layout.BOOT_IPXE: "ipxe", layout.DSAS_CONF: "dsas.conf", layout.GRUB_CFG: "grub"}
KEEPALIVED_FILES = (layout.KEEPALIVED_CONF, layout.KEEPALIVED_SUM)
_PXE_MAC = re.compile(r"^01-((?:[0-9a-f]{2}-){5}[0-9a-f]{2})$")
_PXE_HEX = re.compile(r"^[0-9A-F]{1,8}$")


class Renderers(NamedTuple):
    """What the tree renders: per-host files, and the two files of unknown machines."""

    host: Renderer
    default: DefaultRenderer  # pxelinux.cfg/default
    discovery: DefaultRenderer  # discovery.ipxe


def renderers(templates: str | Path | None = None,
              root: str | os.PathLike[str] | None = None) -> Renderers:
    """The real renderers (``provision.render``), all with the same template override dir.

    With ``root``, a host's boot files follow its image's manifest in the store
    there (a foreign payload gets its own kernel arguments and no ``dsas.*``).
    """
    from .. import render

    payloads = Payloads(root) if root is not None else None

    def host_file(inv: Inventory, host: Host, what: str, lb: Any = None) -> str:
        payload = None
        if payloads is not None and what in render.BOOT_FILES:
            img = layout.host_image(inv, host)
            payload = payloads.get(*img) if img else None
        return render.render_host(inv, host, what, templates, payload, lb)

    def default(inv: Inventory) -> str:
        return render.render_pxelinux_default(inv, templates)

    def discovery(inv: Inventory) -> str:
        return render.render_discovery_ipxe(inv, templates)

    return Renderers(host_file, default, discovery)


class BootTree:
    """Static files under ``root`` plus per-host files rendered from ``inventory``."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        inventory: Inventory,
        render_host: Renderer | None = None,
        render_default: DefaultRenderer | None = None,
        templates: str | Path | None = None,
        render_discovery: DefaultRenderer | None = None,
    ):
        self.root = os.path.realpath(root)
        self.inventory = inventory  # replaced on reload; read once per lookup
        # Lines appended to each served dsas.conf, per host name (HTTP's boot-report token).
        self.conf_extra: Callable[[str], str] | None = None
        # The pools' drains and holds (balancer.members), read for each keepalived.conf.
        self.lb_overrides: Callable[[], Any] | None = None
        # host -> (image, version) a rollout pinned it to (state.rollout), read for each
        # of its boot files: it boots that version, not the inventory's (issue 23).
        self.image_pins: Callable[[], dict[str, tuple[str, str]]] | None = None
        real = renderers(templates, self.root)
        self._render_host = render_host or real.host
        self._render_default = render_default or real.default
        self._render_discovery = render_discovery or real.discovery

    def reload(self, inventory: Inventory) -> None:
        """Serve ``inventory`` from now on, and read the templates again (SIGHUP)."""
        from .. import render

        render.reload_templates()
        self.inventory = inventory

    def lookup(self, name: str | bytes, peer: str | None = None) -> BootFile:
        """Resolve a client's name (``peer``: its IP address) or raise ``Refused``."""
        path = confine(name)
        inv = self.inventory
        rendered = self._rendered(inv, path, peer)
        if rendered is not None:
            return rendered
        return self._static(path)

    # -- per-host files ------------------------------------------------------

    def _rendered(self, inv: Inventory, path: str, peer: str | None) -> BootFile | None:
        leaf = layout.pxelinux_leaf(path)
        if leaf is not None:
            return self._pxelinux(inv, path, leaf, peer)
        host_file = layout.host_file_of(path)
        if host_file is not None and host_file[1] in HOST_FILES:
            host = inv.hosts.get(host_file[0])
            if host is None:
                raise Refused(NOT_IN_INVENTORY, f"host {host_file[0]!r} not in inventory")
            return self._render(inv, host, HOST_FILES[host_file[1]], path)
        if host_file is not None and host_file[1] in KEEPALIVED_FILES:
            return self._keepalived(inv, host_file[0], host_file[1], path, peer)
        parts = path.split("/")
        if parts[-1] == layout.GRUB_CFG and parts[0] != layout.HOSTS_DIR \
                and not self._exists(path):
            # GRUB's netboot image reads grub.cfg under its compiled-in prefix: the
            # asking machine's own config, found by its address (like boot.ipxe).
            host = inv.host_by_ip(peer) if peer else None
            if host is None:
                raise Refused(NOT_IN_INVENTORY, f"address {peer} not in inventory")
            return self._render(inv, host, "grub", path)
        if path == layout.DISCOVERY_SCRIPT and not self._exists(path):
            return self._bytes(path, self._call(self._render_discovery, inv), None)
        if path == layout.BOOT_IPXE and not self._exists(path):
            host = inv.host_by_ip(peer) if peer else None
            if host is None:
                raise Refused(NOT_IN_INVENTORY, f"address {peer} not in inventory")
            return self._render(inv, host, "ipxe", path)
        return None

    def _keepalived(self, inv: Inventory, name: str, leaf: str, path: str,
                    peer: str | None) -> BootFile:
        """A director's keepalived.conf (it holds the VRRP password: a peer known as
        another host may not read it), or its ``sha256sum`` line."""
        host = inv.hosts.get(name)
        if host is None:
            raise Refused(NOT_IN_INVENTORY, f"host {name!r} not in inventory")
        if not any(h.name == name for h, _, _ in inv.lvs_hosts()):
            raise Refused(NOT_FOUND, f"host {name} is in no LVS pair: no {layout.KEEPALIVED_CONF}")
        by_peer = inv.host_by_ip(peer) if peer else None
        if by_peer is not None and by_peer.name != name:
            raise Refused(OTHER_HOST, f"{peer} is {by_peer.name}, not {name}")
        lb = self.lb_overrides() if self.lb_overrides is not None else None
        text = self._call(self._render_host, inv, host, "keepalived",
                          *(() if lb is None else (lb,)))
        if leaf == layout.KEEPALIVED_SUM:
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            text = f"{digest}  {layout.KEEPALIVED_CONF}\n"
        return self._bytes(path, text, host.name)

    def _pxelinux(self, inv: Inventory, path: str, leaf: str, peer: str | None) -> BootFile:
        if leaf == layout.PXELINUX_DEFAULT:
            return self._bytes(path, self._call(self._render_default, inv), None)
        m = _PXE_MAC.match(leaf)
        if m:
            host = inv.host_by_mac(m.group(1).replace("-", ":"))
            if host is None:
                raise Refused(NOT_IN_INVENTORY, f"MAC {m.group(1)} not in inventory")
            return self._render(inv, host, "pxelinux", path)
        if _PXE_HEX.match(leaf):
            host = _host_for_hex(inv, leaf, peer)
            if host is None:
                raise Refused(NOT_IN_INVENTORY, f"no inventory host for {leaf}")
            return self._render(inv, host, "pxelinux", path)
        raise Refused(NOT_FOUND, f"no pxelinux config {leaf!r}")

    def _render(self, inv: Inventory, host: Host, what: str, path: str) -> BootFile:
        if self.image_pins is not None:
            inv = pinned(inv, host, self.image_pins())
        text = self._call(self._render_host, inv, host, what)
        if what == "dsas.conf" and self.conf_extra is not None:
            text += self.conf_extra(host.name)
        return self._bytes(path, text, host.name)

    @staticmethod
    def _call(fn: Callable[..., str], *args: object) -> str:
        try:
            return fn(*args)
        except Refused:
            raise
        except Exception as e:  # a template or inventory problem: the client gets an error
            log.warning("render failed: %s: %s", type(e).__name__, e)
            raise Refused(RENDER_FAILED, f"render failed: {e}"[:200]) from None

    @staticmethod
    def _bytes(path: str, text: str, host: str | None) -> BootFile:
        import time

        data = text.encode("utf-8")
        return BootFile(path=path, size=len(data), mtime=time.time(), data=data, host=host)

    # -- static files --------------------------------------------------------

    def _exists(self, path: str) -> bool:
        return os.path.lexists(os.path.join(self.root, path))

    def _static(self, path: str) -> BootFile:
        real = os.path.realpath(os.path.join(self.root, path))
        if os.path.commonpath([self.root, real]) != self.root:
            raise Refused(OUTSIDE_ROOT, "symlink leads outside the boot root")
        f, st = _open_regular(real)
        f.close()
        return BootFile(path=path, size=st.st_size, mtime=st.st_mtime, fs_path=real)


class Payloads:
    """Image manifests' boot flags, by concrete version (versions never change).

    One readlink per lookup to follow ``current``; the manifest is read once per
    version. An image that is not in the store is rendered as a dsas image.
    """

    LIMIT = 1024

    def __init__(self, root: str | os.PathLike[str]):
        self.store = layout.image_store(root)
        self._cache: dict[tuple[str, str], ImagePayload] = {}

    def get(self, image: str, version: str) -> ImagePayload | None:
        from ..imaging.store import uses_dsas_boot
        from ..render import ImagePayload

        try:
            concrete = os.path.basename(os.path.realpath(self.store / image / version))
        except OSError:
            return None
        key = (image, concrete)
        if key in self._cache:
            return self._cache[key]
        try:
            import json

            m = json.loads((self.store / image / concrete / layout.MANIFEST).read_text())
        except (OSError, ValueError):
            return None  # not there (yet): not cached, so an import shows at once
        if not isinstance(m, dict):
            return None
        payload = ImagePayload(dsas_boot=uses_dsas_boot(m),
                               kernel_args=str(m.get("kernel_args") or ""))
        if len(self._cache) >= self.LIMIT:
            self._cache.clear()
        self._cache[key] = payload
        return payload


def _host_for_hex(inv: Inventory, leaf: str, peer: str | None) -> Host | None:
    """pxelinux's <HEXIP> name: the full address, or a prefix of the asker's address."""
    if len(leaf) == 8:
        return inv.host_by_ip(ipaddress.IPv4Address(int(leaf, 16)))
    if peer is None:
        return None
    try:
        mine = layout.pxelinux_ip_name(str(ipaddress.IPv4Address(peer)))
    except ValueError:
        return None
    return inv.host_by_ip(peer) if mine.startswith(leaf) else None


# --------------------------------------------------------------------------
# Loaders from Debian's packages.

# (tree name, candidate source paths in Debian 12 packages)
LOADER_SOURCES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (layout.LOADER_BIOS, ("/usr/lib/ipxe/undionly.kpxe",)),  # ipxe
    (layout.LOADER_EFI_X64, ("/usr/lib/ipxe/ipxe.efi",)),  # ipxe
    (layout.LOADER_SNP, ("/usr/lib/ipxe/snponly.efi",)),  # ipxe
    (layout.LOADER_PXELINUX, ("/usr/lib/PXELINUX/pxelinux.0",)),  # pxelinux
    (layout.LOADER_LPXELINUX, ("/usr/lib/PXELINUX/lpxelinux.0",)),  # pxelinux
    # Secure Boot (loader grub-secure): signed by Microsoft's UEFI CA (shim) and by
    # Debian (GRUB); shim fetches GRUB as grubx64.efi from its own directory.
    (layout.LOADER_SHIM, ("/usr/lib/shim/shimx64.efi.signed",)),  # shim-signed
    (layout.LOADER_GRUB, ("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",)),
)
LOADER_PACKAGES = {"ipxe": "ipxe", "PXELINUX": "pxelinux", "shim": "shim-signed",
                   "grub": "grub-efi-amd64-signed"}
SYSLINUX_MODULES = "/usr/lib/syslinux/modules/bios"  # syslinux-common: *.c32


def populate_loaders(boot_root: str | os.PathLike[str],
                     changed: list[str] | None = None) -> list[str]:
    """Copy the boot loaders from Debian's packages into ``boot_root``.

    Copies (not symlinks: a link would point outside the root, which the tree
    refuses). A file is rewritten only when its size or content changed (its
    name is then appended to ``changed``). Returns the tree names present
    afterwards; raises FileNotFoundError naming the package when a loader is missing.
    """
    root = Path(boot_root)
    root.mkdir(parents=True, exist_ok=True)
    pairs: list[tuple[str, Path]] = []
    for name, candidates in LOADER_SOURCES:
        src = next((Path(c) for c in candidates if os.path.isfile(c)), None)
        if src is None:
            pkg = next(p for key, p in LOADER_PACKAGES.items() if key in candidates[0])
            raise FileNotFoundError(f"{candidates[0]} missing: install Debian package {pkg}")
        pairs.append((name, src))
    mods = Path(SYSLINUX_MODULES)
    if not mods.is_dir():
        raise FileNotFoundError(f"{mods} missing: install Debian package syslinux-common")
    pairs += [(p.name, p) for p in sorted(mods.glob("*.c32"))]
    for name, src in pairs:
        if _copy_if_changed(src, root / name) and changed is not None:
            changed.append(name)
    return [name for name, _ in pairs]


def _copy_if_changed(src: Path, dst: Path) -> bool:
    if dst.is_file() and not dst.is_symlink():
        if dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
            return False
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)
    return True


def pinned(inv: Inventory, host: Host, pins: dict[str, tuple[str, str]]) -> Inventory:
    """``inv`` with the version of ``host``'s image that a rollout pinned it to (the
    inventory itself when it has no pin, or a pin of another image)."""
    pin = pins.get(host.name)
    if pin is None or host.image != pin[0] or pin[0] not in inv.images:
        return inv
    img = inv.images[pin[0]]
    if img.version == pin[1]:
        return inv
    return dataclasses.replace(inv, images={**inv.images,
                                            pin[0]: dataclasses.replace(img, version=pin[1])})

