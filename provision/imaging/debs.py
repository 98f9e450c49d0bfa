"""Files from Debian packages, and only from Debian packages.

A package is taken from this machine when dpkg has it installed (its files are
read from their installed paths), otherwise it is fetched with `apt-get
download` into the cache and unpacked there with `dpkg-deb -x`. Either way the
caller gets the package's exact version and a way to read its files.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..errors import DsasError

log = logging.getLogger(__name__)


class PackageError(DsasError, RuntimeError):
    """A Debian package that cannot be found, fetched or read."""


@dataclass(frozen=True)
class Package:
    """A Debian package, installed or unpacked: where its files are."""

    name: str
    version: str
    root: Path  # "/" for installed packages, the unpack dir for downloaded ones
    files: frozenset[str]  # absolute paths as the package ships them
    origin: str  # "installed" | "downloaded"

    def path(self, shipped: str) -> Path:
        """Where to read `shipped` (an absolute path in the package) from."""
        if shipped not in self.files:
            raise PackageError(f"{self.name} {self.version} does not ship {shipped}")
        return self.root / shipped.lstrip("/")

    def read(self, shipped: str) -> bytes:
        return self.path(shipped).read_bytes()


def installed_version(name: str) -> str | None:
    res = proc.run(["dpkg-query", "-W", "-f=${Status}\t${Version}", name], timeout=60,
                   check=False)  # not known to dpkg: exit 1
    if res.returncode != 0:
        return None
    status, _, version = res.stdout.partition("\t")
    return version if status.endswith("install ok installed") else None


def depends(name: str) -> list[str]:
    """Package names `name` depends on (first alternative of each), installed or not."""
    out = proc.run(["apt-cache", "depends", "--important", name], timeout=300).stdout
    deps = re.findall(r"^\s+\|?Depends: (\S+)", out, re.M)
    return [d for d in deps if not d.startswith("<")]


def kernel_package(meta: str) -> str:
    """The real linux-image-<abi> package behind a meta package like linux-image-amd64.

    An ABI package (linux-image-6.1.0-56-amd64) is returned as it is. For an
    installed meta package its installed dependency wins over apt's candidate.
    """
    if re.match(r"linux-image-\d", meta):
        return meta
    if installed_version(meta) is not None:
        deps = proc.run(["dpkg-query", "-W", "-f=${Depends}", meta], timeout=300).stdout
        names = [d.strip().split()[0] for d in deps.split(",") if d.strip()]
    else:
        names = depends(meta)
    for dep in names:
        if dep.startswith("linux-image-") and dep != meta:
            return str(dep)
    raise PackageError(f"{meta}: no linux-image-* dependency")


def get(name: str, cache: Path) -> Package:
    version = installed_version(name)
    if version is not None:
        files = proc.run(["dpkg-query", "-L", name], timeout=300).stdout.split("\n")
        return Package(name, version, Path("/"), frozenset(f for f in files if f), "installed")
    return _download(name, cache)


def _download(name: str, cache: Path) -> Package:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s with apt-get download", name)
    proc.run(["apt-get", "download", "-q", name], timeout=300, cwd=debs)
    found = sorted(debs.glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise PackageError(f"apt-get download {name}: no .deb appeared")
    deb = found[-1]
    version = proc.run(["dpkg-deb", "-f", str(deb), "Version"], timeout=300).stdout.strip()
    root = cache / "unpacked" / f"{name}_{version}"
    if not (root / ".complete").exists():
        root.mkdir(parents=True, exist_ok=True)
        proc.run(["dpkg-deb", "-x", str(deb), str(root)], timeout=300)
        (root / ".complete").write_text(version + "\n")
    listing = proc.run(["dpkg-deb", "-c", str(deb)], timeout=300).stdout
    files = set()
    for line in listing.splitlines():
        path = line.split(maxsplit=5)[-1].split(" -> ")[0]
        files.add("/" + path.lstrip("./"))
    return Package(name, version, root, frozenset(files), "downloaded")
