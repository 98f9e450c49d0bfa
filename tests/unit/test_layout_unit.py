"""provision/layout.py, the boot tree's path grammar: what it builds, it reads back."""

from __future__ import annotations

from pathlib import Path

import pytest

from provision import layout
from provision.inventory import Inventory


def test_every_per_host_path_reads_back_as_its_host_and_leaf(example: Inventory) -> None:
    h = example.hosts["w101"]
    built = {
        layout.dsas_conf_path(h): layout.DSAS_CONF,
        layout.ipxe_script_path(h): layout.BOOT_IPXE,
        layout.grub_cfg_path(h): layout.GRUB_CFG,
        layout.keepalived_conf_path(h): layout.KEEPALIVED_CONF,
    }
    assert set(built) == {"hosts/w101/dsas.conf", "hosts/w101/boot.ipxe",
                          "hosts/w101/grub.cfg", "hosts/w101/keepalived.conf"}
    for path, leaf in built.items():
        assert layout.host_file_of(path) == ("w101", leaf)
        assert layout.pxelinux_leaf(path) is None


@pytest.mark.parametrize("leaf", ["default", "01-52-54-00-12-00-01", "C6120001", "C6"])
def test_pxelinux_paths_read_back_as_their_leaf(leaf: str) -> None:
    path = layout.pxelinux_cfg_path(leaf)
    assert path == f"pxelinux.cfg/{leaf}"
    assert layout.pxelinux_leaf(path) == leaf
    assert layout.host_file_of(path) is None


@pytest.mark.parametrize("path", ["hosts/w101", "hosts/w101/x/boot.ipxe", "boot.ipxe",
                                  "images/base/1/vmlinuz", "x/hosts/w101/dsas.conf",
                                  "pxelinux.cfg", "pxelinux.cfg/a/b", "a/pxelinux.cfg/default"])
def test_other_paths_are_neither(path: str) -> None:
    assert layout.host_file_of(path) is None
    assert layout.pxelinux_leaf(path) is None


def test_image_paths() -> None:
    assert layout.image_dir("base", "3") == "images/base/3"
    assert layout.image_file("base", "3", layout.KERNEL) == "images/base/3/vmlinuz"
    assert layout.image_store("/srv/boot") == Path("/srv/boot/images")
