"""The boot tree's lookups and loaders, branch by branch (issue 24: survivors of
mutation testing in policy/boottree.py)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from lab.bootfiles import inventory
from provision import layout
from provision.inventory.model import Host, Inventory
from provision.policy import boottree
from provision.policy.boottree import BootTree, Refused, populate_loaders


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def host(self, inv: Inventory, host: Host, what: str) -> str:
        self.calls.append((inv, host.name, what))
        return f"{what} for {host.name}\n"

    def default(self, inv: Inventory) -> str:
        self.calls.append((inv, "default"))
        return "DEFAULT\n"


@pytest.fixture
def rec(tmp_path: Path) -> tuple[BootTree, Recorder, Path]:
    root = tmp_path / "boot"
    (root / "sub").mkdir(parents=True)
    (root / "sub/file").write_bytes(b"two levels")
    (root / "pxelinux.cfg").mkdir()
    r = Recorder()
    return BootTree(root, inventory(), r.host, r.default), r, root


def reason(t: BootTree, name: str, peer: str | None = None) -> str:
    with pytest.raises(Refused) as e:
        t.lookup(name, peer)
    assert e.value.message  # always says why
    return e.value.reason.key


def test_renderers_get_the_inventory_the_host_and_what(rec: tuple[BootTree, Recorder, Path]
                                                       ) -> None:
    t, r, _ = rec
    inv = t.inventory
    cases = [("pxelinux.cfg/01-52-54-00-04-00-11", (inv, "n1", "pxelinux")),
             ("pxelinux.cfg/C612040C", (inv, "n2", "pxelinux")),
             ("hosts/n1/boot.ipxe", (inv, "n1", "ipxe")),
             ("hosts/n2/dsas.conf", (inv, "n2", "dsas.conf")),
             ("pxelinux.cfg/default", (inv, "default"))]
    for name, call in cases:
        f = t.lookup(name)
        assert r.calls[-1] == call, name
        assert f.path == name and f.rendered and f.fs_path is None
        assert f.size == len(f.data or b"") and abs(f.mtime - time.time()) < 60
    assert t.lookup("hosts/n1/boot.ipxe").host == "n1"
    assert t.lookup("pxelinux.cfg/default").host is None


def test_static_files_at_any_depth_and_their_path(rec: tuple[BootTree, Recorder, Path]) -> None:
    t, _, root = rec
    f = t.lookup("sub/file")
    assert (f.path, f.size, f.fs_path, f.rendered) == ("sub/file", 10, str(root / "sub/file"),
                                                       False)
    assert f.mtime == os.stat(root / "sub/file").st_mtime
    with f.open() as fh:
        assert fh.read() == b"two levels"
    assert reason(t, "pxelinux.cfg/x/y") == "not_found"  # three parts: not a config name


def test_pxelinux_names_that_are_not_configs(rec: tuple[BootTree, Recorder, Path]) -> None:
    t, _, _ = rec
    assert reason(t, "pxelinux.cfg/garbage") == "not_found"
    assert reason(t, "pxelinux.cfg/01-52-54-00-99-99-99") == "not_in_inventory"
    assert reason(t, "pxelinux.cfg/C6120463") == "not_in_inventory"  # full hex, nobody
    assert reason(t, "pxelinux.cfg/C61204") == "not_in_inventory"  # a prefix, no peer
    assert t.lookup("pxelinux.cfg/C61204", "198.18.4.11").host == "n1"
    assert reason(t, "pxelinux.cfg/C61205", "198.18.4.11") == "not_in_inventory"
    assert reason(t, "pxelinux.cfg/C6", "not-an-address") == "not_in_inventory"


def test_a_static_file_overrides_the_rendered_boot_ipxe_and_discovery_script(
        rec: tuple[BootTree, Recorder, Path], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    t, r, root = rec
    monkeypatch.chdir(tmp_path)  # nothing named like them where the tests run
    (root / "boot.ipxe").write_text("#!ipxe\nstatic\n")
    f = t.lookup("boot.ipxe", "198.18.4.11")
    assert not f.rendered and f.size == len("#!ipxe\nstatic\n") and r.calls == []
    rendered = t.lookup(layout.DISCOVERY_SCRIPT)
    assert rendered.rendered and rendered.data and rendered.data.startswith(b"#!ipxe")
    assert rendered.path == layout.DISCOVERY_SCRIPT and rendered.host is None
    (root / layout.DISCOVERY_SCRIPT).parent.mkdir(parents=True, exist_ok=True)
    (root / layout.DISCOVERY_SCRIPT).write_text("#!ipxe\nmine\n")
    assert not t.lookup(layout.DISCOVERY_SCRIPT).rendered


def test_render_failure_is_logged_with_its_type_and_the_message_is_bounded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(inv: Inventory, host: Host, what: str) -> str:
        raise KeyError("x" * 500)

    t = BootTree(tmp_path, inventory(), broken, lambda inv: "")
    with caplog.at_level(logging.WARNING, logger="provision.policy.boottree"):
        with pytest.raises(Refused) as e:
            t.lookup("hosts/n1/boot.ipxe")
    assert e.value.reason.key == "render_failed" and e.value.reason.http_status == 500
    assert len(e.value.message) == 200 and e.value.message.startswith("render failed: ")
    assert "KeyError" in caplog.text and "xxxx" in caplog.text

    def refusing(inv: Inventory, host: Host, what: str) -> str:
        raise Refused(boottree.NOT_FOUND, "no such template")

    t2 = BootTree(tmp_path, inventory(), refusing, lambda inv: "")
    with pytest.raises(Refused) as e2:
        t2.lookup("hosts/n1/boot.ipxe")
    assert e2.value.reason.key == "not_found" and e2.value.message == "no such template"


def test_outside_root_says_so(tmp_path: Path) -> None:
    root = tmp_path / "boot"
    root.mkdir()
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", root / "escape")
    with pytest.raises(Refused) as e:
        BootTree(root, inventory()).lookup("escape")
    assert e.value.reason.key == "outside_root" and "outside" in e.value.message


def test_populate_loaders_into_a_new_nested_root_with_mode_644(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "boot"
    names = populate_loaders(root)
    assert "undionly.kpxe" in names
    assert (root / "undionly.kpxe").stat().st_mode & 0o777 == 0o644
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no temp files


def test_populate_loaders_rewrites_a_same_size_changed_copy(tmp_path: Path) -> None:
    populate_loaders(tmp_path)
    dst = tmp_path / "pxelinux.0"
    src = Path("/usr/lib/PXELINUX/pxelinux.0")
    dst.write_bytes(bytes(len(src.read_bytes())))  # same size, other bytes
    populate_loaders(tmp_path)
    assert dst.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("which, package", [(0, "ipxe"), (3, "pxelinux")])
def test_a_missing_loader_names_its_debian_package(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   which: int, package: str) -> None:
    sources = list(boottree.LOADER_SOURCES)
    name, cands = sources[which]
    missing = str(tmp_path / "missing" / Path(cands[0]).name)
    missing = missing.replace("/missing/", "/ipxe/" if package == "ipxe" else "/PXELINUX/")
    sources[which] = (name, (missing,))
    monkeypatch.setattr(boottree, "LOADER_SOURCES", tuple(sources))
    with pytest.raises(FileNotFoundError) as e:
        populate_loaders(tmp_path / "boot")
    assert str(e.value) == f"{missing} missing: install Debian package {package}"


def test_missing_syslinux_modules_name_their_package(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(boottree, "SYSLINUX_MODULES", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError) as e:
        populate_loaders(tmp_path / "boot")
    assert "syslinux-common" in str(e.value)


def test_refused_carries_its_message() -> None:
    e = Refused(boottree.NOT_FOUND, "no such thing")
    assert str(e) == "no such thing" and e.message == "no such thing"
    assert (e.reason.tftp_code, e.reason.http_status) == (1, 404)


def test_three_part_static_paths_are_files_not_hosts(rec: tuple[BootTree, Recorder, Path]
                                                     ) -> None:
    t, r, root = rec
    (root / "images" / "tiny").mkdir(parents=True)
    (root / "images/tiny/vmlinuz").write_bytes(b"K")
    assert t.lookup("images/tiny/vmlinuz").fs_path == str(root / "images/tiny/vmlinuz")
    assert reason(t, "hosts/n1/other") == "not_found"  # not a rendered name either
    assert r.calls == []


def test_root_boot_ipxe_renders_the_askers_ipxe(rec: tuple[BootTree, Recorder, Path]) -> None:
    t, r, _ = rec
    f = t.lookup("boot.ipxe", "198.18.4.12")
    assert r.calls[-1] == (t.inventory, "n2", "ipxe") and f.path == "boot.ipxe"
    assert f.data == b"ipxe for n2\n" and f.host == "n2"


def test_the_real_renderers_and_a_template_override(tmp_path: Path) -> None:
    root = tmp_path / "boot"
    root.mkdir()
    t = BootTree(root, inventory())
    assert b"n1" in (t.lookup("hosts/n1/dsas.conf").data or b"")
    assert b"dsas.host=n1" in (t.lookup("pxelinux.cfg/01-52-54-00-04-00-11").data or b"")
    assert t.lookup("pxelinux.cfg/default").data
    over = tmp_path / "templates"
    over.mkdir()
    (over / "dsas.conf.j2").write_text("OVERRIDE {{ host.name }}\n")
    (over / "pxelinux-default.cfg.j2").write_text("DEFAULT OVERRIDE\n")
    (over / "discovery.ipxe.j2").write_text("#!ipxe\necho DISCOVERY OVERRIDE\n")
    t2 = BootTree(root, inventory(), templates=over)
    assert t2.lookup("hosts/n2/dsas.conf").data == b"OVERRIDE n2\n"
    assert t2.lookup("pxelinux.cfg/default").data == b"DEFAULT OVERRIDE\n"
    # the unknown machine's iPXE script too (it ignored --templates before)
    assert t2.lookup("discovery.ipxe").data == b"#!ipxe\necho DISCOVERY OVERRIDE\n"
    assert b"DISCOVERY OVERRIDE" not in (t.lookup("discovery.ipxe").data or b"")


def test_a_reload_reads_changed_and_new_templates(tmp_path: Path) -> None:
    """Templates are read once, not on every request; a reload (SIGHUP) reads them again,
    a changed override and a newly added one alike."""
    root, over = tmp_path / "boot", tmp_path / "templates"
    root.mkdir()
    over.mkdir()
    (over / "discovery.ipxe.j2").write_text("#!ipxe\necho one\n")
    t = BootTree(root, inventory(), templates=over)
    assert t.lookup("discovery.ipxe").data == b"#!ipxe\necho one\n"
    packaged = t.lookup("pxelinux.cfg/default").data
    (over / "discovery.ipxe.j2").write_text("#!ipxe\necho two\n")
    (over / "pxelinux-default.cfg.j2").write_text("DEFAULT new\n")
    assert t.lookup("discovery.ipxe").data == b"#!ipxe\necho one\n"
    assert t.lookup("pxelinux.cfg/default").data == packaged
    inv = inventory()
    t.reload(inv)
    assert t.inventory is inv
    assert t.lookup("discovery.ipxe").data == b"#!ipxe\necho two\n"
    assert t.lookup("pxelinux.cfg/default").data == b"DEFAULT new\n"
