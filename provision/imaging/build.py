"""Build images from recipes into the image store, reproducibly and cached.

The version of an image is a hash of everything that goes into it (kernel bytes,
every file of the archive with its path and mode, the boot image's version for a
root fs). The archives are written deterministically from that same content, so
one version always has the same bytes, and building a version that the store
already holds (and that verifies) does nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import layout, proc
from . import debs, kmod
from .debian import build_debian
from .recipe import Recipe, RecipeError, find
from .result import FORMAT_TAG, BuildResult, Progress, file_entries, image_version, stored_result
from .store import MANIFEST_FORMAT, ImageStore
from .tree import Tree, gzip_bytes

__all__ = ["FORMAT_TAG", "Builder", "BuildResult", "Kernel", "Progress", "default_recipes_dir",
           "has_recipe"]


def _quiet(_: str) -> None:
    pass


@dataclass
class Kernel:
    """A Debian kernel package: its release, vmlinuz and module index."""

    package: debs.Package
    release: str  # e.g. 6.1.0-56-amd64
    vmlinuz: bytes
    index: kmod.ModuleIndex

    @property
    def moddir(self) -> Path:
        return self.package.root / "lib/modules" / self.release


class Builder:
    """Builds recipes from `recipes_dir` (images/) into `store`; `cache` keeps .debs."""

    def __init__(self, recipes_dir: Path, store: ImageStore, cache: Path,
                 progress: Progress = _quiet):
        self.recipes_dir = Path(recipes_dir)
        self.repo_root = self.recipes_dir.parent
        self.store = store
        self.cache = Path(cache)
        self.say = progress
        self._packages: dict[str, debs.Package] = {}
        self._kernels: dict[str, Kernel] = {}
        self._results: dict[str, BuildResult] = {}

    # -- inputs ---------------------------------------------------------------

    def package(self, name: str) -> debs.Package:
        if name not in self._packages:
            pkg = debs.get(name, self.cache)
            self.say(f"  package {pkg.name} {pkg.version} ({pkg.origin})")
            self._packages[name] = pkg
        return self._packages[name]

    def kernel(self, meta: str) -> Kernel:
        if meta in self._kernels:
            return self._kernels[meta]
        real = debs.kernel_package(meta)
        pkg = self.package(real)
        vmlinuz = sorted(f for f in pkg.files if f.startswith("/boot/vmlinuz-"))
        if not vmlinuz:
            raise debs.PackageError(f"{real}: ships no /boot/vmlinuz-*")
        release = vmlinuz[0].removeprefix("/boot/vmlinuz-")
        moddir = pkg.root / "lib/modules" / release
        if not (moddir / "modules.dep").is_file():
            self.say(f"  depmod {release}")
            proc.run(["depmod", "-b", str(pkg.root), release], timeout=300)
        texts = [(moddir / n).read_text() if (moddir / n).is_file() else ""
                 for n in ("modules.dep", "modules.alias", "modules.softdep", "modules.builtin")]
        k = Kernel(pkg, release, pkg.read(vmlinuz[0]), kmod.ModuleIndex.parse(*texts))
        self._kernels[meta] = k
        return k

    # -- the tree ---------------------------------------------------------------

    def tree(self, recipe: Recipe, kernel: Kernel) -> tuple[Tree, list[str]]:
        t = Tree()
        for d in recipe.dirs:
            t.mkdir(d)
        for dev in recipe.devices:
            t.chardev(dev.dest, dev.major, dev.minor, dev.mode)
        for c in recipe.copies:
            t.file(c.dest, self.package(c.package).read(c.path), c.mode)
        for f in recipe.files:
            src = self.repo_root / f.src
            if not src.is_file():
                raise RecipeError(f"{recipe.source}: file {f.src}: not found in {self.repo_root}")
            t.file(f.dest, src.read_bytes(), f.mode)
        for dest, target in recipe.symlinks:
            t.symlink(dest, target)
        if recipe.busybox_links:
            self._busybox_links(t, recipe)
        modules = self._modules(t, recipe, kernel)
        return t, modules

    def _busybox_links(self, t: Tree, recipe: Recipe) -> None:
        dest = recipe.busybox_links or ""
        src = next((c for c in recipe.copies if c.dest == dest), None)
        if src is None:
            raise RecipeError(f"{recipe.source}: busybox_links: no [[copy]] with dest {dest}")
        binary = self.package(src.package).path(src.path)
        out = proc.run([str(binary), "--list-full"], timeout=30).stdout
        for applet in out.split():
            if applet not in t:
                t.symlink(applet, "/" + dest.strip("/"))

    def _modules(self, t: Tree, recipe: Recipe, kernel: Kernel) -> list[str]:
        if not recipe.modules:
            return []
        try:
            paths, builtin = kernel.index.closure(list(recipe.modules))
        except kmod.ModuleError as exc:
            raise RecipeError(f"{recipe.source}: modules: {exc} ({kernel.release})") from None
        base = f"lib/modules/{kernel.release}"
        for p in paths:
            t.file(f"{base}/{p}", (kernel.moddir / p).read_bytes())
        t.file(f"{base}/modules.dep", kernel.index.subset_dep(paths).encode())
        t.file(f"{base}/modules.alias", kernel.index.subset_alias(paths).encode())
        t.file(f"{base}/modules.softdep", kernel.index.subset_softdep(paths).encode())
        builtin_file = kernel.moddir / "modules.builtin"
        if builtin_file.is_file():
            t.file(f"{base}/modules.builtin", builtin_file.read_bytes())
        self.say(f"  {len(paths)} kernel modules for {', '.join(recipe.modules)}"
                 + (f" (built in: {', '.join(builtin)})" if builtin else ""))
        return sorted(kmod.module_name(p) for p in paths)

    # -- building ---------------------------------------------------------------

    def build(self, name: str) -> BuildResult:
        if name in self._results:
            return self._results[name]
        recipe = find(self.recipes_dir, name)
        self.say(f"image {name}: {recipe.description or recipe.kind}")
        if recipe.kind == "initramfs":
            res = self._build_initramfs(recipe)
        elif recipe.kind == "debian":
            res = build_debian(self, recipe)
        else:
            res = self._build_rootfs(recipe)
        state = "up to date (cached)" if res.cached else "built"
        self.say(f"image {name} {res.version}: {state} -> {res.path}")
        self._results[name] = res
        return res

    def _cached(self, name: str, version: str) -> BuildResult | None:
        return stored_result(self.store, name, version)

    def _base_manifest(self, recipe: Recipe, version: str, kernel: Kernel,
                       modules: list[str]) -> dict[str, Any]:
        pkgs = {kernel.package.name: kernel.package.version}
        pkgs.update({p: self.package(p).version for p in recipe.packages})
        return {
            "format": MANIFEST_FORMAT, "image": recipe.name, "version": version,
            "kind": recipe.kind, "kernel_release": kernel.release,
            "packages": dict(sorted(pkgs.items())), "modules": modules,
        }

    def _build_initramfs(self, recipe: Recipe) -> BuildResult:
        kernel = self.kernel(recipe.kernel)
        tree, modules = self.tree(recipe, kernel)
        version = image_version(recipe, hashlib.sha256(kernel.vmlinuz).hexdigest(),
                           tree.fingerprint())
        hit = self._cached(recipe.name, version)
        if hit:
            return hit
        self.say(f"  packing initramfs ({len(tree.nodes)} entries)")
        artifacts = {layout.KERNEL: kernel.vmlinuz, layout.INITRD: gzip_bytes(tree.to_cpio())}
        m = self._base_manifest(recipe, version, kernel, modules)
        m["files"] = file_entries(artifacts)
        m["initramfs"] = tree.listing()
        path = self.store.publish(recipe.name, version, artifacts, m)
        return BuildResult(recipe.name, version, path, False, m)

    def _build_rootfs(self, recipe: Recipe) -> BuildResult:
        assert recipe.boot is not None
        boot = self.build(recipe.boot)
        kernel = self.kernel(recipe.kernel)
        tree, modules = self.tree(recipe, kernel)
        version = image_version(recipe, boot.version, tree.fingerprint())
        hit = self._cached(recipe.name, version)
        if hit:
            return hit
        self.say(f"  packing root fs ({len(tree.nodes)} entries)")
        artifacts = {
            layout.KERNEL: (boot.path / layout.KERNEL).read_bytes(),
            layout.INITRD: (boot.path / layout.INITRD).read_bytes(),
            layout.ROOTFS: gzip_bytes(tree.to_tar()),
        }
        m = self._base_manifest(recipe, version, kernel, modules)
        m["boot"] = {"image": boot.image, "version": boot.version}
        m["files"] = file_entries(artifacts)
        m["rootfs"] = tree.listing()
        path = self.store.publish(recipe.name, version, artifacts, m)
        return BuildResult(recipe.name, version, path, False, m)


def default_recipes_dir() -> Path:
    """images/ beside the provision package (a source checkout or editable install),
    else the copy `make install` puts in <prefix>/share/dsas/images."""
    import sys

    checkout = Path(__file__).resolve().parents[2] / "images"
    installed = Path(sys.prefix) / "share" / "dsas" / "images"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


def has_recipe(name: str, recipes_dir: Path | None = None) -> bool:
    return ((recipes_dir or default_recipes_dir()) / name / "recipe.toml").is_file()
