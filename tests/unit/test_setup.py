"""From install to a master that boots: `dsas setup`, `dsas image import`, the boot
tree's presence checks (DHCP never names a missing loader), `dsas serve`'s start-up
report, `dsas check --boot-root`, the example's images having recipes."""

from __future__ import annotations

import gzip
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from provision import layout
from provision.imaging.recipe import find
from provision.imaging.store import ImageStore, PayloadError, import_image
from provision.inventory import load, loads
from provision.policy.boottree import (
    BootTree,
    LoaderPresence,
    missing_files,
    populate_loaders,
)
from provision.policy.dhcp import DhcpPolicy, DhcpSettings, Link
from provision.policy.leases import LeaseTable
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import decode, encode
from tests.support.dhcp_support import (
    INVENTORY,
    IPXE_ROM,
    OLD_MAC,
    OVMF,
    PXE_BIOS,
    SERVER,
    W1_MAC,
    client_packet,
)
from tests.support.paths import EXAMPLE, ROOT
from tests.support.setup_support import FOREIGN_INVENTORY, LAB_INVENTORY, fake_payload, run_dsas

LAN = Link("eth0", SERVER, IPv4Network("198.18.0.0/24"))


# -- dsas image import ----------------------------------------------------------------


def test_import_is_versioned_checksummed_and_verifies_like_a_built_image(
        tmp_path: Path) -> None:
    kernel, initrd, rootfs = fake_payload(tmp_path)
    boot = tmp_path / "boot"
    args = ["image", "import", "rescue", "--kernel", str(kernel), "--initrd", str(initrd),
            "--rootfs", str(rootfs), "--kernel-args", "console=ttyS0  quiet",
            "--boot-root", str(boot)]
    first = run_dsas(*args)
    assert "imported" in first.stdout and "already" not in first.stdout
    again = run_dsas(*args)
    assert "already imported" in again.stdout
    store = ImageStore(boot / "images")
    assert store.versions("rescue") == [store.resolve("rescue")]
    version = store.resolve("rescue")
    assert version is not None
    m = store.manifest("rescue", version)
    assert m is not None
    assert m["kind"] == "imported" and m["dsas_boot"] is False
    assert m["kernel_args"] == "console=ttyS0 quiet"
    assert set(m["files"]) == {layout.KERNEL, layout.INITRD, layout.ROOTFS}
    assert m["rootfs"]["etc/motd"]["type"] == "file"
    assert m["rootfs"]["etc/issue"]["target"] == "motd"
    d = store.dir("rescue", version)
    assert (d / layout.KERNEL).read_bytes() == kernel.read_bytes()
    with gzip.open(d / layout.ROOTFS) as f:  # stored gzip'd, as built images are
        assert f.read(1)
    assert "ok (3 artifacts, 2 entries)" in run_dsas("image", "verify", "rescue",
                                                 "--boot-root", str(boot)).stdout
    (d / layout.INITRD).write_bytes(b"tampered")
    bad = run_dsas("image", "verify", "rescue", "--boot-root", str(boot), check=False)
    assert bad.returncode == 1 and "initrd.img: sha256 mismatch" in bad.stderr


def test_import_refuses_bad_input_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    kernel, initrd, _ = fake_payload(tmp_path)
    boot = tmp_path / "boot"
    bad = run_dsas("image", "import", "x", "--kernel", str(kernel), "--initrd", str(initrd),
                "--kernel-args", "init=/bin/sh;reboot", "--boot-root", str(boot), check=False)
    assert bad.returncode == 1 and "--kernel-args" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = run_dsas("image", "import", "../x", "--kernel", str(kernel), "--initrd", str(initrd),
                "--boot-root", str(boot), check=False)
    assert bad.returncode == 1 and "image name" in bad.stderr
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(PayloadError, match="empty"):
        import_image(ImageStore(boot / "images"), "x", kernel, tmp_path / "empty")
    (tmp_path / "junk.tar").write_bytes(b"not a tar archive at all" * 40)
    with pytest.raises(PayloadError, match="tar"):
        import_image(ImageStore(boot / "images"), "x", kernel, initrd, tmp_path / "junk.tar")
    assert ImageStore(boot / "images").versions("x") == []


def test_a_foreign_image_boots_with_its_own_command_line_on_ipxe_and_pxelinux(
        tmp_path: Path) -> None:
    inv = loads(FOREIGN_INVENTORY, "foreign.yaml")
    kernel, initrd, _ = fake_payload(tmp_path)
    boot = tmp_path / "boot"
    store = ImageStore(boot / "images")
    version, _ = import_image(store, "rescue", kernel, initrd, kernel_args="vendor=1 quiet")
    tree = BootTree(boot, inv)
    ipxe = tree.lookup("hosts/r1/boot.ipxe").data
    assert ipxe is not None
    kline = next(line for line in ipxe.decode().splitlines() if line.startswith("kernel "))
    assert f"images/rescue/current/{layout.KERNEL}" in kline
    args = kline.split()[2:]
    assert args[:3] == ["initrd=initrd.img", "vendor=1", "quiet"]  # the payload's own first
    assert "console=ttyS0" in args and "panic=5" in args  # the cluster's still apply
    assert "rescue.mode=1" in args and "role.arg=1" in args and "host.arg=2" in args
    assert not [a for a in args if a.startswith("dsas.")], args  # none of dsas's
    pxe = tree.lookup("pxelinux.cfg/01-52-54-00-18-00-32").data
    assert pxe is not None
    append = next(x for x in pxe.decode().splitlines() if x.strip().startswith("APPEND"))
    assert "vendor=1" in append and "dsas." not in append
    assert f"KERNEL /images/rescue/current/{layout.KERNEL}" in pxe.decode()
    # a dsas image (built, or imported with --dsas-boot) keeps dsas's arguments
    tiny = tree.lookup("hosts/w101/boot.ipxe").data
    assert tiny is not None and b"dsas.url=" in tiny and b"dsas.shell=hvc0" in tiny
    v2, _ = import_image(store, "rescue", kernel, initrd, kernel_args="vendor=2",
                         dsas_boot=True)
    assert v2 != version
    ipxe = tree.lookup("hosts/r1/boot.ipxe").data  # the new current shows at once
    assert ipxe is not None and b"vendor=2" in ipxe and b"dsas.host=r1" in ipxe


# -- presence: DHCP never names a missing loader ----------------------------------------


def _offer(p: DhcpPolicy, mac: str, extra: dict[int, bytes]) -> bytes | None:
    pkt = client_packet(o.DISCOVER, mac, extra=extra)
    d = p.handle(decode(encode(pkt)), LAN, 1000.0)
    assert d.reply is not None
    name = d.reply.options.get(o.BOOTFILE_NAME)
    return name.rstrip(b"\0") if name is not None else None


def test_dhcp_offers_only_loaders_that_are_in_the_boot_root(tmp_path: Path) -> None:
    inv = loads(INVENTORY, "lab.yaml")
    boot = tmp_path / "boot"
    boot.mkdir()
    clock = [0.0]
    presence = LoaderPresence(boot, interval=5.0, clock=lambda: clock[0])
    p = DhcpPolicy(inv, LeaseTable(), DhcpSettings(loaders=presence.current()))
    for mac, extra in ((W1_MAC, PXE_BIOS), (W1_MAC, OVMF), (OLD_MAC, PXE_BIOS)):
        assert _offer(p, mac, extra) is None  # an address, but no file that isn't there
    assert _offer(p, W1_MAC, IPXE_ROM) == b"http://198.18.0.1/hosts/w1/boot.ipxe"  # rendered
    populate_loaders(boot)
    same = presence.current()
    assert same == frozenset() and presence.current() is same  # cached: no stat per packet
    clock[0] = 5.0
    now = presence.current()
    assert now == {"undionly.kpxe", "ipxe.efi", "pxelinux.0", "shimx64.efi"}
    p.settings = DhcpSettings(loaders=now)
    assert _offer(p, W1_MAC, PXE_BIOS) == b"undionly.kpxe"
    assert _offer(p, W1_MAC, OVMF) == b"ipxe.efi"
    assert _offer(p, OLD_MAC, PXE_BIOS) == b"pxelinux.0"
    (boot / "ipxe.efi").unlink()
    clock[0] = 10.0
    assert presence.current() == {"undionly.kpxe", "pxelinux.0", "shimx64.efi"}


def test_missing_files_names_each_file_and_its_fix(tmp_path: Path) -> None:
    inv = load(LAB_INVENTORY)
    boot = tmp_path / "boot"
    got = {m.path: m.fix for m in missing_files(inv, boot, lambda name: name == "tiny")}
    assert got == {
        "undionly.kpxe": f"dsas setup --boot-root {boot}",
        "ipxe.efi": f"dsas setup --boot-root {boot}",
        "images/tiny/current/": f"dsas image build tiny --boot-root {boot}",
    }
    populate_loaders(boot)
    (boot / "images/tiny/v1").mkdir(parents=True)
    (boot / "images/tiny/current").symlink_to("v1")
    (boot / "images/tiny/v1" / layout.KERNEL).write_bytes(b"k")
    assert [m.path for m in missing_files(inv, boot)] == [f"images/tiny/current/{layout.INITRD}"]
    (boot / "images/tiny/v1" / layout.INITRD).write_bytes(b"i")
    assert missing_files(inv, boot) == []


def test_check_boot_root_warns_about_the_images_the_inventory_names(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    populate_loaders(boot)
    out = run_dsas("check", "-i", str(EXAMPLE), "--boot-root", str(boot))
    warnings = out.stderr.splitlines()
    assert len(warnings) == 2, out.stderr
    assert f"warning: {boot}/images/base/current/ missing" in warnings[0]
    assert f"dsas image build base --boot-root {boot}" in warnings[0]
    assert "images/web/current/" in warnings[1]
    plain = run_dsas("check", "-i", str(EXAMPLE))
    assert plain.stderr == ""


def test_every_image_the_example_names_has_a_recipe_with_its_files() -> None:
    inv = load(EXAMPLE)
    named = {h.image for h in inv.hosts.values() if h.image} | set(inv.images)
    for name in sorted(named):
        recipe = find(ROOT / "images", name)
        for rel in [f.src for f in recipe.files] + list(recipe.hooks):
            assert (ROOT / rel).is_file(), f"{name}: {rel}"
        if recipe.boot:
            find(ROOT / "images", recipe.boot)


# -- dsas setup and dsas serve's start-up report, in a namespace -------------------------


