"""The uftp session's bundle: the small changed files go as one cpio archive
(multicast.sums_file), and the node unpacks it only when its bytes are the master's
(multicast.apply_script, run for real with sh, coreutils and GNU cpio on a node layout
under a temporary directory; and busybox's, which busybox images have)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from lab.testing import require_tool
from provision.push import multicast
from provision.push.release import NodeLayout

RID = "20261204-220000-000-abcd"


def site(root: Path) -> dict[str, bytes]:
    files = {f"d{i % 3}/sub/f{i}.bin": os.urandom(300 + i) for i in range(20)}
    files["big.bin"] = os.urandom(multicast.BUNDLE_MAX_FILE + 1)  # goes as itself
    files["top.txt"] = b"top\n"
    files["long/" + "n" * 150 + "/é.txt"] = b"a name past tar's 100 bytes\n"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.chmod(root / "top.txt", 0o640)
    return files


def session(tmp: Path, files: dict[str, bytes], tamper: bool = False) -> tuple[NodeLayout, str]:
    """What the master makes (the sums list and the bundle), put where uftpd would put
    it on the node (the staging directory), with the big file sent as itself."""
    src, wd = tmp / "src", tmp / "wd"
    wd.mkdir()
    names = sorted(files)
    bundled = {n for n in names if len(files[n]) <= multicast.BUNDLE_MAX_FILE}
    bundle = multicast.bundle_name(len(bundled))
    digest = multicast.sums_file(str(src), names, wd / multicast.SUMS_NAME, (),
                                 wd / bundle, bundled)
    lay = NodeLayout(str(tmp / "node/site"))
    stage = Path(multicast.staging(lay, RID))
    stage.mkdir(parents=True)
    Path(lay.incoming(RID)).mkdir()
    for name in (multicast.SUMS_NAME, bundle):
        os.link(wd / name, stage / name)
    os.link(src / "big.bin", stage / "big.bin")
    if tamper:  # same size, one byte changed: what a forged session could bring
        data = bytearray((stage / bundle).read_bytes())
        data[600] ^= 1
        (stage / bundle).unlink()
        (stage / bundle).write_bytes(bytes(data))
    return lay, digest


def apply(lay: NodeLayout, digest: str) -> dict[str, str]:
    r = subprocess.run(["sh", "-c", multicast.apply_script(lay, RID, digest)],
                       capture_output=True, text=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(line.split(" ", 1) for line in r.stdout.split("\n") if " " in line)


def test_the_bundle_is_unpacked_and_every_file_staged(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    files = site(tmp_path / "src")
    lay, digest = session(tmp_path, files)
    sums = (tmp_path / "wd" / multicast.SUMS_NAME).read_text().splitlines()
    bundle = multicast.bundle_name(len(files) - 1)
    assert sums[0].endswith("  " + bundle) and len(sums) == len(files) + 1
    assert sums[-1].endswith("  big.bin")  # the bundle's files' lines come right after it
    # newc: per file a 110-byte header and the name, then the data, each to 4 bytes;
    # the trailer (name TRAILER!!!): about 120 bytes a file, where tar takes 512 and more
    def newc(name: str, size: int) -> int:
        head = 110 + len(name.encode()) + 1
        return head + -head % 4 + size + -size % 4
    want = sum(newc(n, len(d)) for n, d in files.items() if len(d) <= multicast.BUNDLE_MAX_FILE)
    assert (tmp_path / "wd" / bundle).stat().st_size == want + newc("TRAILER!!!", 0)
    out = apply(lay, digest)
    assert (out["STAGED"], out["MISSED"]) == (str(len(files)), "0")
    inc = Path(lay.incoming(RID))
    got = {str(p.relative_to(inc)): p.read_bytes() for p in inc.rglob("*") if p.is_file()}
    assert got == files
    assert (inc / "top.txt").stat().st_mode & 0o7777 == 0o640
    assert (inc / "top.txt").stat().st_mtime == int((tmp_path / "src/top.txt").stat().st_mtime)
    assert not Path(multicast.staging(lay, RID)).exists()
    assert not list(Path(lay.releases).glob(".uftp-*"))  # sums, bsum, bundle: all cleaned


def test_a_bundle_that_is_not_the_masters_is_not_unpacked(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    files = site(tmp_path / "src")
    lay, digest = session(tmp_path, files, tamper=True)
    out = apply(lay, digest)
    # only the file sent by itself is staged; the bundled ones are missed (rsync's)
    assert (out["STAGED"], out["MISSED"]) == ("1", str(len(files) - 1))
    inc = Path(lay.incoming(RID))
    assert sorted(str(p.relative_to(inc)) for p in inc.rglob("*") if p.is_file()) == ["big.bin"]



def test_the_files_of_a_good_bundle_are_not_read_again(tmp_path: Path) -> None:
    """Their bytes were checked as the bundle's: the node does not hash them a second
    time (a first push would otherwise read every byte twice). Shown with a sums list
    whose line for a bundled file is wrong: staged all the same, as the bundle had it."""
    (tmp_path / "src").mkdir()
    files = site(tmp_path / "src")
    lay, _ = session(tmp_path, files)
    sums = Path(multicast.staging(lay, RID)) / multicast.SUMS_NAME
    lines = sums.read_text().splitlines(keepends=True)
    assert lines[1].endswith("  d0/sub/f0.bin\n")
    lines[1] = "0" * 64 + lines[1][64:]
    sums.unlink()
    sums.write_text("".join(lines))
    digest = hashlib.sha256(sums.read_bytes()).hexdigest()
    out = apply(lay, digest)
    assert (out["STAGED"], out["MISSED"]) == (str(len(files)), "0")
    assert (Path(lay.incoming(RID)) / "d0/sub/f0.bin").read_bytes() == files["d0/sub/f0.bin"]


def test_without_cpio_the_node_says_so_and_the_bundled_files_are_missed(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    files = site(tmp_path / "src")
    lay, digest = session(tmp_path, files)
    bin_ = tmp_path / "bin"  # every tool of the script but cpio
    bin_.mkdir()
    for tool in ("sh", "cat", "cut", "head", "sed", "mv", "rm", "wc", "sha256sum", "cp",
                 "kill", "sleep"):
        where = shutil.which(tool)
        if where:
            os.symlink(where, bin_ / tool)
    r = subprocess.run(["sh", "-c", multicast.apply_script(lay, RID, digest)],
                       capture_output=True, text=True, check=False, timeout=60,
                       env={"PATH": str(bin_)})
    out = dict(line.split(" ", 1) for line in r.stdout.split("\n") if " " in line)
    assert out.get("NOCPIO") == "1"
    assert (out["STAGED"], out["MISSED"]) == ("1", str(len(files) - 1))


def test_busybox_cpio_unpacks_the_bundle(tmp_path: Path) -> None:
    """Nodes of a busybox image have its cpio, not GNU's."""
    (tmp_path / "src").mkdir()
    files = site(tmp_path / "src")
    lay, digest = session(tmp_path, files)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    os.symlink(require_tool("busybox"), bin_ / "cpio")
    r = subprocess.run(["sh", "-c", multicast.apply_script(lay, RID, digest)],
                       capture_output=True, text=True, check=False, timeout=60,
                       env={"PATH": f"{bin_}:{os.environ['PATH']}"})
    out = dict(line.split(" ", 1) for line in r.stdout.split("\n") if " " in line)
    assert (out["STAGED"], out["MISSED"]) == (str(len(files)), "0"), r.stdout
    inc = Path(lay.incoming(RID))
    assert {str(p.relative_to(inc)): p.read_bytes() for p in inc.rglob("*") if p.is_file()} \
        == files
