"""Release ids, the on-node layout and the tree manifest.

Layout on a node, for a live path ``TO`` (say ``/srv/site``)::

    /srv/site                  symlink -> site.releases/<id>   (what is live)
    /srv/site.releases/<id>    one complete, verified release per push
    /srv/site.releases/.incoming-<id>   a push in progress (never live)
    /srv/site.releases/.partial-<id>    what an interrupted push left, reused by its retry

The releases sit beside the live path (same file system: the switch is one
rename and ``--link-dest`` can hard-link unchanged files). Keeping them in
``<name>.releases`` rather than a shared ``releases/`` lets two trees live in
the same directory.

The manifest is rsync's own listing of a tree (``--list-only``: type and mode,
size, mtime to the second, path, symlink target), in UTC, with directory sizes
zeroed (they depend on the file system) and sorted. The same pipeline runs on
the master over the source (with the push's excludes) and on the node over
the received tree; the push is verified when the line counts and the SHA-256
of the two listings agree.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import secrets
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

RELEASE_RE = re.compile(r"^\d{8}-\d{6}-\d{3}-[0-9a-f]{4}$")


def new_release_id(now: dt.datetime | None = None) -> str:
    """Sortable by time (UTC, milliseconds) plus 16 random bits against collisions."""
    now = now or dt.datetime.now(dt.UTC)
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03d}"
    return f"{stamp}-{secrets.token_hex(2)}"


def is_release_id(name: str) -> bool:
    return bool(RELEASE_RE.match(name))


@dataclass(frozen=True)
class NodeLayout:
    """Paths on a node for one live path."""

    to: str

    def __post_init__(self) -> None:
        if not self.to.startswith("/") or self.to.rstrip("/") in ("", "/"):
            raise ValueError(f"--to must be an absolute path below /, not {self.to!r}")

    @property
    def live(self) -> str:
        return posixpath.normpath(self.to)

    @property
    def releases(self) -> str:
        return self.live + ".releases"

    @property
    def link_prefix(self) -> str:
        """The live symlink's target is relative: ``<name>.releases/<id>``."""
        return posixpath.basename(self.releases)

    def release(self, rid: str) -> str:
        return f"{self.releases}/{rid}"

    def incoming(self, rid: str) -> str:
        return f"{self.releases}/.incoming-{rid}"


def manifest_pipeline(directory: str, excludes: Sequence[str] = ()) -> str:
    """A POSIX shell snippet printing ``<entries> <sha256>`` for the tree at ``directory``."""
    excl = " ".join(shlex.quote(f"--exclude={p}") for p in excludes)
    d = shlex.quote(directory.rstrip("/") + "/")
    return (
        "m=$(mktemp) && "
        f"TZ=UTC LC_ALL=C rsync -a --list-only --no-h {excl} {d}"
        " | sed -E 's/^(d[^ ]*) +[0-9]+ /\\1 0 /' | LC_ALL=C sort > \"$m\"; "
        'echo "$(wc -l < "$m") $(sha256sum < "$m" | cut -d" " -f1)"; rm -f "$m"'
    )


@dataclass(frozen=True)
class Manifest:
    entries: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> Manifest:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 64:
            raise ManifestError(f"unreadable manifest summary {text.strip()[:80]!r}")
        return cls(int(parts[0]), parts[1])


def local_manifest(src: str, excludes: Sequence[str] = ()) -> Manifest:
    """The manifest of the source tree on the master, by the same pipeline the nodes run."""
    proc = subprocess.run(["sh", "-c", manifest_pipeline(src, excludes)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0 or proc.stderr.strip():
        raise ManifestError(f"cannot list {src}: {proc.stderr.strip()[:200]}")
    return Manifest.parse(proc.stdout)


class ManifestError(Exception):
    pass
