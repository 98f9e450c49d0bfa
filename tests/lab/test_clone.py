"""dsas-clone on image files and loop devices: real partition tables, file
systems, manifests and per-host dsas.conf; refusals; an interrupted clone."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.clone import (
    CLONE,
    INVENTORY,
    TEST_BOOT_ROOT,
    blkid,
    build_images,
    clone,
    loop_device,
    loops_on,
    mounted,
    partition,
    partition_table,
    sha256,
)
from lab.testing import require_root, require_tool
from provision.clone import checks
from provision.clone import clone as clone_mod
from provision.clone.disklayout import MIB
from provision.imaging.content import entries
from provision.inventory import load
from provision.render import render_host

GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


@pytest.fixture(scope="module")
def store():
    require_root()
    for t in ("mmdebstrap", "sfdisk", "losetup", "extlinux", "mkfs.ext4", "e2fsck"):
        require_tool(t)
    return build_images("tiny", "web")


@pytest.fixture
def inv_path(tmp_path: Path) -> Path:
    p = tmp_path / "cluster.yaml"
    p.write_text(INVENTORY)
    return p


def _check_disk(disk: Path, inv_path: Path, host: str, image: str, store, mnt: Path) -> None:
    """Partitions per the hwtype, file systems, dsas.conf of `host`, manifest files."""
    inv = load(inv_path)
    h = inv.hosts[host]
    assert h.hwtype.disk is not None
    table = partition_table(disk)
    assert table["label"] == {"msdos": "dos"}.get(h.hwtype.label, h.hwtype.label)
    numbered = {int(re.search(r"(\d+)$", p["node"]).group(1)): p for p in table["partitions"]}
    number = {}
    for part in h.hwtype.partitions:
        if not part.device.startswith(h.hwtype.disk):
            assert len(numbered) <= len(h.hwtype.partitions) + 1  # not on this disk: absent
            continue
        n = number[part.part] = int(part.device.removeprefix(h.hwtype.disk))
        assert n in numbered, f"partition {n} ({part.part}) missing: {table}"
        if part.size_mib:
            assert numbered[n]["size"] * 512 == part.size_mib * MIB
        with partition(disk, n) as dev:
            assert blkid(dev).get("TYPE") == part.fstype
    with partition(disk, number["fs"]) as rdev, partition(disk, number["boot"]) as bdev, \
            mounted(rdev, mnt / "root") as root, mounted(bdev, mnt / "boot") as boot:
        assert (root / "etc/dsas.conf").read_text() == render_host(inv, h, "dsas.conf")
        assert (root / "etc/hostname").read_text().strip() == host
        root_uuid = blkid(rdev)["UUID"]
        assert f"UUID={root_uuid}  /  ext4" in (root / "etc/fstab").read_text()
        assert f"UUID={blkid(bdev)['UUID']}  /boot" in (root / "etc/fstab").read_text()
        keys = sorted(p.name for p in (root / "etc/ssh").glob("ssh_host_*_key"))
        assert "ssh_host_ed25519_key" in keys
        record = json.loads((root / "var/lib/dsas/clone.json").read_text())
        version = store.resolve(image)
        assert (record["host"], record["image"], record["version"]) == (host, image, version)
        want = entries(store.manifest(image, version))
        files = [p for p, e in want.items() if e.type == "file"
                 and not p.startswith(("etc/", "boot/"))]
        assert len(files) > 5
        for p in files[:: max(1, len(files) // 40)]:  # a spread of files re-hashed here
            assert hashlib.sha256((root / p).read_bytes()).hexdigest() == want[p].sha256, p
        conf = (boot / "extlinux/extlinux.conf").read_text()
        assert f"root=UUID={root_uuid}" in conf
        assert (boot / "extlinux/ldlinux.sys").exists()


def test_clone_tiny_and_web_for_two_hosts(store, inv_path: Path, tmp_path: Path) -> None:
    # tiny -> an image file for t1 (msdos); web -> a loop device for w1 (gpt)
    tiny_img = tmp_path / "t1.img"
    res = clone("t1", "--target", str(tiny_img), "--size", "256M", "-i", str(inv_path), "--yes")
    assert res.returncode == 0, res.stderr
    assert "skipped  db (/dev/vdb1: not on /dev/vda)" in res.stdout
    assert "verify" in res.stderr and "MiB/s" in res.stderr and "ETA" in res.stderr
    assert tiny_img.read_bytes()[510:512] == b"\x55\xaa"
    _check_disk(tiny_img, inv_path, "t1", "tiny", store, tmp_path / "m1")

    web_img = tmp_path / "w1.img"
    with web_img.open("wb") as f:
        f.truncate(1400 * MIB)
    with loop_device(web_img) as dev:
        res = clone("w1", "--target", dev, "-i", str(inv_path), "--yes")
        assert res.returncode == 0, res.stderr
        assert "done:" in res.stdout and "verified" in res.stdout
    table = partition_table(web_img)
    assert table["label"] == "gpt"
    assert {p.get("name") for p in table["partitions"]} == {"boot", "swap", "fs", "bios"}
    assert not loops_on(web_img).count("offset")  # clone's own loop devices are gone
    _check_disk(web_img, inv_path, "w1", "web", store, tmp_path / "m2")


def test_two_hosts_get_their_own_identity(store, inv_path: Path, tmp_path: Path) -> None:
    confs, keys = {}, {}
    for host in ("w1", "w2"):
        img = tmp_path / f"{host}.img"
        res = clone(host, "--target", str(img), "--size", "1400M", "-i", str(inv_path), "--yes")
        assert res.returncode == 0, res.stderr
        with partition(img, 3) as dev, mounted(dev, tmp_path / host) as r:
            confs[host] = (r / "etc/dsas.conf").read_text()
            keys[host] = (r / "etc/ssh/ssh_host_ed25519_key.pub").read_text()
    assert "SYSTEMNAME=w1" in confs["w1"] and "SYSTEMNAME=w2" in confs["w2"]
    assert "198.18.0.22/24" in confs["w2"] and "198.18.0.22" not in confs["w1"]
    assert keys["w1"] != keys["w2"]


def test_dry_run_writes_nothing(store, inv_path: Path, tmp_path: Path) -> None:
    img = tmp_path / "w1.img"
    res = clone("w1", "--target", str(img), "--size", "1400M", "-i", str(inv_path), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "dry run: nothing written" in res.stdout
    assert "gpt" in res.stdout and "/dev/vda3" in res.stdout and "BIOS boot" in res.stdout
    assert not img.exists()
    existing = tmp_path / "old.img"
    existing.write_bytes(b"x" * 4096 + b"\0" * (1400 * MIB - 4096))
    before = sha256(existing)
    res = clone("w1", "--target", str(existing), "-i", str(inv_path), "-n")
    assert res.returncode == 0, res.stderr
    assert sha256(existing) == before


def test_refuses_unknown_host(store, inv_path: Path, tmp_path: Path) -> None:
    res = clone("nosuch", "--target", str(tmp_path / "x.img"), "--size", "2G",
                "-i", str(inv_path), "--yes")
    assert res.returncode == 2
    assert "unknown host 'nosuch'" in res.stderr and "nothing written" in res.stderr
    assert not (tmp_path / "x.img").exists()


def test_refuses_too_small(store, inv_path: Path, tmp_path: Path) -> None:
    img = tmp_path / "small.img"
    res = clone("w1", "--target", str(img), "--size", "400M", "-i", str(inv_path), "--yes")
    assert res.returncode == 1
    assert "too small" in res.stderr and "cannot hold the image" in res.stderr
    assert not img.exists()


def test_refuses_mounted_target(store, inv_path: Path, tmp_path: Path) -> None:
    img = tmp_path / "busy.img"
    with img.open("wb") as f:
        f.truncate(1400 * MIB)
    with loop_device(img) as dev:
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, timeout=60)
        with mounted(dev, tmp_path / "mnt", "rw"):
            res = clone("w1", "--target", dev, "-i", str(inv_path), "--yes")
            assert res.returncode == 1
            assert "is mounted" in res.stderr and str(tmp_path / "mnt") in res.stderr
        assert blkid(dev).get("TYPE") == "ext4"  # untouched


def test_refuses_running_system_disk(store, inv_path: Path) -> None:
    root_src = next(line.split()[0] for line in Path("/proc/self/mounts").read_text().splitlines()
                    if line.split()[1] == "/" and line.startswith("/dev/"))
    name = checks.disk_of(checks.block_name(Path(root_src)) or "")
    res = clone("w1", "--target", f"/dev/{name}", "-i", str(inv_path), "--yes")
    assert res.returncode == 1
    assert "part of the running system" in res.stderr or "is mounted" in res.stderr


def test_refuses_file_attached_to_loop(store, inv_path: Path, tmp_path: Path) -> None:
    img = tmp_path / "attached.img"
    with img.open("wb") as f:
        f.truncate(1400 * MIB)
    with loop_device(img):
        res = clone("w1", "--target", str(img), "-i", str(inv_path), "--yes")
    assert res.returncode == 1 and "in use by a loop device" in res.stderr


def test_interrupted_clone_leaves_target_unusable(store, inv_path: Path, tmp_path: Path) -> None:
    img = tmp_path / "w1.img"
    # A good disk first: the interrupted clone must not leave it looking good.
    assert clone("w1", "--target", str(img), "--size", "1400M", "-i", str(inv_path),
                 "--yes").returncode == 0
    assert partition_table(img)
    env_cmd = [*CLONE, "w1", "--target", str(img), "-i", str(inv_path), "--yes"]
    proc = subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**__import__("os").environ,
                                 "DSAS_BOOT_ROOT": str(TEST_BOOT_ROOT)})
    assert proc.stderr is not None
    seen = ""
    deadline = time.monotonic() + 120
    while "copying" not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    assert "copying" in seen, seen
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert "UNUSABLE" in seen + err and "no partition table" in seen + err
    assert partition_table(img) == {}
    assert img.read_bytes()[:512] == b"\0" * 512
    assert loops_on(img) == ""
    assert str(img) not in Path("/proc/self/mounts").read_text()


def test_failure_midway_leaves_target_unusable(store, inv_path: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A verification failure (a file changed on the target) stops before the table."""
    inv = load(inv_path)
    src = clone_mod.image_source(store, "tiny", "current")
    img = tmp_path / "t1.img"
    plan = clone_mod.make_plan(inv, "t1", img, 256 * MIB, src)
    cloner = clone_mod.Cloner(plan, say=lambda s: None)
    real_copy = cloner.copy

    def copy_then_damage() -> None:
        real_copy()
        (cloner.root / "bin/busybox").write_bytes(b"damaged")
    monkeypatch.setattr(cloner, "copy", copy_then_damage)
    with pytest.raises(clone_mod.CloneError, match="verification failed"):
        cloner.run()
    assert partition_table(img) == {}
    assert loops_on(img) == ""


