"""When the incoming release may start as hard links of an older one (``cp -al``).

Why: rsync's ``--link-dest`` opens every path component by component (its
symlink-race hardening), about 17 system calls per file: for a 5,000-file site
that is ~0.3 s of a node's CPU per push, more than everything else together.
``cp -al`` of the previous release on the node, then rsync into it without
``--link-dest``, does the same job for ~0.03 s: unchanged files are already
there, changed ones are written to a new file and renamed over their link (the
old release keeps its inode).

The one case where that is not the same: a file whose content rsync considers
unchanged but whose attributes differ (mode, owner, group; with ``--checksum``
also the mtime; for a symlink its times or owner). rsync would change those
attributes in place, on the inode the older release (maybe the live one)
shares. So the master keeps each release's attribute listing (made by rsync
itself, with the push's excludes) and pre-links only from a release whose
listing it has and against which no such change exists; otherwise it falls
back to ``--link-dest``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import proc
from .release import is_release_id

log = logging.getLogger(__name__)

# One line per entry: itemize (its 2nd letter is the kind: f, d, L, D, S), perms, uid,
# gid, size, mtime | name | link target (rsync's %L: " -> target").
OUT_FORMAT = "%i %B %U %G %l %M|%n|%L"
KEEP_LISTINGS = 20

# name -> (kind, perms, uid, gid, size, mtime, link)
Listing = dict[str, tuple[str, str, str, str, str, str, str]]


def attr_listing(src: str, excludes: Sequence[str] = (), timeout: float = 600) -> Listing:
    """What rsync would create from ``src``, with the attributes it compares and sets."""
    with tempfile.TemporaryDirectory(prefix="dsas-empty-") as empty:
        argv = ["rsync", "-a", "--dry-run", f"--out-format={OUT_FORMAT}",
                *[f"--exclude={p}" for p in excludes], src.rstrip("/") + "/", empty + "/"]
        res = proc.run(argv, timeout=timeout, check=False,
                       env={**os.environ, "TZ": "UTC", "LC_ALL": "C"})
    if res.returncode != 0:
        raise OSError(f"cannot list {src}: {res.why()}")
    return with_nanoseconds(src, parse_listing(res.stdout))


def with_nanoseconds(src: str, listing: Listing) -> Listing:
    """rsync prints mtimes to the second; add the nanoseconds, so that a file
    rewritten within the second with the same size still counts as changed
    (``delta_names`` lists it and the transfer, ``--modify-window=-1``, sends it)."""
    out: Listing = {}
    for name, (kind, perms, uid, gid, size, mtime, link) in listing.items():
        try:
            ns = os.lstat(os.path.join(src, name)).st_mtime_ns % 1_000_000_000
            mtime = f"{mtime}.{ns:09d}"
        except OSError:
            pass  # gone meanwhile: rsync will say so
        out[name] = (kind, perms, uid, gid, size, mtime, link)
    return out


def parse_listing(text: str) -> Listing:
    """A listing from ``OUT_FORMAT`` lines. A name may hold "|": the head has none,
    a non-link's line ends with the empty target, a link's target starts " -> "."""
    out: Listing = {}
    for line in text.splitlines():
        head, sep, rest = line.partition("|")
        fields = head.split()
        if not sep or len(fields) != 6 or len(fields[0]) < 2:
            continue
        item, perms, uid, gid, size, mtime = fields
        if item[1] == "L":
            name, sep2, target = rest.partition("| -> ")
            link = sep2[1:] + target
        else:
            name, sep2, link = rest[:-1], rest[-1:], ""
        if sep2.startswith("|"):
            out[name] = (item[1], perms, uid, gid, size, mtime, link)
    return out


def unsafe_to_prelink(old: Listing, new: Listing, checksum: bool) -> list[str]:
    """Entries rsync would change in place if the new tree were hard links of ``old``."""
    bad = []
    for name, (kind, perms, uid, gid, size, mtime, link) in new.items():
        was = old.get(name)
        if was is None or kind == "d":
            continue  # new, or a directory (cp -al makes new directories)
        o_kind, o_perms, o_uid, o_gid, o_size, o_mtime, o_link = was
        if o_kind != kind or o_size != size or o_link != link:
            continue  # another kind, size or target: rsync makes a new file
        attrs, o_attrs = (perms, uid, gid, mtime), (o_perms, o_uid, o_gid, o_mtime)
        if kind != "f":  # symlinks, devices, specials: any attribute is set in place
            if attrs != o_attrs:
                bad.append(name)
            continue
        same_content = mtime == o_mtime or checksum  # with -c equal content may differ in mtime
        if same_content and attrs != o_attrs:
            bad.append(name)
    return bad


def delta_names(old: Listing, new: Listing) -> list[str]:
    """What rsync must visit to turn a copy of ``old`` into ``new`` (``--files-from``).

    New entries and entries whose kind, attributes, size, mtime or link target
    differ; deleted entries whose parent is still a directory (rsync's
    ``--delete-missing-args`` removes them, a directory with its contents; below
    a directory that became a file, ``--force`` removes them with it); and the
    root, whose mtime moves whenever a top-level entry comes or goes. Sorted.
    """
    def dirname(name: str) -> str:
        return name.rstrip("/").rpartition("/")[0]

    new_dirs = {n.rstrip("/") for n, v in new.items() if v[0] == "d"}
    out = {"."}
    for name, entry in new.items():
        was = old.get(name)
        if was is None or _differs(was, entry):
            out.add(name.rstrip("/"))
    for name in old:
        key = name.rstrip("/")
        if key not in new and key + "/" not in new:  # gone, not just another kind
            parent = dirname(name)
            if parent == "" or parent in new_dirs:
                out.add(key)
    return sorted(out)


def _differs(old: tuple[str, ...], new: tuple[str, ...]) -> bool:
    if new[0] == "d":  # a directory's size depends on its file system
        return old[0] != "d" or old[1:4] + old[5:] != new[1:4] + new[5:]
    return old != new


class ListingStore:
    """Each pushed release's listing, on the master: ``<state-dir>/push/listings/<id>``."""

    def __init__(self, directory: Path):
        self.dir = directory

    def save(self, rid: str, listing: Listing) -> None:
        if not is_release_id(rid):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{rid}.tmp"
        tmp.write_text("".join(f"?{v[0]} {' '.join(v[1:6])}|{k}|{v[6]}\n"
                               for k, v in listing.items()))
        os.replace(tmp, self.dir / rid)
        self._prune()

    def load(self, rid: str | None) -> Listing | None:
        if rid is None or not is_release_id(rid):
            return None
        try:
            return parse_listing((self.dir / rid).read_text())
        except OSError:
            return None

    def _prune(self) -> None:
        names = sorted(p.name for p in self.dir.iterdir() if is_release_id(p.name))
        for name in names[:-KEEP_LISTINGS]:
            (self.dir / name).unlink(missing_ok=True)


def base_listing(store: ListingStore, candidate: str | None, new: Listing,
                 checksum: bool) -> Listing | None:
    """``candidate``'s listing if the new release may be pre-linked from it, else None."""
    old = store.load(candidate)
    if old is None:
        return None
    bad = unsafe_to_prelink(old, new, checksum)
    if bad:
        log.info("release %s: %d entries change only attributes (%s...): --link-dest instead "
                 "of pre-linking", candidate, len(bad), bad[0][:80])
        return None
    return old
