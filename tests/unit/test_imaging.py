"""Image builds: the cpio codec, module selection, recipes, and real builds of the tiny
image (reproducible, cached, verified); the Debian web image is in
tests/lab/test_imaging_lab.py."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from provision.cli.main import cli
from provision.imaging import cpio
from provision.imaging.build import Builder, default_recipes_dir
from provision.imaging.kmod import ModuleError, ModuleIndex
from provision.imaging.recipe import RecipeError, load
from provision.imaging.store import ImageStore, sha256_file
from provision.imaging.tree import Tree, gzip_bytes
from tests.support.paths import ROOT

# -- codec and pure parts ---------------------------------------------------------

def test_cpio_round_trip_keeps_names_modes_data_and_devices() -> None:
    entries = [
        cpio.CpioEntry("dev", stat.S_IFDIR | 0o755),
        cpio.CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        cpio.CpioEntry("init", stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n"),
        cpio.CpioEntry("sh", stat.S_IFLNK | 0o777, b"/bin/busybox"),
        cpio.CpioEntry("odd", stat.S_IFREG | 0o644, b"x" * 5),  # needs padding
    ]
    blob = cpio.pack(entries)
    assert len(blob) % 4 == 0
    assert cpio.unpack(blob) == entries


def test_cpio_archive_is_what_the_cpio_tool_reads(tmp_path: Path) -> None:
    blob = cpio.pack([cpio.CpioEntry("a", stat.S_IFDIR | 0o755),
                      cpio.CpioEntry("a/b", stat.S_IFREG | 0o640, b"data\n")])
    out = subprocess.run(["cpio", "-i", "-d", "--quiet"], input=blob, cwd=tmp_path,
                         capture_output=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "a" / "b").read_bytes() == b"data\n"


@pytest.mark.parametrize("blob,offset", [
    (b"070701" + b"0" * 50, 0),                    # truncated header
    (b"070707" + b"0" * 200, 0),                   # old binary magic
    (cpio.pack([cpio.CpioEntry("x", stat.S_IFREG | 0o644, b"abc")])[:113], 112),  # data cut short
])
def test_cpio_malformed_archives_raise_with_the_offset(blob: bytes, offset: int) -> None:
    with pytest.raises(cpio.CpioError) as err:
        cpio.unpack(blob)
    assert err.value.offset == offset


DEP = """kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko \
kernel/drivers/virtio/virtio.ko
kernel/drivers/net/net_failover.ko: kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
"""
ALIAS = "alias crypto-crc32c crc32c_generic\nalias crypto-crc32c crc32c_intel\n" \
        "alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_net\n"
SOFTDEP = "softdep ext4 pre: crypto-crc32c\n"
BUILTIN = "kernel/net/packet/af_packet.ko\n"


def test_module_closure_follows_deps_softdeps_and_aliases() -> None:
    idx = ModuleIndex.parse(DEP, ALIAS, SOFTDEP, BUILTIN)
    paths, builtin = idx.closure(["virtio_net", "ext4", "af_packet"])
    assert paths == sorted([
        "kernel/drivers/net/virtio_net.ko", "kernel/drivers/net/net_failover.ko",
        "kernel/drivers/virtio/virtio.ko", "kernel/fs/ext4/ext4.ko", "kernel/fs/jbd2/jbd2.ko",
        "kernel/crypto/crc32c_generic.ko", "kernel/arch/x86/crypto/crc32c-intel.ko",
    ])
    assert builtin == ["af_packet"]
    sub = idx.subset_dep(["kernel/drivers/net/virtio_net.ko", "kernel/drivers/virtio/virtio.ko"])
    assert "kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio.ko\n" in sub
    assert "pci:v00001AF4" in idx.subset_alias(paths)
    with pytest.raises(ModuleError, match="no_such_module"):
        idx.closure(["no_such_module"])


def test_tree_fingerprint_and_archives_are_reproducible() -> None:
    def make(mode: int = 0o755) -> Tree:
        t = Tree()
        t.file("/usr/sbin/x", b"#!/bin/sh\n", mode)
        t.symlink("/bin/sh", "/bin/busybox")
        t.chardev("/dev/console", 5, 1)
        return t
    a, b = make(), make()
    assert a.fingerprint() == b.fingerprint()
    assert gzip_bytes(a.to_tar()) == gzip_bytes(b.to_tar())
    assert gzip_bytes(a.to_cpio()) == gzip_bytes(b.to_cpio())
    assert make(0o700).fingerprint() != a.fingerprint()
    assert "usr" in a.nodes and a.nodes["usr/sbin"].kind == "dir"  # parents made
    with pytest.raises(ValueError):
        a.file("../escape", b"")


def test_recipe_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "x" / "recipe.toml"
    bad.parent.mkdir()
    bad.write_text('kind = "iso"\n')
    with pytest.raises(RecipeError, match=r"recipe.toml: kind: 'iso' is not one of"):
        load(bad)
    bad.write_text('kind = "rootfs"\n')
    with pytest.raises(RecipeError, match="boot: a rootfs image names the image"):
        load(bad)
    bad.write_text('kind = "initramfs"\n[[copy]]\npackage = "busybox-static"\n')
    with pytest.raises(RecipeError, match=r"copy\[0\]\.path: required"):
        load(bad)


def test_shell_scripts_parse() -> None:
    for script in ("boot-scripts/initramfs/init", "boot-scripts/initramfs/udhcpc.script",
                   "boot-scripts/lib/common.sh", "images/tiny/serial-shell"):
        assert subprocess.run(["busybox", "sh", "-n", str(ROOT / script)],
                              timeout=10).returncode == 0, script
    assert subprocess.run(["bash", "-n", str(ROOT / "boot-scripts/dsas-init")],
                          timeout=10).returncode == 0


# -- real builds from Debian's packages -------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageStore, Builder]:
    root = tmp_path_factory.mktemp("images")
    store = ImageStore(root / "store")
    builder = Builder(default_recipes_dir(), store, root / "cache")
    builder.build("tiny")
    return store, builder


def test_tiny_image_has_everything_and_verifies(built: tuple[ImageStore, Builder]) -> None:
    store, _ = built
    version = store.resolve("tiny")
    assert version and store.verify("tiny", version) == []
    d = store.dir("tiny", version)
    assert sorted(p.name for p in d.iterdir()) == [
        "initrd.img", "manifest.json", "rootfs.tar.gz", "vmlinuz"]
    m = store.manifest("tiny", version)
    assert m is not None and m["version"] == version
    for name, entry in m["files"].items():
        assert sha256_file(d / name) == entry["sha256"]
    assert {"busybox-static", "bash-static"} <= set(m["packages"])
    assert m["boot"] == {"image": "netboot", "version": store.resolve("netboot")}

    with tarfile.open(d / "rootfs.tar.gz") as tar:
        names = set(tar.getnames())
        bash = tar.extractfile("bin/bash")
        assert bash is not None
        assert m["rootfs"]["bin/bash"] == hashlib.sha256(bash.read()).hexdigest()
        assert tar.getmember("usr/sbin/dsas-init").mode == 0o755
    assert {"bin/bash", "bin/busybox", "bin/sh", "sbin/init", "usr/sbin/dsas-init",
            "usr/lib/dsas/common.sh", "etc/inittab"} <= names
    # dsas-init sources the functions it shares with the initramfs's /init
    assert m["rootfs"]["usr/lib/dsas/common.sh"] == sha256_file(ROOT / "boot-scripts/lib/common.sh")
    assert any(n.endswith("/bonding.ko") for n in names)


def test_netboot_initramfs_has_init_busybox_and_modules_with_deps(
        built: tuple[ImageStore, Builder]) -> None:
    store, _ = built
    d = store.dir("netboot", "current")
    entries = {e.name: e for e in cpio.unpack(gzip.decompress((d / "initrd.img").read_bytes()))}
    assert entries["init"].data.startswith(b"#!/bin/sh")
    # /init sources the functions it shares with dsas-init
    assert b'DSAS_LIB=${DSAS_LIB:-/lib/dsas}' in entries["init"].data
    assert entries["lib/dsas/common.sh"].data == (ROOT / "boot-scripts/lib/common.sh").read_bytes()
    assert stat.S_ISCHR(entries["dev/console"].mode) and entries["dev/console"].rdev == (5, 1)
    assert entries["bin/sh"].data == b"/bin/busybox"
    release = (store.manifest("netboot", store.resolve("netboot") or "") or {})["kernel_release"]
    base = f"lib/modules/{release}/"
    ko = {n.rsplit("/", 1)[-1] for n in entries if n.startswith(base) and n.endswith(".ko")}
    for mod in ("virtio_net.ko", "virtio_ring.ko", "virtio_pci.ko", "e1000.ko", "bonding.ko",
                "8021q.ko", "garp.ko", "virtio_blk.ko", "ext4.ko", "jbd2.ko"):
        assert mod in ko, mod
    dep = entries[base + "modules.dep"].data.decode()
    assert "kernel/net/8021q/8021q.ko: " in dep and "garp.ko" in dep
    assert (d / "vmlinuz").read_bytes()[0x202:0x206] == b"HdrS"  # a bzImage


def test_rebuild_is_cached_and_a_second_store_gets_identical_bytes(
        built: tuple[ImageStore, Builder], tmp_path: Path) -> None:
    store, builder = built
    version = store.resolve("tiny")
    assert version
    before = (store.dir("tiny", version) / "rootfs.tar.gz").stat().st_mtime_ns
    again = Builder(default_recipes_dir(), store, tmp_path / "cache").build("tiny")
    assert again.cached and again.version == version
    assert (store.dir("tiny", version) / "rootfs.tar.gz").stat().st_mtime_ns == before

    other = ImageStore(tmp_path / "other")
    fresh = Builder(default_recipes_dir(), other, tmp_path / "cache").build("tiny")
    assert not fresh.cached and fresh.version == version
    for name in ("vmlinuz", "initrd.img", "rootfs.tar.gz", "manifest.json"):
        assert (other.dir("tiny", version) / name).read_bytes() == \
            (store.dir("tiny", version) / name).read_bytes(), name


def test_a_changed_boot_script_is_a_new_version(tmp_path: Path,
                                                built: tuple[ImageStore, Builder]) -> None:
    store, _ = built
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "images", repo / "images")
    shutil.copytree(ROOT / "boot-scripts", repo / "boot-scripts")
    init = repo / "boot-scripts" / "initramfs" / "init"
    init.write_text(init.read_text() + "\n# changed\n")
    other = ImageStore(tmp_path / "store")
    res = Builder(repo / "images", other, tmp_path / "cache").build("tiny")
    assert res.version != store.resolve("tiny")
    assert other.resolve("netboot") != store.resolve("netboot")


def test_a_corrupt_artifact_is_detected_and_rebuilt(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "store")
    first = Builder(default_recipes_dir(), store, tmp_path / "cache").build("netboot")
    initrd = first.path / "initrd.img"
    initrd.write_bytes(b"garbage")
    assert store.verify("netboot", first.version) == [
        f"netboot/{first.version}/initrd.img: sha256 mismatch"]
    again = Builder(default_recipes_dir(), store, tmp_path / "cache").build("netboot")
    assert not again.cached and store.verify("netboot", first.version) == []


def test_cli_builds_prints_progress_then_is_a_no_op(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["image", "build", "netboot", "--boot-root", str(tmp_path), "--cache",
            str(tmp_path / "cache")]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "package busybox-static" in first.output and "built ->" in first.output
    second = runner.invoke(cli, args)
    assert second.exit_code == 0 and "up to date (cached)" in second.output
    listing = runner.invoke(cli, ["image", "list", "--boot-root", str(tmp_path)])
    rows = [line.split() for line in listing.output.splitlines()[2:]]
    assert rows and rows[0][:2] == ["*", "netboot"], listing.output
    verify = runner.invoke(cli, ["image", "verify", "netboot", "--boot-root", str(tmp_path)])
    assert verify.exit_code == 0 and ": ok" in verify.output
    missing = runner.invoke(cli, ["image", "build", "nosuch", "--boot-root", str(tmp_path)])
    assert missing.exit_code == 1 and "no image recipe 'nosuch'" in missing.output


def test_gzip_has_no_timestamp() -> None:
    blob = gzip_bytes(b"x")
    assert blob[4:8] == b"\0\0\0\0"
    assert gzip.GzipFile(fileobj=io.BytesIO(blob)).read() == b"x"




def test_every_recipe_with_dsas_init_ships_the_shared_library() -> None:
    """dsas-init sources lib/common.sh (say, json_escape, post_event): an image with one
    and not the other fails at boot ("DSAS_LIB: no /usr/lib/dsas/common.sh")."""
    import tomllib

    missing = []
    for recipe in sorted((ROOT / "images").glob("*/recipe.toml")):
        files = tomllib.loads(recipe.read_text()).get("file", [])
        srcs = {f.get("src") for f in files}
        if "boot-scripts/dsas-init" in srcs and "boot-scripts/lib/common.sh" not in srcs:
            missing.append(recipe.parent.name)
    assert not missing, missing


def test_record_sets_build_facts_and_leaves_the_artifacts_verified(tmp_path: Path) -> None:
    """store.record: what build_debian does when a build from other inputs makes a root
    fs already published (the same version): that version is recorded under the new
    recipe hash, so the next build of these inputs is a cache hit (and a boot-image-only
    change finds the root fs to reuse); the artifacts and their sums are untouched."""
    store = ImageStore(tmp_path / "store")
    store.publish("img", "v1", {"a.bin": b"data"},
                  {"version": "v1", "recipe_hash": "old",
                   "files": {"a.bin": {"sha256": hashlib.sha256(b"data").hexdigest(),
                                       "size": 4}}})
    store.record("img", "v1", recipe_hash="new")
    m = store.manifest("img", "v1")
    assert m is not None and m["recipe_hash"] == "new" and m["version"] == "v1"
    assert store.verify("img", "v1") == []
    assert sorted(p.name for p in store.dir("img", "v1").iterdir()) == ["a.bin",
                                                                        "manifest.json"]
    store.record("img", "v2", recipe_hash="x")  # no such version: nothing made
    assert not store.dir("img", "v2").exists()
