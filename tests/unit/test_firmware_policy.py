"""UEFI HTTP boot and Secure Boot (loader grub-secure) in the DHCP policy, the inventory
and the boot tree: pure units (the QEMU proofs are in test_firmware_lab.py)."""

from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path

import pytest

from provision.inventory import loads
from provision.inventory.errors import InventoryError
from provision.policy.boottree import BootTree, Refused, missing_files
from provision.policy.dhcp import DhcpPolicy, DhcpSettings, Link
from provision.policy.leases import LeaseTable
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import decode, encode
from tests.support.dhcp_support import (
    INVENTORY,
    IPXE_EFI,
    OVMF,
    SERVER,
    UNKNOWN_MAC,
    W1_MAC,
    client_packet,
)

LAN = Link("eth0", SERVER, IPv4Network("198.18.0.0/24"))
# What OVMF's HttpBootDxe sends (EDK2 HttpBootDhcp4.c): class HTTPClient, arch 16.
OVMF_HTTP = {o.VENDOR_CLASS: b"HTTPClient:Arch:00016:UNDI:003001", o.CLIENT_ARCH: o.u16(16),
             o.CLIENT_NDI: b"\x01\x03\x01", o.CLIENT_UUID: bytes(17)}
SECURE_MAC = "52:54:00:00:03:01"
SECURE_INVENTORY = INVENTORY.replace("hosts:\n", """\
  secure: {services: [], networks: [lan], image: base, hwtype: vm, loader: grub-secure,
           bond: {mode: none}}
hosts:
  s1: {role: secure, macs: ["52:54:00:00:03:01"], addresses: {lan: 198.18.0.31}}
""", 1).replace("  vm: {nics: [eth0]}\n",
                "  vm: {nics: [eth0]}\n  old: {nics: [eth0], firmware: [bios]}\n", 1)


def answer(inv_text: str, mac: str, extra: dict[int, bytes], **kw: object):  # type: ignore[no-untyped-def]
    p = DhcpPolicy(loads(inv_text, "lab.yaml"), LeaseTable(),
                   DhcpSettings(**kw))  # type: ignore[arg-type]
    d = p.handle(decode(encode(client_packet(o.DISCOVER, mac, extra=extra, client_id=False,
                                             broadcast=True))), LAN, 1000.0)
    assert d.reply is not None, d.drop
    return d.reply


def test_uefi_http_client_gets_the_url_of_ipxe_efi_and_its_class_echoed() -> None:
    for mac in (W1_MAC, SECURE_MAC):
        r = answer(SECURE_INVENTORY, mac, OVMF_HTTP)
        assert r.options[o.BOOTFILE_NAME] == b"http://198.18.0.1/ipxe.efi\0"
        assert r.file == b"http://198.18.0.1/ipxe.efi"
        assert r.options[o.VENDOR_CLASS] == b"HTTPClient"
    r = answer(INVENTORY, W1_MAC, OVMF_HTTP, http_port=8080)
    assert r.file == b"http://198.18.0.1:8080/ipxe.efi"


def test_http_client_of_another_arch_or_without_ipxe_efi_gets_no_boot_file() -> None:
    arm = {**OVMF_HTTP, o.CLIENT_ARCH: o.u16(19)}  # arm64 HTTP: no loader of ours
    for extra, kw in ((arm, {}), (OVMF_HTTP, {"loaders": frozenset({"undionly.kpxe"})})):
        r = answer(INVENTORY, W1_MAC, extra, **kw)
        assert o.BOOTFILE_NAME not in r.options and r.file == b""
        assert o.VENDOR_CLASS not in r.options  # not an HTTP boot offer


def test_pxe_and_ipxe_replies_carry_no_vendor_class() -> None:
    for extra in (OVMF, IPXE_EFI):
        assert o.VENDOR_CLASS not in answer(INVENTORY, W1_MAC, extra).options


def test_discovered_http_client_boots_ipxe_efi_too() -> None:
    r = answer(INVENTORY, UNKNOWN_MAC, OVMF_HTTP, discovery=True)
    assert r.file == b"http://198.18.0.1/ipxe.efi"


def test_grub_secure_host_gets_the_signed_shim_over_pxe() -> None:
    r = answer(SECURE_INVENTORY, SECURE_MAC, OVMF)
    assert r.options[o.BOOTFILE_NAME] == b"shimx64.efi\0" and r.file == b"shimx64.efi"
    assert answer(SECURE_INVENTORY, W1_MAC, OVMF).file == b"ipxe.efi"  # others unchanged
    r = answer(SECURE_INVENTORY, SECURE_MAC, OVMF, loaders=frozenset({"ipxe.efi"}))
    assert o.BOOTFILE_NAME not in r.options  # never a shim that is not there


def test_check_refuses_grub_secure_on_a_bios_only_hardware_type() -> None:
    bad = SECURE_INVENTORY.replace(
        'addresses: {lan: 198.18.0.31}}',
        'addresses: {lan: 198.18.0.31}}\n  s2: {role: secure, hwtype: old, '
        'macs: ["52:54:00:00:03:02"], addresses: {lan: 198.18.0.32}}', 1)
    with pytest.raises(InventoryError) as e:
        loads(bad, "lab.yaml")
    text = str(e.value)
    assert "hosts.s2.loader" in text and "needs UEFI" in text and "boots only bios" in text
    with pytest.raises(InventoryError, match=r"'efi' is not one of: bios, uefi"):
        loads(SECURE_INVENTORY.replace("firmware: [bios]", "firmware: [efi]"), "lab.yaml")
    inv = loads(SECURE_INVENTORY, "lab.yaml")
    assert inv.hosts["s1"].loader == "grub-secure"
    assert inv.hwtypes["old"].firmware == ("bios",) and inv.hwtypes["vm"].firmware == (
        "bios", "uefi")


def test_grub_cfg_is_rendered_per_host_and_for_grubs_prefix_by_address(tmp_path: Path) -> None:
    inv = loads(SECURE_INVENTORY, "lab.yaml")
    tree = BootTree(tmp_path, inv)
    cfg = tree.lookup("hosts/s1/grub.cfg").data
    assert cfg is not None
    text = cfg.decode()
    assert "linux (tftp,198.18.0.1)/images/base/v1/vmlinuz dsas.url=http://198.18.0.1/" \
           "hosts/s1/dsas.conf dsas.host=s1" in text
    assert "initrd (tftp,198.18.0.1)/images/base/v1/initrd.img" in text
    for name in ("grub/grub.cfg", "/grub/x86_64-efi/grub.cfg", "grub.cfg"):
        assert tree.lookup(name, "198.18.0.31").data == cfg
    with pytest.raises(Refused):
        tree.lookup("grub/grub.cfg", "198.18.0.99")
    missing = {m.path for m in missing_files(inv, tmp_path)}
    assert {"shimx64.efi", "grubx64.efi"} <= missing


def test_dsas_check_refuses_grub_secure_on_a_bios_only_type(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from provision.cli.main import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text(SECURE_INVENTORY.replace(
        'addresses: {lan: 198.18.0.31}}',
        'addresses: {lan: 198.18.0.31}, hwtype: old}', 1))
    r = CliRunner().invoke(cli, ["check", "-i", str(bad)])
    assert r.exit_code == 1 and r.stdout == ""
    assert "hosts.s1.loader" in r.stderr and "needs UEFI" in r.stderr, r.stderr
    good = tmp_path / "good.yaml"
    good.write_text(SECURE_INVENTORY)
    r = CliRunner().invoke(cli, ["check", "-i", str(good)])
    assert r.exit_code == 0, r.stderr
