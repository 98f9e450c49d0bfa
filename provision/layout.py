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
    images/<image>/<version>/vmlinuz          image store: kernel
    images/<image>/<version>/initrd.img       image store: netboot initramfs
    images/<image>/<version>/rootfs.tar.gz    image store: root filesystem
    images/<image>/<version>/manifest.json    image store: version and sha256 of every file
"""

from __future__ import annotations

from .inventory.model import Host, Inventory

KERNEL = "vmlinuz"
INITRD = "initrd.img"
ROOTFS = "rootfs.tar.gz"
MANIFEST = "manifest.json"

# Boot loaders by firmware, as RFC 4578 client architecture types choose them.
LOADER_BIOS = "undionly.kpxe"
LOADER_EFI_X64 = "ipxe.efi"
LOADER_EFI_ARM64 = "ipxe-arm64.efi"
LOADER_PXELINUX = "pxelinux.0"
# Secure Boot (loader: grub-secure): Debian's signed shim, which fetches the signed
# GRUB netboot image under the name compiled into it (next to itself), which reads
# the host's rendered grub.cfg (GRUB_CFG_NAMES) and loads the signed kernel.
LOADER_SHIM = "shimx64.efi"
LOADER_GRUB = "grubx64.efi"

# What an unknown machine's iPXE boots when discovery is on (no host image).
DISCOVERY_SCRIPT = "discovery.ipxe"


def host_dir(host: Host) -> str:
    return f"hosts/{host.name}"


def dsas_conf_path(host: Host) -> str:
    return f"{host_dir(host)}/dsas.conf"


def ipxe_script_path(host: Host) -> str:
    return f"{host_dir(host)}/boot.ipxe"


def grub_cfg_path(host: Host) -> str:
    return f"{host_dir(host)}/grub.cfg"


def image_dir(image: str, version: str) -> str:
    return f"images/{image}/{version}"


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
