"""bench clone: dsas-clone throughput against cp -a and dd of the same bytes to the
same kind of target (ext4 on a loop device over an image file), and the web
image's build time (cached always; cold with --cold, which rebuilds it).

    python -m bench clone [--cold]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provision.distribute import clone as c
from provision.imaging.build import Builder, default_recipes_dir
from provision.imaging.store import ImageStore
from provision.inventory import loads
from tests.clonelab import INVENTORY, TEST_BOOT_ROOT, TEST_CACHE

MIB = 1 << 20


def _sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=900).stdout


def _build_time(cold: bool) -> tuple[float, float | None]:
    store = ImageStore(TEST_BOOT_ROOT / "images")
    cold_s = None
    if cold:
        version = store.resolve("web")
        if version:
            shutil.rmtree(store.dir("web", version))
        t = time.monotonic()
        Builder(default_recipes_dir(), store, TEST_CACHE).build("web")
        cold_s = time.monotonic() - t
    t = time.monotonic()
    Builder(default_recipes_dir(), store, TEST_CACHE).build("web")
    return time.monotonic() - t, cold_s


def _baseline(tmp: Path, archive: Path, size: int) -> tuple[float, float, int]:
    """(cp seconds, dd seconds, bytes): the unpacked tree copied with cp -a into a fresh
    ext4 on a loop device, and the same number of bytes written raw with dd."""
    tree = tmp / "tree"
    tree.mkdir()
    _sh("tar", "-xzpf", str(archive), "--numeric-owner", "-C", str(tree))
    nbytes = int(_sh("du", "-sb", str(tree)).split()[0])
    img = tmp / "base.img"
    with img.open("wb") as f:
        f.truncate(size)
    dev = _sh("losetup", "--find", "--show", str(img)).strip()
    mnt = tmp / "mnt"
    mnt.mkdir()
    try:
        _sh("mkfs.ext4", "-q", "-F", dev)
        _sh("mount", dev, str(mnt))
        _sh("sync")
        t = time.monotonic()
        _sh("cp", "-a", f"{tree}/.", str(mnt))
        _sh("sync")
        cp_s = time.monotonic() - t
        _sh("umount", str(mnt))
        t = time.monotonic()
        _sh("dd", "if=/dev/zero", f"of={dev}", "bs=4M", f"count={nbytes // (4 * MIB)}",
            "conv=fsync", "status=none")
        dd_s = time.monotonic() - t
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60)
        subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)
    return cp_s, dd_s, nbytes


def main(argv: list[str]) -> int:
    cached_s, cold_s = _build_time("--cold" in argv)
    store = ImageStore(TEST_BOOT_ROOT / "images")
    inv = loads(INVENTORY, "bench-clone.yaml")
    size = 1400 * MIB
    with tempfile.TemporaryDirectory(prefix="dsas-bench-clone-") as d:
        tmp = Path(d)
        src = c.image_source(store, "web", "current")
        plan = c.make_plan(inv, "w1", tmp / "w1.img", size, src)
        t = time.monotonic()
        stats = c.Cloner(plan, say=lambda s: None).run()
        total_s = time.monotonic() - t
        assert src.path is not None
        cp_s, dd_s, nbytes = _baseline(tmp, src.path / "rootfs.tar.gz", size)
    copy_rate = stats["copy_bytes"] / stats["copy_seconds"] / MIB
    cp_rate, dd_rate = nbytes / cp_s / MIB, nbytes / dd_s / MIB
    rows = [
        ("dsas-clone copy (unpack + write)", stats["copy_bytes"], stats["copy_seconds"], copy_rate),
        ("cp -a same tree to ext4/loop", nbytes, cp_s, cp_rate),
        ("dd same bytes to loop (raw)", nbytes, dd_s, dd_rate),
        ("dsas-clone whole (mkfs..table)", stats["copy_bytes"], total_s,
         stats["copy_bytes"] / total_s / MIB),
    ]
    print(f"{'what':<34} {'MiB':>8} {'s':>7} {'MiB/s':>8}")
    for name, b, s, r in rows:
        print(f"{name:<34} {b / MIB:>8.0f} {s:>7.1f} {r:>8.1f}")
    print(f"ratio clone copy / cp -a: {copy_rate / cp_rate:.2f}   "
          f"clone copy / dd: {copy_rate / dd_rate:.2f}   (goal >= 0.8)")
    print(f"web image build: cached {cached_s:.1f}s"
          + (f", cold (debs cached) {cold_s:.0f}s" if cold_s is not None else
             " (cold: python -m bench clone --cold)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
