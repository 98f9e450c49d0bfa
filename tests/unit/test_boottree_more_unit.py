"""What ``missing_files``, ``BootTree._keepalived`` and the grub.cfg/boot.ipxe branches of
``BootTree._rendered`` return, exactly (issue 24: boottree mutants no fast test reached).

Pure units: a boot root in tmp_path, a small inventory from ``loads``, a recording renderer.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from provision import layout
from provision.inventory import Inventory, loads
from provision.inventory.model import Host
from provision.policy.boottree import (
    SETUP_COMMAND,
    BootTree,
    Missing,
    Refused,
    is_static_file,
    missing_files,
)

# -- missing_files ------------------------------------------------------------------------

HEAD = """\
cluster:
  name: mf
  domain: mf.example
  master_address: 198.18.6.1
  masters: {primary: m1}
networks:
  inside: {cidr: 198.18.6.0/24, gateway: 198.18.6.254, dns: [198.18.6.1]}
hwtypes:
  vm: {nics: [eth0], firmware: [bios, uefi]}
images:
  tiny: {version: "1"}
  cur: {}
  diskimg: {version: d1}
roles:
  master: {services: [], networks: [inside], boot: disk, hwtype: vm, bond: {mode: none},
           image: diskimg}
  web: {services: [], networks: [inside], image: tiny, hwtype: vm, bond: {mode: none}}
  px: {services: [], networks: [inside], image: tiny, hwtype: vm, bond: {mode: none},
       loader: pxelinux}
  sb: {services: [], networks: [inside], image: cur, hwtype: vm, bond: {mode: none},
       loader: grub-secure}
  bare: {services: [], networks: [inside], hwtype: vm, bond: {mode: none}}
hosts:
  m1: {role: master, macs: ["52:54:00:06:00:01"], addresses: {inside: 198.18.6.1}}
"""


def inv_with(*hosts: tuple[str, str]) -> Inventory:
    """HEAD plus hosts (name, role); addresses .11, .12, ... in order."""
    lines = [f"  {name}: {{role: {role}, macs: [\"52:54:00:06:01:{i + 0x10:02x}\"], "
             f"addresses: {{inside: 198.18.6.{i + 11}}}}}" for i, (name, role) in enumerate(hosts)]
    return loads(HEAD + "\n".join(lines) + "\n", "mf.yaml")


def touch(root: Path, *names: str) -> None:
    for n in names:
        p = root / n
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


def paths(out: list[Missing]) -> list[str]:
    return [m.path for m in out]


def test_no_netboot_host_needs_no_loader_and_disk_images_only_with_disk(tmp_path: Path) -> None:
    inv = inv_with(("b1", "bare"))  # netboot but no image: boots nothing from us
    assert missing_files(inv, tmp_path) == []
    out = missing_files(inv, tmp_path, disk=True)
    assert out == [Missing("images/diskimg/d1/", "image diskimg@d1 of m1",
                           f"dsas image build diskimg --boot-root {tmp_path} "
                           "(then promote or pin version d1)")]


def test_ipxe_hosts_need_the_two_ipxe_loaders_with_the_setup_fix(tmp_path: Path) -> None:
    inv = inv_with(("w1", "web"))
    touch(tmp_path, "images/tiny/1/vmlinuz", "images/tiny/1/initrd.img")
    fix = f"{SETUP_COMMAND} --boot-root {tmp_path}"
    assert SETUP_COMMAND == "dsas setup"
    assert missing_files(inv, tmp_path) == [Missing("undionly.kpxe", "boot loader", fix),
                                           Missing("ipxe.efi", "boot loader", fix)]
    touch(tmp_path, "undionly.kpxe")
    assert paths(missing_files(inv, tmp_path)) == ["ipxe.efi"]
    touch(tmp_path, "ipxe.efi")
    assert missing_files(inv, tmp_path) == []


def test_pxelinux_and_secure_boot_hosts_add_their_loaders_in_order(tmp_path: Path) -> None:
    touch(tmp_path, "images/tiny/1/vmlinuz", "images/tiny/1/initrd.img",
          "images/cur/current/vmlinuz", "images/cur/current/initrd.img")
    assert paths(missing_files(inv_with(("p1", "px")), tmp_path)) == [
        "undionly.kpxe", "ipxe.efi", "pxelinux.0", "ldlinux.c32"]
    assert paths(missing_files(inv_with(("s1", "sb")), tmp_path)) == [
        "undionly.kpxe", "ipxe.efi", "shimx64.efi", "grubx64.efi"]
    both = missing_files(inv_with(("s1", "sb"), ("p1", "px"), ("w1", "web")), tmp_path)
    assert paths(both) == ["undionly.kpxe", "ipxe.efi", "pxelinux.0", "ldlinux.c32",
                           "shimx64.efi", "grubx64.efi"]
    assert {m.why for m in both} == {"boot loader"}
    touch(tmp_path, "undionly.kpxe", "ipxe.efi", "pxelinux.0", "ldlinux.c32", "shimx64.efi",
          "grubx64.efi")
    assert missing_files(inv_with(("s1", "sb"), ("p1", "px")), tmp_path) == []


def test_a_loader_is_a_regular_file_a_directory_or_an_outside_link_is_missing(
        tmp_path: Path) -> None:
    root = tmp_path / "boot"
    touch(root, "images/tiny/1/vmlinuz", "images/tiny/1/initrd.img", "real.efi")
    (root / "undionly.kpxe").mkdir()
    touch(tmp_path, "outside")
    (root / "ipxe.efi").symlink_to(tmp_path / "outside")
    inv = inv_with(("w1", "web"))
    assert paths(missing_files(inv, root)) == ["undionly.kpxe", "ipxe.efi"]
    (root / "ipxe.efi").unlink()
    (root / "ipxe.efi").symlink_to("real.efi")  # a link that stays inside is fine
    assert paths(missing_files(inv, root)) == ["undionly.kpxe"]
    assert is_static_file(root, "ipxe.efi") and not is_static_file(root, "undionly.kpxe")
    assert not is_static_file(root, "../outside") and not is_static_file(root, "nothing")


def test_a_netboot_image_needs_kernel_and_initrd_a_missing_dir_is_one_line(
        tmp_path: Path) -> None:
    touch(tmp_path, "undionly.kpxe", "ipxe.efi")
    inv = inv_with(("w1", "web"))
    fix = f"dsas image build tiny --boot-root {tmp_path} (then promote or pin version 1)"
    assert missing_files(inv, tmp_path) == [Missing("images/tiny/1/", "image tiny@1 of w1", fix)]
    (tmp_path / "images/tiny/1").mkdir(parents=True)
    assert missing_files(inv, tmp_path) == [
        Missing("images/tiny/1/vmlinuz", "image tiny@1 of w1", fix),
        Missing("images/tiny/1/initrd.img", "image tiny@1 of w1", fix)]
    touch(tmp_path, "images/tiny/1/vmlinuz")
    assert paths(missing_files(inv, tmp_path)) == ["images/tiny/1/initrd.img"]
    touch(tmp_path, "images/tiny/1/initrd.img")
    assert missing_files(inv, tmp_path) == []
    assert missing_files(inv, tmp_path, disk=True) == [
        Missing("images/diskimg/d1/", "image diskimg@d1 of m1",
                f"dsas image build diskimg --boot-root {tmp_path} "
                "(then promote or pin version d1)")]


def test_a_disk_only_image_needs_its_manifest_only(tmp_path: Path) -> None:
    inv = inv_with()
    (tmp_path / "images/diskimg/d1").mkdir(parents=True)
    assert missing_files(inv, tmp_path) == []
    out = missing_files(inv, tmp_path, disk=True)
    assert paths(out) == ["images/diskimg/d1/manifest.json"]
    touch(tmp_path, "images/diskimg/d1/vmlinuz", "images/diskimg/d1/initrd.img")
    assert paths(missing_files(inv, tmp_path, disk=True)) == ["images/diskimg/d1/manifest.json"]
    touch(tmp_path, "images/diskimg/d1/manifest.json")
    assert missing_files(inv, tmp_path, disk=True) == []


def test_an_image_booted_by_one_and_cloned_by_another_needs_kernel_and_initrd(
        tmp_path: Path) -> None:
    text = HEAD.replace("image: diskimg}", "image: tiny}") + (
        '  w1: {role: web, macs: ["52:54:00:06:01:10"], addresses: {inside: 198.18.6.11}}\n')
    inv = loads(text, "mf.yaml")
    touch(tmp_path, "undionly.kpxe", "ipxe.efi", "images/tiny/1/manifest.json")
    out = missing_files(inv, tmp_path, disk=True)
    assert paths(out) == ["images/tiny/1/vmlinuz", "images/tiny/1/initrd.img"]
    assert {m.why for m in out} == {"image tiny@1 of m1, w1"}
    assert {m.why for m in missing_files(inv, tmp_path)} == {"image tiny@1 of w1"}


def test_users_are_sorted_three_named_then_a_count(tmp_path: Path) -> None:
    touch(tmp_path, "undionly.kpxe", "ipxe.efi")
    three = missing_files(inv_with(("w3", "web"), ("w1", "web"), ("w2", "web")), tmp_path)
    assert [m.why for m in three] == ["image tiny@1 of w1, w2, w3"]
    five = missing_files(inv_with(*[(f"w{i}", "web") for i in (5, 3, 1, 4, 2)]), tmp_path)
    assert [m.why for m in five] == ["image tiny@1 of w1, w2, w3 and 2 more"]
    four = missing_files(inv_with(*[(f"w{i}", "web") for i in (1, 2, 3, 4)]), tmp_path)
    assert [m.why for m in four] == ["image tiny@1 of w1, w2, w3 and 1 more"]


def test_the_fix_is_build_with_a_recipe_import_without_and_current_needs_no_promote(
        tmp_path: Path) -> None:
    touch(tmp_path, "undionly.kpxe", "ipxe.efi", "shimx64.efi", "grubx64.efi")
    inv = inv_with(("s1", "sb"), ("w1", "web"))
    asked: list[str] = []

    def only_tiny(name: str) -> bool:
        asked.append(name)
        return name == "tiny"

    out = missing_files(inv, tmp_path, recipes=only_tiny)
    assert sorted(asked) == ["cur", "tiny"]
    fixes = {m.path: m.fix for m in out}
    assert fixes == {
        "images/cur/current/": (f"dsas image import cur --kernel FILE --initrd FILE "
                                f"--boot-root {tmp_path}"),
        "images/tiny/1/": f"dsas image build tiny --boot-root {tmp_path} "
                          "(then promote or pin version 1)"}
    assert {m.why for m in out} == {"image cur@current of s1", "image tiny@1 of w1"}
    none = {m.path: m.fix for m in missing_files(inv, tmp_path, recipes=lambda n: False)}
    assert none["images/tiny/1/"] == (
        f"dsas image import tiny --kernel FILE --initrd FILE --boot-root {tmp_path} "
        "(then promote or pin version 1)")
    default = {m.path: m.fix for m in missing_files(inv, tmp_path)}
    assert default["images/cur/current/"] == f"dsas image build cur --boot-root {tmp_path}"


def test_each_image_is_reported_once_in_host_order(tmp_path: Path) -> None:
    touch(tmp_path, "undionly.kpxe", "ipxe.efi", "shimx64.efi", "grubx64.efi")
    (tmp_path / "images/tiny/1").mkdir(parents=True)
    inv = inv_with(("w1", "web"), ("s1", "sb"), ("w2", "web"))
    assert paths(missing_files(inv, tmp_path)) == [
        "images/tiny/1/vmlinuz", "images/tiny/1/initrd.img", "images/cur/current/"]
    assert paths(missing_files(inv, tmp_path, disk=True)) == [
        "images/diskimg/d1/", "images/tiny/1/vmlinuz", "images/tiny/1/initrd.img",
        "images/cur/current/"]


def test_a_repeated_image_does_not_stop_the_images_after_it(tmp_path: Path) -> None:
    touch(tmp_path, "undionly.kpxe", "ipxe.efi", "shimx64.efi", "grubx64.efi")
    inv = inv_with(("w1", "web"), ("w2", "web"), ("s1", "sb"))
    assert paths(missing_files(inv, tmp_path)) == ["images/tiny/1/", "images/cur/current/"]


def test_a_host_set_to_boot_from_disk_needs_no_loader(tmp_path: Path) -> None:
    text = HEAD + ('  w1: {role: web, boot: disk, macs: ["52:54:00:06:01:10"], '
                   'addresses: {inside: 198.18.6.11}}\n')
    inv = loads(text, "mf.yaml")
    assert missing_files(inv, tmp_path) == []
    assert paths(missing_files(inv, tmp_path, disk=True)) == ["images/diskimg/d1/",
                                                              "images/tiny/1/"]


# -- keepalived.conf and its sum ------------------------------------------------------------

LVS_INV = """\
cluster:
  name: kl
  domain: kl.example
  master_address: 198.18.7.10
  masters: {primary: m01}
networks:
  tiny: {cidr: 198.18.7.0/24, gateway: 198.18.7.254, dns: [198.18.7.10]}
hwtypes:
  vm: {nics: [eth0], firmware: [bios, uefi]}
images:
  base: {version: v1}
services:
  lvs: {units: [keepalived.service]}
roles:
  master: {services: [], networks: [tiny], image: base, hwtype: vm, boot: disk,
           bond: {mode: none}}
  lvs: {services: [lvs], networks: [tiny], image: base, hwtype: vm, bond: {mode: none}}
  web: {services: [], networks: [tiny], image: base, hwtype: vm, bond: {mode: none}}
hosts:
  m01: {role: master, macs: ["52:54:00:00:07:01"], addresses: {tiny: 198.18.7.10}}
  lvs1: {role: lvs, macs: ["52:54:00:00:07:02"], addresses: {tiny: 198.18.7.2}}
  lvs2: {role: lvs, macs: ["52:54:00:00:07:03"], addresses: {tiny: 198.18.7.3}}
  lvs3: {role: lvs, macs: ["52:54:00:00:07:05"], addresses: {tiny: 198.18.7.5}}
  w1: {role: web, macs: ["52:54:00:00:07:04"], addresses: {tiny: 198.18.7.4}}
lvs_pairs:
  lb:
    hosts: {lvs1: active, lvs2: backup}
    virtual_router_id: 51
    gateway_vips: {tiny: 198.18.7.12}
virtual_services:
  www: {vip: 198.18.7.11, port: 80, role: web, check: {type: TCP_CHECK}}
"""


class Rec:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.invs: list[object] = []

    def host(self, inv: Inventory, host: Host, what: str) -> str:
        self.calls.append((host.name, what))
        self.invs.append(inv)
        return f"{what} of {host.name}: pässword\n"

    def default(self, inv: Inventory) -> str:
        return "DEFAULT\n"


@pytest.fixture
def lvs(tmp_path: Path) -> tuple[BootTree, Rec]:
    r = Rec()
    return BootTree(tmp_path, loads(LVS_INV, "kl.yaml"), r.host, r.default), r


def refusal(t: BootTree, name: str, peer: str | None = None) -> tuple[str, int, int, str]:
    with pytest.raises(Refused) as e:
        t.lookup(name, peer)
    r = e.value.reason
    return r.key, r.http_status, r.tftp_code, e.value.message


def test_keepalived_conf_for_the_director_itself_or_an_unknown_or_no_peer(
        lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    body = "keepalived of lvs1: pässword\n".encode()
    for peer in ("198.18.7.2", None, "198.18.9.9"):
        f = t.lookup("hosts/lvs1/keepalived.conf", peer)
        assert (f.path, f.data, f.size, f.host, f.fs_path) == (
            "hosts/lvs1/keepalived.conf", body, len(body), "lvs1", None)
        assert r.calls[-1] == ("lvs1", "keepalived") and r.invs[-1] is t.inventory
    f = t.lookup("hosts/lvs2/keepalived.conf", "198.18.7.3")
    assert f.data == b"keepalived of lvs2: p\xc3\xa4ssword\n" and f.host == "lvs2"


def test_keepalived_sum_is_sha256sum_of_the_utf8_body(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    assert layout.KEEPALIVED_CONF == "keepalived.conf"
    assert layout.KEEPALIVED_SUM == "keepalived.conf.sha256"
    body = t.lookup("hosts/lvs1/keepalived.conf", "198.18.7.2").data
    assert body is not None
    f = t.lookup("hosts/lvs1/keepalived.conf.sha256", "198.18.7.2")
    want = f"{hashlib.sha256(body).hexdigest()}  keepalived.conf\n".encode()
    assert (f.path, f.data, f.size, f.host) == ("hosts/lvs1/keepalived.conf.sha256", want,
                                                len(want), "lvs1")
    assert r.calls[-1] == ("lvs1", "keepalived")


def test_keepalived_refusals(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    assert refusal(t, "hosts/nosuch/keepalived.conf") == (
        "not_in_inventory", 404, 1, "host 'nosuch' not in inventory")
    assert refusal(t, "hosts/w1/keepalived.conf", "198.18.7.4") == (
        "not_found", 404, 1, "host w1 is in no LVS pair: no keepalived.conf")
    assert refusal(t, "hosts/lvs3/keepalived.conf.sha256") == (
        "not_found", 404, 1, "host lvs3 is in no LVS pair: no keepalived.conf")
    # the partner director and any other host may not read the VRRP password
    assert refusal(t, "hosts/lvs1/keepalived.conf", "198.18.7.3") == (
        "other_host", 403, 2, "198.18.7.3 is lvs2, not lvs1")
    assert refusal(t, "hosts/lvs1/keepalived.conf.sha256", "198.18.7.4") == (
        "other_host", 403, 2, "198.18.7.4 is w1, not lvs1")
    assert r.calls == []  # nothing rendered for a refusal


def test_keepalived_only_as_hosts_name_leaf(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    for name in ("keepalived.conf", "x/lvs1/keepalived.conf", "hosts/lvs1/x/keepalived.conf",
                 "hosts/lvs1/keepalived.conf.md5"):
        assert refusal(t, name, "198.18.7.2")[0] == "not_found", name
    assert r.calls == []


def test_keepalived_render_failure_is_render_failed(tmp_path: Path) -> None:
    def broken(inv: Inventory, host: Host, what: str) -> str:
        raise ValueError("no vips")

    t = BootTree(tmp_path, loads(LVS_INV, "kl.yaml"), broken, lambda inv: "")
    assert refusal(t, "hosts/lvs1/keepalived.conf.sha256")[:3] == ("render_failed", 500, 0)


# -- grub.cfg and boot.ipxe by asking address -------------------------------------------------

def test_grub_cfg_anywhere_outside_hosts_is_the_askers_grub(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    for name in ("grub.cfg", "grub/grub.cfg", "boot/grub/x86_64-efi/grub.cfg"):
        f = t.lookup(name, "198.18.7.4")
        assert (f.path, f.data, f.host) == (name, b"grub of w1: p\xc3\xa4ssword\n", "w1")
        assert r.calls[-1] == ("w1", "grub") and r.invs[-1] is t.inventory
    assert t.lookup("hosts/lvs1/grub.cfg", "198.18.7.4").host == "lvs1"  # by name
    assert r.calls[-1] == ("lvs1", "grub")


def test_grub_cfg_from_an_unknown_or_no_address_is_refused(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    assert refusal(t, "grub/grub.cfg", "198.18.9.9") == (
        "not_in_inventory", 404, 1, "address 198.18.9.9 not in inventory")
    assert refusal(t, "grub.cfg") == ("not_in_inventory", 404, 1, "address None not in inventory")
    assert refusal(t, "grub.cfg", "") == ("not_in_inventory", 404, 1, "address  not in inventory")
    assert refusal(t, "hosts/nosuch/grub.cfg", "198.18.7.4") == (
        "not_in_inventory", 404, 1, "host 'nosuch' not in inventory")
    assert refusal(t, "hosts/grub.cfg", "198.18.7.4")[0] == "not_found"  # not a host file
    assert r.calls == []


def test_a_static_grub_cfg_wins_over_the_rendered_one(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    touch(Path(t.root), "grub/grub.cfg")
    f = t.lookup("grub/grub.cfg", "198.18.7.4")
    assert (f.rendered, f.fs_path) == (False, os.path.join(t.root, "grub/grub.cfg"))
    os.symlink("nowhere", os.path.join(t.root, "grub.cfg"))  # a dangling link still counts
    assert refusal(t, "grub.cfg", "198.18.7.4")[0] == "not_found"
    assert r.calls == []


def test_boot_ipxe_by_address(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    f = t.lookup("boot.ipxe", "198.18.7.2")
    assert (f.path, f.data, f.host) == ("boot.ipxe", b"ipxe of lvs1: p\xc3\xa4ssword\n", "lvs1")
    assert r.calls[-1] == ("lvs1", "ipxe")
    assert refusal(t, "boot.ipxe", "198.18.9.9") == (
        "not_in_inventory", 404, 1, "address 198.18.9.9 not in inventory")
    assert refusal(t, "boot.ipxe") == ("not_in_inventory", 404, 1, "address None not in inventory")
    assert refusal(t, "x/boot.ipxe", "198.18.7.2")[0] == "not_found"


def test_host_files_and_conf_extra_only_on_dsas_conf(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    t.conf_extra = lambda name: f"token={name}\n"
    assert t.lookup("hosts/w1/dsas.conf").data == (
        "dsas.conf of w1: pässword\ntoken=w1\n".encode())
    assert r.calls[-1] == ("w1", "dsas.conf")
    assert t.lookup("hosts/w1/boot.ipxe").data == "ipxe of w1: pässword\n".encode()
    assert t.lookup("hosts/w1/grub.cfg").data == "grub of w1: pässword\n".encode()
    assert refusal(t, "hosts/nosuch/dsas.conf") == (
        "not_in_inventory", 404, 1, "host 'nosuch' not in inventory")
    assert refusal(t, "hosts/w1/other.cfg")[0] == "not_found"
    assert refusal(t, "hosts/w1/dsas.conf/x")[0] == "not_found"


def test_the_discovery_script_is_rendered_by_the_real_renderer(lvs: tuple[BootTree, Rec]) -> None:
    t, r = lvs
    f = t.lookup(layout.DISCOVERY_SCRIPT)
    assert f.rendered and f.host is None and f.path == "discovery.ipxe"
    assert f.data is not None and f.data.startswith(b"#!ipxe")
    assert r.calls == []


# -- LoaderPresence and Payloads ------------------------------------------------------------

def test_loader_presence_rescans_only_after_its_interval(tmp_path: Path) -> None:
    from provision.policy.boottree import LoaderPresence

    now = [100.0]
    p = LoaderPresence(tmp_path, interval=5.0, clock=lambda: now[0])
    first = p.current()
    assert first == frozenset()
    touch(tmp_path, "undionly.kpxe", "shimx64.efi", "ldlinux.c32")
    now[0] = 104.9
    assert p.current() == frozenset()  # not yet rescanned
    now[0] = 105.0
    found = p.current()
    assert found == {"undionly.kpxe", "shimx64.efi"}  # only the loaders DHCP may name
    now[0] = 200.0
    assert p.current() is found  # same object while nothing changes
    (tmp_path / "shimx64.efi").unlink()
    now[0] = 204.0
    assert p.current() is found
    now[0] = 205.0
    assert p.current() == {"undionly.kpxe"}


def test_payloads_follow_current_read_the_manifest_once_and_skip_bad_ones(
        tmp_path: Path) -> None:
    import json

    from provision.policy.boottree import Payloads
    from provision.render import ImagePayload

    store = tmp_path / "images/foo"
    (store / "v2").mkdir(parents=True)
    (store / "current").symlink_to("v2")
    p = Payloads(tmp_path)
    assert p.get("foo", "current") is None  # no manifest yet: not cached
    (store / "v2/manifest.json").write_text(json.dumps({"kind": "imported",
                                                        "kernel_args": "quiet"}))
    got = p.get("foo", "current")
    assert got == ImagePayload(dsas_boot=False, kernel_args="quiet")
    (store / "v2/manifest.json").write_text(json.dumps({}))
    assert p.get("foo", "v2") is got  # cached by concrete version
    (store / "v3").mkdir()
    (store / "v3/manifest.json").write_text("[1]")
    assert p.get("foo", "v3") is None  # not a mapping
    (store / "v3/manifest.json").write_text("{bad")
    assert p.get("foo", "v3") is None
    (store / "v3/manifest.json").write_text(json.dumps({"kernel_args": None}))
    assert p.get("foo", "v3") == ImagePayload(dsas_boot=True, kernel_args="")
    assert p.get("nosuch", "1") is None


def test_payloads_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provision.policy.boottree import Payloads

    monkeypatch.setattr(Payloads, "LIMIT", 2)
    for v in ("1", "2", "3"):
        touch(tmp_path, f"images/foo/{v}/manifest.json")
        (tmp_path / f"images/foo/{v}/manifest.json").write_text("{}")
    p = Payloads(tmp_path)
    for v in ("1", "2"):
        p.get("foo", v)
    assert len(p._cache) == 2
    p.get("foo", "3")
    assert list(p._cache) == [("foo", "3")]
