"""Where things live in the boot tree, shared by DHCP, TFTP, HTTP and the renderers.

The boot tree is one virtual file tree served by both TFTP and HTTP. Paths are
relative to its root, with '/' separators and no leading slash.

    undionly.kpxe, ipxe.efi, snponly.efi      iPXE loaders (static, from Debian's ipxe)
    pxelinux.0, ldlinux.c32, *.c32            pxelinux (static, pxelinux/syslinux-common)
    pxelinux.cfg/01-<mac> | <HEXIP> | default rendered per host on request
    hosts/<name>/boot.ipxe                    rendered per host: the host's iPXE script
    hosts/<name>/grub.cfg                     rendered per host: GRUB's config (grub-secure)
    shimx64.efi, grubx64.efi                  Debian's signed shim and GRUB netboot image
    hosts/<name>/dsas.conf                    rendered per host: its identity file
    hosts/<name>/keepalived.conf[.sha256]     rendered per LVS director, and its checksum
    boot.ipxe, <any dir>/grub.cfg             rendered for the asking machine (by address)
    discovery.ipxe                            rendered: an unknown machine's iPXE script
    images/<image>/<version>/vmlinuz          image store: kernel
    images/<image>/<version>/initrd.img       image store: netboot initramfs
    images/<image>/<version>/rootfs.tar.gz    image store: root filesystem
    images/<image>/<version>/manifest.json    image store: version and sha256 of every file

This module is the path grammar: the names below build every path, and
``host_file_of`` / ``pxelinux_leaf`` read a client's path back (the boot tree's
lookup), so no other module spells a boot-tree path out.
"""

from __future__ import annotations

import os
from pathlib import Path

from .inventory.model import Host, Inventory

HOSTS_DIR = "hosts"  # hosts/<name>/...: per-host rendered files
IMAGES_DIR = "images"  # images/<image>/<version>/...: the image store
PXELINUX_DIR = "pxelinux.cfg"  # pxelinux's config directory
PXELINUX_DEFAULT = "default"  # pxelinux.cfg/default: a machine not in the inventory

# Per-host files (hosts/<name>/<leaf>); BOOT_IPXE and GRUB_CFG are also served
# elsewhere for the asking machine.
BOOT_IPXE = "boot.ipxe"
DSAS_CONF = "dsas.conf"
GRUB_CFG = "grub.cfg"
# A director's keepalived.conf and its checksum (sha256sum's format): the node
# fetches both and installs the file only when they agree (dsas-init's lvs step).
KEEPALIVED_CONF = "keepalived.conf"
KEEPALIVED_SUM = "keepalived.conf.sha256"

KERNEL = "vmlinuz"
INITRD = "initrd.img"
ROOTFS = "rootfs.tar.gz"
MANIFEST = "manifest.json"

# Boot loaders by firmware, as RFC 4578 client architecture types choose them.
LOADER_BIOS = "undionly.kpxe"
LOADER_EFI_X64 = "ipxe.efi"
LOADER_EFI_ARM64 = "ipxe-arm64.efi"
LOADER_SNP = "snponly.efi"  # iPXE using the firmware's network driver
LOADER_PXELINUX = "pxelinux.0"
LOADER_LPXELINUX = "lpxelinux.0"  # pxelinux with HTTP
LDLINUX = "ldlinux.c32"  # pxelinux.0 loads it first
# Secure Boot (loader: grub-secure): Debian's signed shim, which fetches the signed
# GRUB netboot image under the name compiled into it (next to itself), which reads
# the host's rendered grub.cfg (GRUB_CFG_NAMES) and loads the signed kernel.
LOADER_SHIM = "shimx64.efi"
LOADER_GRUB = "grubx64.efi"

# What an unknown machine's iPXE boots when discovery is on (no host image).
DISCOVERY_SCRIPT = "discovery.ipxe"


def host_dir(host: Host) -> str:
    return f"{HOSTS_DIR}/{host.name}"


def dsas_conf_path(host: Host) -> str:
    return f"{host_dir(host)}/{DSAS_CONF}"


def ipxe_script_path(host: Host) -> str:
    return f"{host_dir(host)}/{BOOT_IPXE}"


def grub_cfg_path(host: Host) -> str:
    return f"{host_dir(host)}/{GRUB_CFG}"


def keepalived_conf_path(host: Host) -> str:
    return f"{host_dir(host)}/{KEEPALIVED_CONF}"


def pxelinux_cfg_path(leaf: str) -> str:
    """pxelinux.cfg/<leaf>: a per-MAC or per-address name, or PXELINUX_DEFAULT."""
    return f"{PXELINUX_DIR}/{leaf}"


def image_dir(image: str, version: str) -> str:
    return f"{IMAGES_DIR}/{image}/{version}"


def image_file(image: str, version: str, leaf: str) -> str:
    """images/<image>/<version>/<leaf>: KERNEL, INITRD, ROOTFS or MANIFEST."""
    return f"{image_dir(image, version)}/{leaf}"


def image_store(boot_root: str | os.PathLike[str]) -> Path:
    """The image store's directory under a boot root."""
    return Path(boot_root) / IMAGES_DIR


def host_file_of(path: str) -> tuple[str, str] | None:
    """(host name, leaf) of a clean ``hosts/<name>/<leaf>`` path, else None."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == HOSTS_DIR:
        return parts[1], parts[2]
    return None


def pxelinux_leaf(path: str) -> str | None:
    """The <leaf> of a clean ``pxelinux.cfg/<leaf>`` path, else None."""
    parts = path.split("/")
    if len(parts) == 2 and parts[0] == PXELINUX_DIR:
        return parts[1]
    return None


def host_image(inv: Inventory, host: Host) -> tuple[str, str] | None:
    """(image name, version) the host boots, or None when it has no image."""
    if host.image is None:
        return None
    img = inv.images.get(host.image)
    return host.image, (img.version if img else "current")


def pxelinux_mac_name(mac: str) -> str:
    """pxelinux's per-MAC config name: ARP type 1, dashes, lower case."""
    return "01-" + mac.lower().replace(":", "-")


def pxelinux_ip_name(address: str) -> str:
    """pxelinux's per-address config name: the address in upper-case hex."""
    return "".join(f"{int(o):02X}" for o in str(address).split("."))


def base_url(inv: Inventory, host: Host | None = None) -> str:
    """The master's URL; for a ``netboot6`` host, by its IPv6 address (bracketed)."""
    port = inv.cluster.http_port
    a6 = inv.cluster.master_address6
    name = f"[{a6}]" if host is not None and host.netboot6 and a6 is not None \
        else str(inv.cluster.master_address)
    return f"http://{name}" if port == 80 else f"http://{name}:{port}"


def url(inv: Inventory, path: str, host: Host | None = None) -> str:
    return f"{base_url(inv, host)}/{path.lstrip('/')}"
