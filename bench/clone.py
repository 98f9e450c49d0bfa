"""bench clone: dsas-clone throughput against cp -a and dd of the same bytes to the
same kind of target (ext4 on a loop device over an image file), and the web
image's build time (cached always; cold with --cold, which rebuilds it).

    python -m bench clone [--cold] [--rounds N]

Each round clones the web image with dsas-clone and copies the same tree with
cp -a (and dd), interleaved, so load from elsewhere on the machine falls on
both; the table shows medians, the best round and the CPU seconds spent.

Each measurement records the CPU other processes used during it
(``bench.common.cpu_span``: the machine's less this process, its children and the
kernel's threads, which do the loop devices' and the writeback's work for us), printed
per round. A round where any of clone, cp and dd ran with others above
``FOREIGN_LIMIT`` of a core is loaded: the table and the ratios use the quiet rounds
only; with none, the table shows all rounds marked loaded and the ratios are "-".
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from lab.clone import INVENTORY, TEST_BOOT_ROOT, TEST_CACHE
from provision.clone import clone as c
from provision.imaging.build import Builder, default_recipes_dir
from provision.imaging.store import ImageStore
from provision.inventory import loads

from .common import FOREIGN_LIMIT, children_cpu, cpu_span

MIB = 1 << 20
Measure = tuple[float, float, float]  # seconds, CPU seconds, other CPU (% of one core)


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


class Baseline:
    """The unpacked tree copied with cp -a into a fresh ext4 on a loop device, and the
    same number of bytes written raw with dd. Each measurement gets a new sparse image
    file, as each clone does (filling holes costs the backing file system work)."""

    def __init__(self, tmp: Path, archive: Path, size: int):
        self.tmp, self.size = tmp, size
        self.tree, self.mnt = tmp / "tree", tmp / "mnt"
        self.tree.mkdir()
        self.mnt.mkdir()
        _sh("tar", "-xzpf", str(archive), "--numeric-owner", "-C", str(self.tree))
        self.nbytes = int(_sh("du", "-sb", str(self.tree)).split()[0])

    @contextlib.contextmanager
    def _loop(self) -> Iterator[str]:
        img = self.tmp / "base.img"
        with img.open("wb") as f:
            f.truncate(self.size)
        dev = _sh("losetup", "--find", "--show", str(img)).strip()
        try:
            yield dev
        finally:
            subprocess.run(["umount", str(self.mnt)], capture_output=True, timeout=60)
            subprocess.run(["losetup", "-d", dev], capture_output=True, timeout=60)
            img.unlink()

    def cp(self) -> Measure:
        """(seconds, CPU seconds, other CPU) of cp -a plus the file system's sync."""
        with self._loop() as dev:
            _sh("mkfs.ext4", "-q", "-F", dev)
            _sh("mount", dev, str(self.mnt))
            _sh("sync")
            with cpu_span(kernel=True) as span:
                cpu = children_cpu()
                _sh("cp", "-a", f"{self.tree}/.", str(self.mnt))
                _sh("sync", "--file-system", str(self.mnt))
                cpu = children_cpu() - cpu
            return span.wall, cpu, span.other

    def dd(self) -> Measure:
        with self._loop() as dev, cpu_span(kernel=True) as span:
            cpu = children_cpu()
            _sh("dd", "if=/dev/zero", f"of={dev}", "bs=4M",
                f"count={self.nbytes // (4 * MIB)}", "conv=fsync", "status=none")
            cpu = children_cpu() - cpu
        return span.wall, cpu, span.other


def _rounds(argv: list[str]) -> int:
    return int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3


def main(argv: list[str]) -> int:
    cached_s, cold_s = _build_time("--cold" in argv)
    store = ImageStore(TEST_BOOT_ROOT / "images")
    inv = loads(INVENTORY, "bench-clone.yaml")
    size = 1400 * MIB
    runs: dict[str, list[Measure]] = {"clone": [], "whole": [], "cp": [], "dd": []}
    with tempfile.TemporaryDirectory(prefix="dsas-bench-clone-") as d:
        tmp = Path(d)
        src = c.image_source(store, "web", "current")
        assert src.path is not None
        base = Baseline(tmp, src.path / "rootfs.tar.gz", size)
        for i in range(_rounds(argv)):  # interleaved: a busy machine hits all alike
            plan = c.make_plan(inv, "w1", tmp / f"w1-{i}.img", size, src)
            with cpu_span(kernel=True) as span:  # the copy's other CPU: the whole run's
                stats = c.Cloner(plan, say=lambda s: None).run()
            runs["whole"].append((span.wall, 0.0, span.other))
            runs["clone"].append((stats["copy_seconds"], stats.get("copy_cpu_seconds", 0.0),
                                  span.other))
            (tmp / f"w1-{i}.img").unlink()
            runs["cp"].append(base.cp())
            runs["dd"].append(base.dd())
            print(f"  round {i + 1}: other CPU clone {span.other:.1f}%, cp "
                  f"{runs['cp'][-1][2]:.1f}%, dd {runs['dd'][-1][2]:.1f}%"
                  f"{'' if _quiet(runs, i) else '  (loaded: not a result)'}", flush=True)
    _report(runs, stats, base.nbytes, stats.get("gunzip", "gzip"))
    print(f"web image build: cached {cached_s:.1f}s"
          + (f", cold (debs cached) {cold_s:.0f}s" if cold_s is not None else
             " (cold: python -m bench clone --cold)"))
    return 0


def _quiet(runs: dict[str, list[Measure]], i: int) -> bool:
    return all(v[i][2] <= FOREIGN_LIMIT for v in runs.values())


def _report(all_runs: dict[str, list[Measure]], stats: dict, nbytes: int,
            gunzip: str) -> None:
    rounds = len(all_runs["cp"])
    quiet = [i for i in range(rounds) if _quiet(all_runs, i)]
    use = quiet or list(range(rounds))
    runs = {k: [v[i] for i in use] for k, v in all_runs.items()}
    med = {k: statistics.median(s for s, _, _ in v) for k, v in runs.items()}
    best = {k: min(s for s, _, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c, _ in v) for k, v in runs.items()}
    other = {k: max(o for _, _, o in v) for k, v in runs.items()}
    n = {"clone": stats["copy_bytes"], "whole": stats["copy_bytes"], "cp": nbytes, "dd": nbytes}
    names = {"clone": f"dsas-clone copy (tar+{gunzip}, sync)",
             "cp": "cp -a same tree to ext4/loop, sync", "dd": "dd same bytes to loop (raw)",
             "whole": "dsas-clone whole (mkfs..table)"}
    print(f"{rounds} rounds, interleaved, {len(quiet)} quiet (other CPU at most "
          f"{FOREIGN_LIMIT:g}% of a core in clone, cp and dd); median (best) seconds of "
          + ("the quiet rounds" if quiet else "all rounds, all loaded: not a result"))
    print(f"{'what':<38} {'MiB':>6} {'s':>6} {'best':>6} {'MiB/s':>7} {'CPU s':>6} "
          f"{'other CPU':>9}")
    for k in ("clone", "cp", "dd", "whole"):
        print(f"{names[k]:<38} {n[k] / MIB:>6.0f} {med[k]:>6.1f} {best[k]:>6.1f} "
              f"{n[k] / med[k] / MIB:>7.1f} {cpu[k] if k != 'whole' else 0:>6.1f} "
              f"{other[k]:>8.1f}%")

    def rate(k: str, t: dict[str, float]) -> float:
        return n[k] / t[k]
    if not quiet:
        print("ratio clone copy / cp -a: -;  clone copy / dd: -   (goal >= 0.8; no quiet "
              "round, so no ratio)")
        return
    print(f"ratio clone copy / cp -a: {rate('clone', med) / rate('cp', med):.2f} median, "
          f"{rate('clone', best) / rate('cp', best):.2f} best;  clone copy / dd: "
          f"{rate('clone', med) / rate('dd', med):.2f} median   (goal >= 0.8; quiet rounds)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
