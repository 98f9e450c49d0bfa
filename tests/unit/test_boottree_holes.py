"""Boot tree confinement in depth and the ETag of static files (issue 24 items 6, 7)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.bootfiles import inventory
from provision.policy import boottree
from provision.policy.boottree import (
    MAX_COMPONENT_BYTES,
    MAX_NAME_BYTES,
    BootFile,
    BootTree,
    Refused,
    confine,
)
from provision.policy.httpfiles import etag_matches
from tests.support.boottree_support import fake_default, fake_render


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "boot"
    (root / "images/tiny/1").mkdir(parents=True)
    (root / "images/tiny/1/vmlinuz").write_bytes(b"K" * 1000)
    (tmp_path / "secret").write_bytes(b"S" * 1000)
    return root


def tree_of(root: Path) -> BootTree:
    return BootTree(root, inventory(), fake_render, fake_default)


def refused(name: str | bytes) -> str:
    with pytest.raises(Refused) as e:
        confine(name)
    return e.value.reason.key


# -- 6. confinement in depth ------------------------------------------------------------

def test_symlink_swapped_in_after_the_realpath_check_is_not_followed(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The realpath check passes on a regular file; the file is then replaced by a link
    to a file outside the root before the open: O_NOFOLLOW must refuse it."""
    kernel = root / "images/tiny/1/vmlinuz"
    real_realpath = os.path.realpath

    def realpath_then_swap(path: str, *a: object, **kw: object) -> str:
        out = real_realpath(path, *a, **kw)  # type: ignore[arg-type]
        if out == str(kernel) and not kernel.is_symlink():
            kernel.unlink()
            kernel.symlink_to(root.parent / "secret")
        return out

    t = tree_of(root)
    monkeypatch.setattr(boottree.os.path, "realpath", realpath_then_swap)
    with pytest.raises(Refused) as e:
        t.lookup("images/tiny/1/vmlinuz")
    assert e.value.reason.key == "not_regular"


def test_symlink_swapped_in_between_lookup_and_open_is_not_followed(root: Path) -> None:
    f = tree_of(root).lookup("images/tiny/1/vmlinuz")
    with f.open() as fh:
        assert fh.read() == b"K" * 1000
    kernel = root / "images/tiny/1/vmlinuz"
    kernel.unlink()
    kernel.symlink_to(root.parent / "secret")
    with pytest.raises(Refused) as e:
        f.open()
    assert e.value.reason.key == "not_regular"


def test_total_length_is_checked_even_when_every_component_is_short() -> None:
    name = "/".join(c * 100 for c in "abc")  # 302 bytes, each component 100
    assert refused(name) == "too_long"
    assert refused("/" + name) == "too_long"


def test_length_limits_are_exact() -> None:
    comp = "c" * 128
    assert MAX_COMPONENT_BYTES == 128
    assert confine(comp) == comp
    assert refused(comp + "c") == "too_long"
    name = "/".join(["d" * 100, "e" * 100, "f" * 53])  # 255 bytes (TFTP's longest names)
    assert len(name) == MAX_NAME_BYTES == 255 and confine(name) == name
    assert refused(name + "f") == "too_long"
    # Bytes count, not characters: 128 two-byte characters are 256 bytes.
    assert refused("\u00e9" * 128) == "too_long"
    assert confine("\u00e9" * 64) == "\u00e9" * 64


@pytest.mark.parametrize("ch", ["\x7f", "\x1f", "\x01", "\t", "\r"])
def test_control_characters_are_refused(ch: str) -> None:
    assert refused(f"images/a{ch}b") == "control_char"
    assert refused(f"a{ch}".encode("latin-1")) == "control_char"


@pytest.mark.parametrize("name", ["my kernel", " lead", "~tilde", "a!#$%&'()*+,-;=@[]^_`{|}"])
def test_printable_names_including_space_are_accepted(name: str) -> None:
    assert confine(name) == name


def test_nul_wins_over_length_and_control() -> None:
    assert refused("a\x00" + "b" * 300) == "nul"
    assert refused(b"x\x00y") == "nul"


def test_clean_path_drops_dots_and_empty_components() -> None:
    assert confine("/./images//tiny/./1/") == "images/tiny/1"
    assert refused("./") == "not_found"
    assert refused("images/./..") == "traversal"
    assert confine("..a/b..") == "..a/b.."  # only a whole '..' component is traversal


# -- 7. ETag of static files ---------------------------------------------------------------

def test_etag_changes_when_a_file_is_rewritten_at_the_same_size(root: Path) -> None:
    t = tree_of(root)
    kernel = root / "images/tiny/1/vmlinuz"
    old = t.lookup("images/tiny/1/vmlinuz")
    st = kernel.stat()
    kernel.write_bytes(b"N" * 1000)  # same size, new bytes
    os.utime(kernel, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # 1 ms later
    new = t.lookup("images/tiny/1/vmlinuz")
    assert new.size == old.size and new.etag != old.etag
    assert not etag_matches(old.etag, new.etag)  # the old ETag gets a 200, not a 304
    assert etag_matches(new.etag, new.etag)


def test_static_etag_has_the_size_and_nanosecond_mtime() -> None:
    f = BootFile(path="k", size=0x1234, mtime=1_700_000_000.5, fs_path="/x")
    assert f.etag == f'"s-1234-{int(1_700_000_000.5 * 1e9):x}"'
    g = BootFile(path="k", size=0x1234, mtime=1_700_000_000.501, fs_path="/x")
    assert g.etag != f.etag
    rendered = BootFile(path="k", size=2, mtime=1.0, data=b"ab")
    assert rendered.etag.startswith('"r-') and len(rendered.etag) == 3 + 32 + 1


def test_out_of_descriptors_is_try_again_not_forbidden(root: Path) -> None:
    """EMFILE at open is the server's trouble: 503 (try again) and a TFTP error, not the
    403 / access violation that tells a client the name is forbidden for good. A child
    process really runs out of descriptors (RLIMIT_NOFILE), no mock."""
    import subprocess
    import sys
    code = (
        "import os, resource, sys\n"
        "from provision.policy import boottree\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "held = []\n"
        "try:\n"
        "    while len(held) < 100:\n"
        "        held.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError:\n"
        "    pass\n"
        "try:\n"
        "    boottree._open_regular(sys.argv[1])\n"
        "except boottree.Refused as r:\n"
        "    print(r.reason.key, r.reason.http_status, r.message)\n")
    r = subprocess.run([sys.executable, "-c", code, str(root / "images/tiny/1/vmlinuz")],
                       capture_output=True, text=True, timeout=60, check=True)
    assert r.stdout.split()[:2] == ["descriptors", "503"], r.stdout + r.stderr
    assert boottree.OUT_OF_FDS.tftp_code == boottree.TFTP_ERR_UNDEFINED
