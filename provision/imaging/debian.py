"""Debian images (recipe kind "debian"): a full root fs made by mmdebstrap.

mmdebstrap installs the recipe's packages from the apt sources configured on
the build machine into a directory; the recipe's files are put in and its
hooks run; then the tree is packed into a deterministic rootfs.tar.gz (sorted,
numeric owners, fixed mtimes) while every entry's path, mode, size and sha256
go into the manifest. The version is the hash of that content.

Two caches make rebuilds fast: downloaded .debs (`<cache>/apt`, synced in and
out of the chroot's /var/cache/apt/archives) and the build itself: a store
version whose manifest carries the same recipe hash (the recipe, every file
it uses, the apt sources and the boot image) is reused when it verifies.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import time
from pathlib import Path
from typing import IO, Any

from .. import layout, proc
from .recipe import Recipe, RecipeError
from .result import BuildResult, ImageBuilder, file_entry, image_version, stored_result
from .store import MANIFEST_FORMAT, sha256_file
from .tree import EPOCH

APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
BUILD_TIMEOUT = 1800


class BuildError(RecipeError):
    """An image build failed (one line for the operator)."""


def host_apt_sources() -> list[Path]:
    """The enabled apt source files of this machine (mmdebstrap pastes them in)."""
    out = []
    main, d = APT_SOURCES
    if main.is_file() and _has_entries(main):
        out.append(main)
    if d.is_dir():
        out += sorted(p for p in d.iterdir()
                      if p.suffix in (".list", ".sources") and p.is_file() and _has_entries(p))
    if not out:
        raise BuildError("no apt sources on this machine (/etc/apt/sources.list*)")
    return out


def _has_entries(path: Path) -> bool:
    for line in path.read_text(errors="replace").splitlines():
        line = line.strip()
        if line.startswith(("deb ", "Types:")):
            return True
    return False


def recipe_hash(builder: ImageBuilder, recipe: Recipe, boot_version: str) -> str:
    """Everything the build depends on that we can know before building."""
    h = hashlib.sha256(b"dsas-debian/1\0")
    h.update(recipe.source.read_bytes())
    for rel in [f.src for f in recipe.files] + list(recipe.hooks):
        src = builder.repo_root / rel
        if not src.is_file():
            raise BuildError(f"{recipe.source}: {rel}: not found in {builder.repo_root}")
        h.update(f"\0{rel}\0".encode() + src.read_bytes())
    for p in host_apt_sources():
        h.update(f"\0{p}\0".encode() + p.read_bytes())
    h.update(f"\0boot={boot_version}".encode())
    return h.hexdigest()[:16]


def _cached(builder: ImageBuilder, recipe: Recipe, rhash: str) -> BuildResult | None:
    store = builder.store
    for version in store.versions(recipe.name):
        m = store.manifest(recipe.name, version)
        if m and m.get("recipe_hash") == rhash:
            hit = stored_result(builder.store, recipe.name, version)
            if hit:
                return hit
    return None


def mmdebstrap_argv(recipe: Recipe, target: Path, apt_cache: Path) -> list[str]:
    argv = ["mmdebstrap", "--mode=root", f"--variant={recipe.variant or 'minbase'}",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives",
            f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives",
            f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
            "--skip=essential/unlink"]
    if recipe.include:
        argv.append("--include=" + ",".join(recipe.include))
    argv += [f"--dpkgopt={o}" for o in recipe.dpkg_opts]
    argv += [recipe.suite or "bookworm", str(target)]
    argv += [str(p) for p in host_apt_sources()]
    return argv


def run_mmdebstrap(builder: ImageBuilder, recipe: Recipe, target: Path) -> None:
    apt_cache = builder.cache / "apt"
    apt_cache.mkdir(parents=True, exist_ok=True)
    if shutil.which("mmdebstrap") is None:
        raise BuildError("mmdebstrap not found (Debian package mmdebstrap)")
    argv = mmdebstrap_argv(recipe, target, apt_cache)
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH), LC_ALL="C.UTF-8")
    builder.say(f"  mmdebstrap {recipe.suite} ({len(recipe.include)} packages, "
                f"debs cached in {apt_cache})")
    log = builder.cache / f"{recipe.name}.mmdebstrap.log"
    with log.open("w") as out, proc.spawn(argv, stdout=out, stderr=subprocess.PIPE, text=True,
                                          env=env) as child:
        assert child.stderr is not None
        for line in child.stderr:  # mmdebstrap's progress: I: ... lines
            out.write(line)
            if line.startswith(("I: ", "E: ")):
                builder.say("    " + line.rstrip()[:100])
        rc = proc.wait(child, BUILD_TIMEOUT)
    if rc != 0:
        raise BuildError(f"mmdebstrap failed ({proc.status(rc)}); see {log}")


def apply_recipe(builder: ImageBuilder, recipe: Recipe, root: Path) -> None:
    for f in recipe.files:
        dest = root / f.dest.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(builder.repo_root / f.src, dest)
        os.chmod(dest, f.mode)
    for dest_s, target in recipe.symlinks:
        dest = root / dest_s.lstrip("/")
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        dest.symlink_to(target)
    for d in recipe.dirs:
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for hook in recipe.hooks:
        builder.say(f"  hook {hook}")
        try:
            proc.run(["sh", str(builder.repo_root / hook), str(root)], timeout=300)
        except proc.CommandError as e:  # which recipe and hook: the command alone does not say
            raise BuildError(f"{recipe.source}: hook {hook}: {e}") from None


class _HashingReader:
    def __init__(self, f: IO[bytes]):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size)
        self.h.update(data)
        self.n += len(data)
        return data


def walk(root: Path) -> list[str]:
    """Every path under root (relative, parents first, sorted), not crossing mounts."""
    out: list[str] = []
    dev = root.stat().st_dev

    def rec(d: Path, rel: str) -> None:
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            path = f"{rel}{e.name}"
            out.append(path)
            if e.is_dir(follow_symlinks=False) and e.stat(follow_symlinks=False).st_dev == dev:
                rec(Path(e.path), path + "/")
    rec(root, "")
    return out


def pack(root: Path, out: Path, say: Any = None) -> dict[str, dict[str, Any]]:
    """Write root as a deterministic tar.gz; return the manifest listing of every entry."""
    listing: dict[str, dict[str, Any]] = {}
    links: dict[tuple[int, int], str] = {}
    paths = walk(root)
    started = time.monotonic()
    with out.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i, rel in enumerate(paths):
            full = root / rel
            st = full.lstat()
            info = tarfile.TarInfo(rel)
            info.mode, info.uid, info.gid = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
            info.mtime, info.uname, info.gname = EPOCH, "", ""
            entry: dict[str, Any] = {"mode": f"{info.mode:04o}", "uid": st.st_uid,
                                     "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                info.type, info.linkname = tarfile.LNKTYPE, links[(st.st_dev, st.st_ino)]
                tar.addfile(info)
                first = listing[info.linkname]
                entry.update(type="file", size=first["size"], sha256=first["sha256"])
            elif stat.S_ISREG(st.st_mode):
                links[(st.st_dev, st.st_ino)] = rel
                info.size = st.st_size
                with full.open("rb") as f:
                    reader = _HashingReader(f)
                    tar.addfile(info, reader)
                entry.update(type="file", size=reader.n, sha256=reader.h.hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                entry["type"] = "dir"
            elif stat.S_ISLNK(st.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
                tar.addfile(info)
                entry.update(type="symlink", target=info.linkname)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tar.addfile(info)
                entry["type"] = "chardev" if stat.S_ISCHR(st.st_mode) else "blockdev"
            elif stat.S_ISFIFO(st.st_mode):
                info.type = tarfile.FIFOTYPE
                tar.addfile(info)
                entry["type"] = "fifo"
            else:
                continue  # sockets: not part of an image
            listing[rel] = entry
            if say and i and i % 5000 == 0:
                say(f"    packed {i}/{len(paths)} entries ({time.monotonic() - started:.0f}s)")
    return listing


def fingerprint(listing: dict[str, dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for path in sorted(listing):
        e = listing[path]
        h.update(f"{path}\0{e['type']}\0{e['mode']}\0{e['uid']}\0{e['gid']}\0"
                 f"{e.get('sha256', '')}\0{e.get('target', '')}\n".encode())
    return h.hexdigest()


def build_debian(builder: ImageBuilder, recipe: Recipe) -> BuildResult:
    assert recipe.boot is not None
    boot = builder.build(recipe.boot)
    rhash = recipe_hash(builder, recipe, boot.version)
    hit = _cached(builder, recipe, rhash)
    if hit:
        builder.say(f"  recipe {rhash} unchanged: reusing {hit.version}")
        return hit
    reboot = _reboot(builder, recipe, rhash, boot)
    if reboot:
        return reboot
    started = time.monotonic()
    work = builder.cache / "build" / f"{recipe.name}-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    root = work / "root"
    try:
        run_mmdebstrap(builder, recipe, root)
        apply_recipe(builder, recipe, root)
        builder.say("  packing root fs")
        archive = work / layout.ROOTFS
        listing = pack(root, archive, builder.say)
        version = image_version(recipe, boot.version, fingerprint(listing))
        m = _manifest(builder, recipe, root, version, rhash, boot, listing)
        m["build_seconds"] = round(time.monotonic() - started, 1)
        kernel = work / layout.KERNEL
        initrd = work / layout.INITRD
        shutil.copyfile(boot.path / layout.KERNEL, kernel)
        shutil.copyfile(boot.path / layout.INITRD, initrd)
        artifacts: dict[str, bytes | Path] = {layout.KERNEL: kernel, layout.INITRD: initrd,
                                              layout.ROOTFS: archive}
        m["files"] = {n: {"sha256": sha256_file(p), "size": p.stat().st_size}
                      for n, p in sorted(artifacts.items()) if isinstance(p, Path)}
        m["rootfs"] = listing
        if builder.store.manifest(recipe.name, version) and not builder.store.verify(
                recipe.name, version):
            # Same content, already there (built from other inputs that made the same
            # root fs): it is recorded under this recipe hash now, or every build of these
            # inputs would run mmdebstrap again, and a boot-image-only change (_reboot)
            # would never find the root fs to reuse.
            builder.store.record(recipe.name, version, recipe_hash=rhash)
            builder.store.set_current(recipe.name, version)
            path = builder.store.dir(recipe.name, version)
        else:
            path = builder.store.publish(recipe.name, version, artifacts, m)
        return BuildResult(recipe.name, version, path, False, m)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reboot(builder: ImageBuilder, recipe: Recipe, rhash: str, boot: BuildResult
            ) -> BuildResult | None:
    """Only the boot image changed: a stored version built from this same recipe with
    another boot image gets the new kernel and initramfs beside its root fs (the root
    fs does not depend on them), without running mmdebstrap again."""
    store = builder.store
    for old in store.versions(recipe.name):
        m = store.manifest(recipe.name, old)
        old_boot = ((m or {}).get("boot") or {}).get("version")
        if not m or not old_boot or "rootfs" not in m or m.get("recipe_hash") != recipe_hash(
                builder, recipe, old_boot) or store.verify(recipe.name, old):
            continue
        version = image_version(recipe, boot.version, fingerprint(m["rootfs"]))
        builder.say(f"  root fs of {old} reused; boot image now {boot.image} {boot.version}")
        kernel = (boot.path / layout.KERNEL).read_bytes()
        initrd = (boot.path / layout.INITRD).read_bytes()
        work = builder.cache / "build" / f"{recipe.name}-{os.getpid()}"
        work.mkdir(parents=True, exist_ok=True)
        rootfs = work / layout.ROOTFS
        try:
            os.link(store.dir(recipe.name, old) / layout.ROOTFS, rootfs)  # never changed
        except OSError:
            shutil.copyfile(store.dir(recipe.name, old) / layout.ROOTFS, rootfs)
        new = dict(m, version=version, recipe_hash=rhash,
                   boot={"image": boot.image, "version": boot.version},
                   built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        new["files"] = {layout.INITRD: file_entry(initrd), layout.ROOTFS: m["files"][layout.ROOTFS],
                        layout.KERNEL: file_entry(kernel)}  # sorted, as a full build writes
        try:
            path = store.publish(recipe.name, version, {
                layout.KERNEL: kernel, layout.INITRD: initrd, layout.ROOTFS: rootfs}, new)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return BuildResult(recipe.name, version, path, False, new)
    return None


def _manifest(builder: ImageBuilder, recipe: Recipe, root: Path, version: str, rhash: str,
              boot: BuildResult, listing: dict[str, dict[str, Any]]) -> dict[str, Any]:
    res = proc.run(["chroot", str(root), "dpkg-query", "-W", "-f=${Package}\t${Version}\n"],
                   timeout=120, check=False)  # no dpkg in the image: no packages listed
    pkgs = dict(line.split("\t", 1) for line in res.stdout.splitlines() if "\t" in line)
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    return {
        "format": MANIFEST_FORMAT, "image": recipe.name, "version": version,
        "kind": recipe.kind, "suite": recipe.suite,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recipe_hash": rhash,
        "kernel_release": kernels[-1] if kernels else "",
        "boot": {"image": boot.image, "version": boot.version},
        "packages": dict(sorted(pkgs.items())),
        "entries": len(listing),
        "size": sum(e.get("size", 0) for e in listing.values()),
    }
