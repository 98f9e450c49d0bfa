"""The mirror of the master pair (issue 18): the inventory, the boot tree, the image store
and dsas-push's known_hosts, copied from the active master to the standby over the pair's
channel and verified by sha256. A stale mirror is reported, never served silently.

Why the channel and not rsync over SSH: the channel is already there, between the two
masters' own addresses only, every frame authenticated with the pair key and ordered
(``wire``); rsync would need a second trust between the masters (an SSH key of each in
the other's authorized_keys, each host key in the other's known_hosts) for the same
two ends, and a second thing that can break. The cost is speed (JSON frames, base64,
one 1 MiB chunk per round trip): 9 MiB/s on the 2-core lab machine at load 13 (``python
-m bench master --only-mirror``), enough for a boot tree and image versions that change
a few times a day.

How. The standby asks the active for a kind's *manifest* (every file: size, mode,
sha256; every symlink: its target) once per ``MIRROR_EVERY`` s, compares it with its own
and fetches what differs in ``CHUNK``-byte pieces into a temporary file beside the
target; the file is renamed into place only when its sha256 is the manifest's. Files the
active does not have are removed. Then the standby's manifest is made again: the kind is
*in sync* (``last_sync``) only when its digest is the active's. The active hashes a file
again only when its size, mtime or inode changed, so a poll costs a stat per file.

Stale. A standby's kind is stale when it was never mirrored, when the last try failed
(the peer does not answer, a file did not verify) or when the last sync is older than
``STALE_AFTER`` s. A master that becomes active with a stale kind logs it as an error and
keeps reporting it (``stale_served``) until its peer has mirrored it again: it serves
what it has (a boot tree a few changes old beats no boot), but never silently.
`dsas master status` shows each kind's last sync and exits 1 on a stale mirror.

Nothing is lost by it: a file the mirror would remove or replace that changed on this
master after the kind's last sync (a version published here while it was cut off and
active) is moved to ``<state-dir>/mirror-displaced/<kind>/`` first, with a warning.

Only the standby writes, only below the paths it was started with, only names the
manifest gave that are relative and stay inside the tree (no ``..``, no absolute
symlink targets), so a peer cannot write elsewhere even with the key.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..observability.metrics import Metrics
from . import wire
from .members import Me

log = logging.getLogger(__name__)

MIRROR_EVERY = 1.0  # s between two looks at the active's manifests
STALE_AFTER = 10.0  # s after the last sync a standby's mirror is called stale
TAKEOVER_FRESH = 3.0  # s: a mirror verified longer than this before a takeover is stale
CHUNK = 1 << 20  # bytes per fetched piece
CALL_TIMEOUT = 10.0  # s for one manifest or chunk
TMP_PREFIX = ".dsas-mirror-"
SINGLE = "file"  # the manifest's name of a one-file kind's file


class MirrorError(ValueError):
    """A kind could not be mirrored (one line: why)."""


@dataclass(frozen=True)
class Tree:
    """One kind of mirrored state: a directory (minus ``exclude``, top-level names), or
    one file (``single``)."""

    kind: str
    path: Path
    single: bool = False
    exclude: tuple[str, ...] = ()

    def local(self, rel: str) -> Path:
        return self.path if self.single else self.path / rel


def trees(inventory: Path, boot_root: Path, state_dir: Path) -> list[Tree]:
    """What a master mirrors, in the order it is fetched."""
    from ..layout import IMAGES_DIR, image_store
    return [Tree("inventory", inventory, single=True),
            Tree("known_hosts", state_dir / "ssh" / "known_hosts", single=True),
            Tree("boot", boot_root, exclude=(IMAGES_DIR,)),
            Tree("images", image_store(boot_root))]


class Hasher:
    """sha256 of files, again only when size, mtime or inode changed."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path, st: os.stat_result) -> str:
        mark = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            hit = self._cache.get(str(path))
        if hit is not None and hit[0] == mark:
            return hit[1]
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        with self._lock:
            self._cache[str(path)] = (mark, h.hexdigest())
        return h.hexdigest()


def manifest(tree: Tree, hasher: Hasher) -> dict[str, Any]:
    """{"files": {rel: [size, mode, sha256]}, "links": {rel: target}, "sha256": digest}."""
    files: dict[str, list[Any]] = {}
    links: dict[str, str] = {}
    if tree.single:
        _entry(tree.path, SINGLE, hasher, files, links)
    elif tree.path.is_dir():
        for top, dirs, names in os.walk(tree.path):
            here = Path(top)
            rel_top = here.relative_to(tree.path)
            if rel_top == Path("."):
                dirs[:] = [d for d in dirs if d not in tree.exclude]
                names = [n for n in names if n not in tree.exclude]
            for d in list(dirs):  # a symlink to a directory is a link, not a tree
                if (here / d).is_symlink():
                    dirs.remove(d)
                    names.append(d)
            for n in names:
                if not n.startswith(TMP_PREFIX):
                    _entry(here / n, (rel_top / n).as_posix(), hasher, files, links)
    return {"files": files, "links": links, "sha256": digest(files, links)}


def _entry(path: Path, rel: str, hasher: Hasher, files: dict[str, list[Any]],
           links: dict[str, str]) -> None:
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            links[rel] = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            files[rel] = [st.st_size, stat.S_IMODE(st.st_mode), hasher.sha256(path, st)]
    except FileNotFoundError:  # removed while we looked: the next poll sees it
        pass


def digest(files: dict[str, list[Any]], links: dict[str, str]) -> str:
    doc = {"files": {k: [v[0], v[2]] for k, v in files.items()}, "links": links}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()) \
        .hexdigest()


def _checked_rel(tree: Tree, rel: str) -> str:
    """A name from the peer's manifest, refused unless it stays inside the tree."""
    if tree.single:
        if rel != SINGLE:
            raise MirrorError(f"{tree.kind}: unexpected name {rel!r}")
        return rel
    p = PurePosixPath(rel)
    bad_part = any(part in ("", ".", "..") or part.startswith(TMP_PREFIX) for part in p.parts)
    if not rel or p.as_posix() != rel or p.is_absolute() or bad_part \
            or p.parts[0] in tree.exclude:
        raise MirrorError(f"{tree.kind}: refused the name {rel!r}")
    return rel


def _checked_target(tree: Tree, rel: str, target: str) -> str:
    p = PurePosixPath(target)
    if tree.single or p.is_absolute() or not target:
        raise MirrorError(f"{tree.kind}: refused the symlink {rel!r} -> {target!r}")
    depth = len(PurePosixPath(rel).parts) - 1
    for part in p.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            raise MirrorError(f"{tree.kind}: refused the symlink {rel!r} -> {target!r}")
    return target


class Channel:
    """One connection to the peer's channel for the mirror (its own: a large fetch never
    holds up the lease link's heartbeats or a DHCP ACK)."""

    def __init__(self, me: Me, key: bytes) -> None:
        self.me = me
        self._key = key
        self._sock: socket.socket | None = None
        self._codec: wire.Codec | None = None

    def call(self, mtype: int, body: Any, timeout: float = CALL_TIMEOUT) -> tuple[int, Any]:
        if self._codec is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(min(timeout, 2.0))
                sock.bind((str(self.me.address), 0))
                sock.connect((str(self.me.peer_address), self.me.pair.port))
                sock.settimeout(timeout)
                self._codec = wire.client_handshake(sock, self._key)
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        assert self._sock is not None
        try:
            self._sock.settimeout(timeout)
            self._sock.sendall(self._codec.seal(mtype, body))
            return self._codec.open(wire.read_frame(self._sock))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._codec = None


class Mirror:
    """Both ends of the mirror: ``handle`` answers the peer's requests (the active's
    side), ``sync`` pulls from the peer (the standby's side, a thread of its own)."""

    def __init__(self, me: Me, key: bytes, kinds: list[Tree], metrics: Metrics,
                 is_active: Callable[[], bool], peer_status: Callable[[], dict[str, Any]],
                 clock: Callable[[], float] = time.time, displaced: Path | None = None,
                 state_file: Path | None = None) -> None:
        self.me = me
        self.displaced = displaced  # where local changes the mirror would undo are kept
        self.state_file = state_file  # each kind's last sync, kept across restarts
        self.kinds = {t.kind: t for t in kinds}
        self.metrics = metrics
        self.is_active = is_active
        self.peer_status = peer_status
        self.clock = clock
        self.hasher = Hasher()
        self.channel = Channel(me, key)
        self.on_changed: Callable[[str], None] = lambda kind: None
        self.state: dict[str, dict[str, Any]] = {
            k: {"last_sync": None, "last_try": None, "error": "never mirrored", "files": 0,
                "bytes": 0, "fetched": 0, "sha256": None, "stale_served": None,
                "had_source": False}
            for k in self.kinds}
        self._load_state()
        self._lock = threading.Lock()  # one sync at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_active = False

    # -- kept across restarts -------------------------------------------------------------
    _KEPT = ("last_sync", "had_source", "stale_served", "files", "bytes", "sha256")

    def _load_state(self) -> None:
        """What the last run knew: a restarted master's mirror is as old as its last
        sync (not "never mirrored"), and a stale one it served stays reported."""
        if self.state_file is None:
            return
        try:
            doc = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return
        for kind, st in self.state.items():
            old = doc.get(kind) if isinstance(doc, dict) else None
            if isinstance(old, dict) and old.get("last_sync"):
                st.update({k: old.get(k, st[k]) for k in self._KEPT})
                st["error"] = None

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        doc = {k: {f: st[f] for f in self._KEPT} for k, st in self.state.items()}
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps(doc))
            tmp.replace(self.state_file)
        except OSError as e:
            log.warning("master pair: cannot keep the mirror's state in %s: %s",
                        self.state_file, e.strerror)

    # -- the active's side ---------------------------------------------------------------
    def handle(self, mtype: int, body: Any) -> tuple[int, Any]:
        tree = self.kinds.get(str(body.get("kind")))
        if tree is None:
            raise ValueError(f"unknown mirror kind {body.get('kind')!r}")
        if mtype == wire.MANIFEST:
            doc = manifest(tree, self.hasher)
            doc["role"] = "active" if self.is_active() else "standby"
            return wire.FILES, doc
        rel = _checked_rel(tree, str(body["path"]))
        path = tree.local(rel)
        offset, length = int(body["offset"]), min(int(body["length"]), CHUNK)
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{tree.kind}: {rel} is not a file here")
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(length)
        except FileNotFoundError:
            return wire.DATA, {"gone": True}
        except OSError as e:
            raise MirrorError(f"{tree.kind}: cannot read {rel}: {e.strerror}") from None
        return wire.DATA, {"data": base64.b64encode(data).decode()}

    # -- the standby's side --------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pair-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=CALL_TIMEOUT + 2)
        self.channel.close()

    def _run(self) -> None:
        while not self._stop.wait(MIRROR_EVERY):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the mirror thread must go on
                log.exception("master pair: mirror tick failed")

    def tick(self) -> None:
        active = self.is_active()
        if active and not self._was_active:
            self._took_over()
        self._was_active = active
        if active:
            self._clear_served()
        else:
            self.sync()

    def sync(self, deadline: float | None = None) -> bool:
        """Pull every kind from the peer if it is the active one; True when all are in
        sync. ``deadline`` (monotonic) bounds a sync at start."""
        with self._lock:
            ok = True
            for kind, tree in self.kinds.items():
                if self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                    return False
                ok = self._sync_kind(kind, tree) and ok
            return ok

    def _sync_kind(self, kind: str, tree: Tree) -> bool:
        st = self.state[kind]
        st["last_try"] = self.clock()
        try:
            changed = self._pull(tree)
        except (OSError, ConnectionError, wire.WireError, MirrorError, ValueError,
                KeyError, TypeError) as e:
            why = f"{type(e).__name__}: {e}" if not isinstance(e, MirrorError) else str(e)
            if st["error"] != why:
                log.warning("master pair: the %s mirror from %s is stale: %s", kind,
                            self.me.peer_name, why)
            st["error"] = why
            self.metrics.inc("dsas_master_mirror_failed_total", kind=kind)
            return False
        if st["error"] is not None:
            log.info("master pair: the %s mirror is in sync with %s (%d files, sha256 %s)",
                     kind, self.me.peer_name, st["files"], str(st["sha256"])[:16])
        st["error"] = None
        st["last_sync"] = self.clock()
        self._save_state()
        if changed:
            self.on_changed(kind)
        return True

    def _pull(self, tree: Tree) -> int:
        """Make the tree the peer's; the number of entries changed. MirrorError when
        the peer is not the active one or the result is not the peer's manifest."""
        want = self._manifest_of_peer(tree)
        have = manifest(tree, self.hasher)
        changed = self._apply(tree, want, have)
        after = manifest(tree, self.hasher)
        if after["sha256"] != want["sha256"]:
            raise MirrorError("the mirror differs from the peer's after the copy")
        st = self.state[tree.kind]
        st["files"] = len(after["files"]) + len(after["links"])
        st["bytes"] = sum(v[0] for v in after["files"].values())
        st["sha256"] = after["sha256"]
        return changed

    def _manifest_of_peer(self, tree: Tree) -> dict[str, Any]:
        mtype, want = self.channel.call(wire.MANIFEST, {"kind": tree.kind})
        if mtype != wire.FILES:
            raise MirrorError("bad reply to a manifest")
        if want.get("role") != "active":
            raise MirrorError(f"{self.me.peer_name} is not the active master")
        self.state[tree.kind]["had_source"] = True
        if digest(want["files"], want["links"]) != want["sha256"]:
            raise MirrorError("the manifest's sha256 does not match it")
        return dict(want)

    def _apply(self, tree: Tree, want: dict[str, Any], have: dict[str, Any]) -> int:
        changed = 0
        for rel, (size, mode, sha) in sorted(want["files"].items()):
            cur = have["files"].get(rel)
            if cur is not None and cur[0] == size and cur[2] == sha:
                if cur[1] != mode:
                    os.chmod(tree.local(_checked_rel(tree, rel)), int(mode) & 0o777)
                continue
            self._fetch(tree, _checked_rel(tree, rel), int(size), int(mode), str(sha))
            changed += 1
        for rel, target in sorted(want["links"].items()):
            if have["links"].get(rel) != target:
                self._link(tree, _checked_rel(tree, rel), _checked_target(tree, rel, target))
                changed += 1
        for rel in sorted(set(have["files"]) | set(have["links"])):
            if rel not in want["files"] and rel not in want["links"]:
                self._displace(tree, rel)
                tree.local(rel).unlink(missing_ok=True)
                changed += 1
        return changed

    def _fetch(self, tree: Tree, rel: str, size: int, mode: int, sha: str) -> None:
        dest = tree.local(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}.{os.getpid()}")
        h = hashlib.sha256()
        try:
            with tmp.open("wb") as f:
                offset = 0
                while offset < size:
                    mtype, body = self.channel.call(wire.CHUNK, {
                        "kind": tree.kind, "path": rel, "offset": offset,
                        "length": min(CHUNK, size - offset)})
                    data = base64.b64decode(body.get("data", "")) if mtype == wire.DATA else b""
                    if not data:
                        raise MirrorError(f"{tree.kind}: {rel} changed on the peer during "
                                          "the copy")
                    f.write(data)
                    h.update(data)
                    offset += len(data)
                f.flush()
                os.fsync(f.fileno())
            if h.hexdigest() != sha:
                raise MirrorError(f"{tree.kind}: {rel} did not verify (sha256 "
                                  f"{h.hexdigest()[:16]}, the manifest says {sha[:16]})")
            os.chmod(tmp, mode & 0o777)
            if dest.is_dir() and not dest.is_symlink():
                raise MirrorError(f"{tree.kind}: {rel} is a directory here")
            self._displace(tree, rel)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        self.state[tree.kind]["fetched"] += size
        self.metrics.inc("dsas_master_mirror_bytes_total", size, kind=tree.kind)

    def _link(self, tree: Tree, rel: str, target: str) -> None:
        dest = tree.local(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        self._displace(tree, rel)
        os.replace(tmp, dest)

    def _displace(self, tree: Tree, rel: str) -> None:
        """A local file the mirror is about to remove or replace: if it changed here
        after this kind's last sync (or there was none yet), it is moved to
        ``displaced/<kind>/<rel>`` instead (an edit or a version published on this
        master while it was cut off and active is kept, not lost)."""
        if self.displaced is None:
            return
        path = tree.local(rel)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        last = self.state[tree.kind]["last_sync"]
        if last is not None and st.st_mtime <= last:
            return
        dest = self.displaced / tree.kind / (path.name if tree.single else rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(dest))
        log.warning("master pair: the mirror replaces %s %s, changed here after the last "
                    "sync: kept as %s", tree.kind, rel if not tree.single else path, dest)
        self.metrics.inc("dsas_master_mirror_displaced_total", kind=tree.kind)

    def retarget(self, me: Me) -> None:
        """Another peer: the next sync asks it (the old connection is closed)."""
        self.me = me
        self.channel.me = me
        self.channel.close()

    # -- takeover -------------------------------------------------------------------------
    def _took_over(self) -> None:
        now = self.clock()
        for kind, st in self.state.items():
            if not st["had_source"]:  # never a mirror of an active peer: the source
                st["stale_served"] = None
                continue
            why = self.stale(kind, now)
            if why is None and now - st["last_sync"] > TAKEOVER_FRESH:
                why = (f"last verified {now - st['last_sync']:.1f} s before the takeover; "
                       "what changed on the peer since is not here")
            st["stale_served"] = why
            if why:
                log.error("master pair: active with a stale %s mirror (%s): serving it, "
                          "and reporting it until %s has mirrored it again", kind, why,
                          self.me.peer_name)
                self.metrics.inc("dsas_master_mirror_stale_served_total", kind=kind)
        self._save_state()

    def _clear_served(self) -> None:
        theirs = self.peer_status().get("mirror") or {}
        for kind, st in self.state.items():
            peer = theirs.get(kind) or {}
            if st["stale_served"] and peer.get("role") == "standby" and not peer.get("stale"):
                log.info("master pair: %s has mirrored our %s again", self.me.peer_name, kind)
                st["stale_served"] = None
                self._save_state()

    def stale(self, kind: str, now: float) -> str | None:
        """Why this (standby's) kind is stale, or None."""
        st = self.state[kind]
        if st["error"]:
            return str(st["error"])
        if st["last_sync"] is None:
            return "never mirrored"
        if now - st["last_sync"] > STALE_AFTER:
            return f"last sync {now - st['last_sync']:.0f} s ago"
        return None

    def status(self) -> dict[str, Any]:
        now = self.clock()
        active = self.is_active()
        out: dict[str, Any] = {}
        for kind, st in self.state.items():
            why = st["stale_served"] if active else self.stale(kind, now)
            out[kind] = {"role": "source" if active else "standby", "stale": bool(why),
                         "why": why, "last_sync": st["last_sync"], "files": st["files"],
                         "bytes": st["bytes"], "sha256": st["sha256"],
                         "fetched": st["fetched"]}
        return out
