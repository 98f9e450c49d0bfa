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

The manifest is a listing of a tree (type and mode, size, mtime to the second,
path, symlink target; directory sizes zeroed: they depend on the file system),
sorted, as GNU find prints it. A node runs it over the received tree (four
processes: find, sort, wc, sha256sum); the master makes the same bytes with
the same find over the source, keeping the names rsync sends when the push
has excludes. The push is verified when the line counts and the SHA-256 of the
two listings agree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import posixpath
import re
import secrets
import shlex
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import proc
from ..errors import DsasError

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


# One line per entry, as GNU find prints it: mode string, size (0 for a directory:
# its size depends on the file system), mtime in seconds, path relative to the
# tree (empty for its root), "|", symlink target. Owners are left out, as rsync
# maps them by name.
_ENTRY = "%M %s %Ts %P|%l"
_DIR = "%M 0 %Ts %P|"


def manifest_pipeline(directory: str, scratch: str) -> str:
    """A POSIX shell snippet printing ``<entries> <sha256>`` for the tree at ``directory``.

    Four processes (find, sort, wc, sha256sum); ``scratch`` is a file it may
    use and removes. ``TZ`` is set because glibc otherwise reads /etc/localtime
    for every ``%T`` (the walk takes four times as long)."""
    d, t = shlex.quote(directory.rstrip("/") + "/"), shlex.quote(scratch)
    return (
        f"TZ=UTC find {d} \\( -type d -printf '{_DIR}\\n' \\) -o -printf '{_ENTRY}\\n'"
        f" | LC_ALL=C sort > {t} && n=$(wc -l < {t}) && set -- $(sha256sum < {t})"
        f' && echo "$n $1"; rm -f {t}'
    )


def local_manifest(src: str, excludes: Sequence[str] = (),
                   sent: Iterable[str] | None = None) -> Manifest:
    """The manifest of the source tree on the master: what ``manifest_pipeline`` will
    print on a node for the tree rsync makes of it (with the push's excludes).
    ``sent``: the names rsync sends with those excludes, if the caller has them."""
    argv = ["find", src.rstrip("/") + "/", "(", "-type", "d", "-printf", f"%P\\0{_DIR}\\n\\0",
            ")", "-o", "-printf", f"%P\\0{_ENTRY}\\n\\0"]
    # TZ set: else glibc looks at /etc/localtime for every %T (4x the time of the walk)
    res = proc.run(argv, timeout=600, text=False, check=False, env={**os.environ, "TZ": "UTC"})
    if res.returncode != 0 or res.stderr.strip():
        raise ManifestError(f"cannot list {src}: {res.why()}")
    fields = res.stdout.split(b"\0")
    pairs = zip(fields[0::2], fields[1::2], strict=False)
    if excludes:
        names = _sent_names(src, excludes) if sent is None else sent
        keep = {os.fsencode(n.rstrip("/")) for n in names} | {b""}
        lines = b"".join(line for name, line in pairs if name in keep)
    else:
        lines = b"".join(line for _, line in pairs)
    rows = sorted(lines.split(b"\n")[:-1])
    digest = hashlib.sha256(b"".join(r + b"\n" for r in rows)).hexdigest()
    return Manifest(len(rows), digest)


def _sent_names(src: str, excludes: Sequence[str]) -> list[str]:
    """The names rsync sends from ``src`` with ``excludes`` (its own dry run)."""
    with tempfile.TemporaryDirectory(prefix="dsas-empty-") as empty:
        argv = ["rsync", "-a", "--dry-run", "--out-format=%n",
                *[f"--exclude={p}" for p in excludes], src.rstrip("/") + "/", empty + "/"]
        res = proc.run(argv, timeout=600, text=False, check=False)
    if res.returncode != 0:
        raise ManifestError(f"cannot list {src}: {res.why()}")
    return [os.fsdecode(n) for n in res.stdout.split(b"\n") if n]


@dataclass(frozen=True)
class Manifest:
    """A tree's manifest summary: its entry count and digest."""

    entries: int
    digest: str

    @classmethod
    def parse(cls, text: str) -> Manifest:
        parts = text.split()
        if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 64:
            raise ManifestError(f"unreadable manifest summary {text.strip()[:80]!r}")
        return cls(int(parts[0]), parts[1])


class ManifestError(DsasError):
    """A tree or a node's manifest that cannot be listed or read."""
