"""`dsas demo` without a source checkout: the lab package is not in the wheel."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from provision.cli import demo
from provision.cli.demo import NICS, Choice, _guests
from provision.cli.main import cli
from provision.inventory import load
from tests.support.paths import ROOT


def test_demo_without_the_lab_package_says_it_needs_a_source_checkout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an installed wheel: provision/ sits in site-packages, with no lab/ beside it
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    r = CliRunner().invoke(cli, ["demo", "--inventory", str(tmp_path / "lab.yaml")])
    assert r.exit_code == 2
    assert r.stdout == ""
    assert r.stderr.splitlines() == [f"error: {demo.NO_LAB}"]
    assert "dsas demo needs a source checkout" in r.stderr
    assert "Traceback" not in r.stderr


def test_demo_finds_the_lab_beside_the_source_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    # the editable install's dsas: the repository root is not on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path
                                      if Path(p or ".").resolve() != demo.ROOT])
    demo.use_source_lab()
    assert str(demo.ROOT) in sys.path
    assert (demo.ROOT / "lab" / "netns.py").is_file()


LAB = ROOT / "etc" / "dsas" / "lab.yaml"


def test_guests_option_takes_firmware_and_nic_model() -> None:
    inv = load(LAB)
    assert _guests("w101,w102:uefi,w103:bios:e1000", inv) == [
        Choice("w101", "bios", "virtio"), Choice("w102", "uefi", "virtio"),
        Choice("w103", "bios", "e1000")]
    assert NICS["e1000"] == "e1000" and NICS["virtio"] == "virtio-net-pci"
    for bad in ("w101:bios:rtl9999", "w101:arm", "nosuch", "w101:bios:e1000:x"):
        with pytest.raises(Exception, match="must be|not a host|HOST"):
            _guests(bad, inv)
