"""Pure tests of the boot tree policy: confinement, static and rendered files."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import pytest

from lab.bootfiles import inventory
from provision.policy import boottree
from provision.policy.boottree import BootTree, Refused, confine, populate_loaders
from tests.support.boottree_support import fake_default, fake_render


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "boot"
    (root / "images/tiny/1").mkdir(parents=True)
    (root / "images/tiny/1/vmlinuz").write_bytes(b"K" * 1000)
    (root / "undionly.kpxe").write_bytes(b"loader")
    (tmp_path / "secret").write_text("outside")
    os.symlink(tmp_path / "secret", root / "escape")
    os.symlink("images/tiny/1/vmlinuz", root / "inside-link")
    os.mkfifo(root / "fifo")
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    return BootTree(root, inventory(), fake_render, fake_default)


TRAVERSALS = [
    ("../etc/passwd", "traversal"),
    ("images/../../etc/passwd", "traversal"),
    ("/../etc/passwd", "traversal"),
    ("//etc/passwd", "absolute"),
    ("..\\etc\\passwd", "backslash"),
    ("images\\tiny", "backslash"),
    ("undionly.kpxe\x00.txt", "nul"),
    ("a\nb", "control_char"),
    ("x" * 300, "too_long"),
    ("a/" + "y" * 200, "too_long"),
    ("escape", "outside_root"),
    ("fifo", "not_regular"),
    ("sock", "not_regular"),
    ("", "not_found"),
    ("/", "not_found"),
]


@pytest.mark.parametrize("name,reason", TRAVERSALS)
def test_refused_with_reason(tree, name, reason):
    with pytest.raises(Refused) as e:
        tree.lookup(name)
    assert e.value.reason.key == reason
    if reason != "not_found":
        assert e.value.reason.tftp_code == boottree.TFTP_ERR_ACCESS_VIOLATION
        assert e.value.reason.http_status == 403


def test_confine_strips_one_slash_and_dots():
    assert confine("/images/./tiny//1/vmlinuz") == "images/tiny/1/vmlinuz"
    assert confine(b"/pxelinux.0") == "pxelinux.0"


def test_static_file_and_inside_symlink(tree):
    f = tree.lookup("/images/tiny/1/vmlinuz")
    assert f.size == 1000 and not f.rendered
    with f.open() as fh:
        assert fh.read() == b"K" * 1000
    assert tree.lookup("inside-link").size == 1000
    assert f.etag == tree.lookup("images/tiny/1/vmlinuz").etag


def test_missing_and_directory_are_not_found(tree):
    for name in ("nope.bin", "images/tiny"):
        with pytest.raises(Refused) as e:
            tree.lookup(name)
        assert e.value.reason.key == "not_found"
        assert e.value.reason.tftp_code == 1 and e.value.reason.http_status == 404


def test_pxelinux_per_mac_differs(tree):
    a = tree.lookup("pxelinux.cfg/01-52-54-00-04-00-11")
    b = tree.lookup("pxelinux.cfg/01-52-54-00-04-00-12")
    assert a.data == b"pxelinux for n1 mac=52:54:00:04:00:11\n"
    assert b.data != a.data and b.host == "n2"
    assert a.size == len(a.data)


def test_pxelinux_unknown_mac_is_not_in_inventory(tree):
    with pytest.raises(Refused) as e:
        tree.lookup("pxelinux.cfg/01-52-54-00-99-99-99")
    assert e.value.reason.key == "not_in_inventory"
    assert e.value.reason.tftp_code == 1
    assert "not in inventory" in e.value.message


def test_pxelinux_hexip_and_prefixes(tree):
    assert tree.lookup("pxelinux.cfg/C612040B").host == "n1"  # 198.18.4.11
    # pxelinux's shorter prefixes: only for the asker whose address they prefix
    assert tree.lookup("pxelinux.cfg/C61204", peer="198.18.4.12").host == "n2"
    for name, peer in (("pxelinux.cfg/C61204", None), ("pxelinux.cfg/C7", "198.18.4.12")):
        with pytest.raises(Refused) as e:
            tree.lookup(name, peer=peer)
        assert e.value.reason.key == "not_in_inventory"
    assert tree.lookup("pxelinux.cfg/default").data == b"DEFAULT menu\n"


def test_host_files_and_unknown_host(tree):
    f = tree.lookup("hosts/n1/dsas.conf")
    assert f.data.startswith(b"dsas.conf for n1")
    assert tree.lookup("hosts/n2/boot.ipxe").data.startswith(b"ipxe for n2")
    with pytest.raises(Refused) as e:
        tree.lookup("hosts/ghost/dsas.conf")
    assert e.value.reason.key == "not_in_inventory"


def test_root_boot_ipxe_for_the_asker(tree):
    n1 = tree.lookup("boot.ipxe", peer="198.18.4.11")
    n2 = tree.lookup("boot.ipxe", peer="198.18.4.12")
    assert n1.host == "n1" and n1.data == tree.lookup("hosts/n1/boot.ipxe").data
    assert n2.host == "n2" and n2.data.startswith(b"ipxe for n2") and n2.data != n1.data
    for peer in ("198.18.4.99", None):
        with pytest.raises(Refused) as e:
            tree.lookup("boot.ipxe", peer=peer)
        assert e.value.reason.key == "not_in_inventory"


def test_inventory_change_visible_next_request(tree):
    before = tree.lookup("hosts/n1/dsas.conf").data
    inv = inventory()
    n1 = inv.hosts["n1"]
    changed = dataclasses.replace(n1, macs=("52:54:00:00:99:99",))
    tree.inventory = dataclasses.replace(inv, hosts={**inv.hosts, "n1": changed})
    after = tree.lookup("hosts/n1/dsas.conf").data
    assert after != before and b"mac=52:54:00:00:99:99" in after  # changed: new content
    tree.inventory = dataclasses.replace(inventory(), hosts={})  # n1 removed
    with pytest.raises(Refused) as e:
        tree.lookup("hosts/n1/dsas.conf")
    assert e.value.reason.key == "not_in_inventory"


def test_render_failure_is_refused(tmp_path):
    def broken(inv, host, what):
        raise KeyError("template variable")

    t = BootTree(tmp_path, inventory(), broken, fake_default)
    with pytest.raises(Refused) as e:
        t.lookup("hosts/n1/dsas.conf")
    assert e.value.reason.key == "render_failed"


def test_rendered_etag_follows_content(tree):
    a = tree.lookup("hosts/n1/dsas.conf")
    assert a.etag == tree.lookup("hosts/n1/dsas.conf").etag
    assert a.etag != tree.lookup("hosts/n2/dsas.conf").etag


def test_populate_loaders(tmp_path):
    names = populate_loaders(tmp_path)
    for n in ("undionly.kpxe", "ipxe.efi", "snponly.efi", "pxelinux.0", "ldlinux.c32"):
        assert n in names and (tmp_path / n).is_file() and not (tmp_path / n).is_symlink()
    src = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
    assert (tmp_path / "ldlinux.c32").read_bytes() == src.read_bytes()
    mtime = (tmp_path / "pxelinux.0").stat().st_mtime_ns
    populate_loaders(tmp_path)  # unchanged: not rewritten
    assert (tmp_path / "pxelinux.0").stat().st_mtime_ns == mtime
    t = BootTree(tmp_path, inventory(), fake_render, fake_default)
    assert t.lookup("pxelinux.0").size == os.path.getsize("/usr/lib/PXELINUX/pxelinux.0")


# -- TFTP codec and option negotiation (pure) ------------------------------------

def test_decode_request_and_malformed():
    from provision.protocol import tftp as c

    r = c.decode_request(b"\x00\x01pxelinux.0\x00OCTET\x00tsize\x000\x00BLKSIZE\x001408\x00")
    assert (r.opcode, r.filename, r.mode) == (1, "pxelinux.0", "octet")
    assert r.options == {"tsize": "0", "blksize": "1408"}
    for bad in (b"", b"\x00", b"\x00\x01", b"\x00\x03abc\x00", b"\x00\x01a\x00octet",
                b"\x00\x01a\x00octet\x00blksize\x00", b"\x00\x01" + b"a" * 2000 + b"\x00o\x00"):
        with pytest.raises(c.TftpDecodeError):
            c.decode_request(bad)


def test_negotiate_bounds_and_order():
    from provision.protocol import tftp as c

    n = c.negotiate({"windowsize": "4", "tsize": "0", "blksize": "99999", "timeout": "300",
                     "bogus": "1"}, lambda: 1234)
    assert list(n.oack.items()) == [("windowsize", "4"), ("tsize", "1234"), ("blksize", "65464")]
    assert (n.blksize, n.windowsize, n.timeout) == (65464, 4, None)
    assert c.negotiate({"blksize": "7"}, lambda: 0).oack == {}
    assert c.negotiate({"blksize": "x"}, lambda: 0).blksize == 512
    assert c.negotiate({"windowsize": "8"}, lambda: 0, max_window=1).oack == {}


def test_negotiate_declines_a_timeout_above_the_servers():
    """RFC 2349 lets a server only accept the client's timeout or leave it out: one
    above the server's give-up time (``timeout 255``) is left out (issue 13)."""
    from provision.protocol import tftp as c

    n = c.negotiate({"timeout": "255", "tsize": "0"}, lambda: 9, max_timeout=5.0)
    assert n.oack == {"tsize": "9"} and n.timeout is None
    n = c.negotiate({"timeout": "5"}, lambda: 9, max_timeout=5.0)
    assert n.oack == {"timeout": "5"} and n.timeout == 5.0


def test_netascii_encoding():
    from provision.protocol.tftp import netascii_encode

    assert netascii_encode(b"a\nb\rc\r\n") == b"a\r\nb\r\x00c\r\x00\r\n"


# -- HTTP policy: ranges, validators, events (pure) --------------------------------

def test_parse_range():
    from provision.policy.httpfiles import Unsatisfiable, parse_range

    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-5000", 100) == (50, 99)
    assert parse_range("bytes=9-0", 100) is None  # invalid: ignored
    assert parse_range("bytes=0-1,5-6", 100) is None  # multiple: whole file
    assert parse_range("items=0-1", 100) is None
    for h in ("bytes=100-", "bytes=-0", "bytes=200-300"):
        with pytest.raises(Unsatisfiable):
            parse_range(h, 100)


def test_etag_match():
    from provision.policy.httpfiles import etag_matches, if_range_allows

    assert etag_matches('"a", W/"b"', '"b"') and etag_matches("*", '"x"')
    assert not etag_matches('"a"', '"b"') and not etag_matches(None, '"b"')
    assert if_range_allows(None, '"a"') and not if_range_allows('"b"', '"a"')


def test_parse_event_rules():
    from provision.policy.httpfiles import BadEvent, parse_event

    inv = inventory()
    ev = parse_event(b'{"host": "n1", "stage": "ready"}', "198.18.4.11", inv)
    assert (ev.host, ev.stage, ev.image, ev.address) == ("n1", "ready", "tiny", "198.18.4.11")
    assert parse_event(b'{"stage": "kernel"}', "198.18.4.12", inv).host == "n2"
    # the boot scripts send "detail" (ready carries the addresses; failed, the reason)
    ev = parse_event(b'{"host": "n1", "stage": "failed", "detail": "BOND_MACS[1]: no NIC"}',
                     "198.18.4.11", inv)
    assert ev.reason == "BOND_MACS[1]: no NIC"
    cases = [
        (b'{"host": "n2", "stage": "ready"}', "198.18.4.11", 403),
        (b'{"host": "n1", "stage": "ready"}', None, 403),  # from nowhere: not n1's address
        (b'{"host": "n1", "stage": "ready"}', "198.18.9.9", 403),  # a stray address
        (b'{"host": "n1", "stage": "ready", "mac": "52:54:00:04:00:12"}', "198.18.4.11", 403),
        (b'{"host": "zz", "stage": "ready"}', "198.18.4.11", 404),
        (b'{"stage": "ready"}', "198.18.9.9", 400),
        (b'{"host": "n1", "stage": "failed"}', "198.18.4.11", 400),
        (b'{"host": "n1", "stage": "ready", "reason": "\\u0007"}', "198.18.4.11", 400),
        (b'{"host": 1, "stage": "ready"}', "198.18.4.11", 400),
        (b"[]", "198.18.4.11", 400),
        (b"x" * 5000, "198.18.4.11", 413),
    ]
    for body, peer, status in cases:
        with pytest.raises(BadEvent) as e:
            parse_event(body, peer, inv)
        assert e.value.status == status, body
