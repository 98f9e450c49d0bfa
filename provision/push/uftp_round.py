"""dsas-push's uftp round: whether a push goes by multicast, and the one round of
sessions every node's thread meets in (``multicast.py`` builds the scripts and runs uftp).

Split from ``push.py``: the Pusher asks ``use_uftp`` once per push, makes one
``UftpRound`` for all its targets, and each host thread calls ``UftpRound.stage``
before its rsync pass (which completes the node whatever uftp did).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from . import multicast
from .options import PushOptions
from .prelink import Listing, ListingStore, delta_names
from .progress import Reporter
from .release import NodeLayout
from .remote import NodeState, RemoteError, RemoteNode, first_error, parse_kv
from .targets import Target

log = logging.getLogger("provision.push.push")  # one logger for the whole push


def use_uftp(opts: PushOptions, count: int, has_history: bool) -> bool:
    """Whether this push goes by uftp (multicast.py). Not for dry runs or --checksum
    (uftp's change list comes from size and mtime), nor without a history (the
    change list is against the base release's listing the master kept)."""
    if opts.transfer in ("rsync", "fanout") or opts.dry_run:
        return False
    why = None
    if opts.checksum:
        why = "--checksum compares content: rsync"
    elif not has_history:
        why = "no push history: rsync"
    elif not multicast.available():
        why = "no uftp on this master: rsync"
    elif opts.transfer == "auto" and count < opts.uftp_min_nodes:
        return False
    if why:
        if opts.transfer == "uftp":
            log.warning("--transfer uftp: %s", why)
        return False
    return True


@dataclass
class NodeOutcome:
    """What the uftp round did for one node."""

    digest: str | None  # the sums list's SHA-256 (None: nothing was sent to this node)
    complete: bool  # uftp says it got every file, and no changed file was left to rsync
    why: str = ""
    fixup: bool = False  # the session carried the script that does rsync's pass


@dataclass(frozen=True)
class Staged:
    """What ``UftpRound.stage`` left in a node's incoming tree."""

    complete: bool = False  # every changed file, checked: rsync only sets attributes
    fixed: bool = False  # and the attributes too (multicast.fixup_script): no rsync pass
    commit: tuple[int, str, str] | None = None  # the commit step, run after the fixup


class UftpRound:
    """One push's uftp sessions: every host thread arrives once (with its uftp id when
    its uftpd runs); the last to arrive sends, one session per base release the
    nodes build on, then all go on."""

    def __init__(self, store: ListingStore, mcast: multicast.McastConfig, src: str,
                 listing: Listing, cdir: Path, count: int, dest: str | None = None):
        self.store, self.mcast, self.src = store, mcast, src
        self.dest = dest  # the nodes' staging directory, named in the session (uftp -D)
        self.listing, self.cdir = listing, cdir
        self._lock = threading.Lock()
        self._pending = count
        self._ready: dict[str, tuple[str, str | None]] = {}  # host -> (uid, base)
        self._done = threading.Event()
        self.outcomes: dict[str, NodeOutcome] = {}
        self.bytes = 0  # file data multicast (each byte once per session)

    def arrive(self, host: str, uid: str | None = None, base: str | None = None) -> None:
        with self._lock:
            if uid is not None:
                self._ready[host] = (uid, base)
            self._pending -= 1
            last = self._pending == 0
        if last:
            try:
                self._send()
            except Exception:  # noqa: BLE001 - the nodes go on by rsync
                log.exception("uftp sessions failed: rsync completes every node")
            finally:
                self._done.set()

    def wait(self, host: str, timeout: float = 3600) -> NodeOutcome | None:
        if not self._done.wait(timeout):
            return None
        return self.outcomes.get(host)

    def stage(self, reporter: Reporter, t: Target, node: RemoteNode, lay: NodeLayout,
              rid: str, state: NodeState, kv: dict[str, list[str]],
              commit: str | None = None) -> Staged:
        """Start this node's uftpd, wait for the session, put what it got into the
        incoming tree. ``complete`` when the node got every changed file, checked:
        rsync then only sets attributes; ``fixed`` when the session's fixup script did
        that too, on a tree pre-linked from the session's base: then the verification
        alone decides (and if it fails, the rsync pass repairs the tree). Otherwise
        rsync completes the node after this. ``commit``: the verify-and-switch script,
        run in the same round trip once the fixup did its work (``Staged.commit``)."""
        reporter.phase(t.name, "uftpd")
        try:
            rc, out, err = node.run(multicast.start_script(lay, rid, self.mcast, t.address),
                                    timeout=60)
        except RemoteError:
            self.arrive(t.name)
            raise
        got = parse_kv(out)
        if rc != 0 or "UFTPD" not in got:
            why = "no uftpd on the node" if "NOUFTPD" in got else first_error(out, err)
            log.warning("host=%s uftp: %s: rsync", t.name, why)
            self.arrive(t.name)
            return Staged()
        base = kv["LINKED"][0] if "LINKED" in kv else state.live
        self.arrive(t.name, multicast.client_uid(t.address), base)
        reporter.phase(t.name, "multicast")
        outcome = self.wait(t.name)
        reporter.phase(t.name, "staging")
        digest = outcome.digest if outcome else None
        fixup = bool(outcome and outcome.complete and outcome.fixup and "LINKED" in kv)
        rc, out, err = node.run(multicast.apply_script(lay, rid, digest, fixup,
                                                       commit if fixup else None),
                                timeout=600)
        got = parse_kv(out)
        if outcome is None or rc != 0 or "STAGED" not in got:
            log.warning("host=%s uftp gave nothing usable (%s): rsync", t.name,
                        outcome.why if outcome else "no session")
            return Staged()
        staged, missed = int(got["STAGED"][0]), int(got.get("MISSED", ["0"])[0])
        if outcome.fixup:
            staged -= 1  # the fixup script
        if "NOFIX" in got:
            log.warning("host=%s uftp: the fixup script failed (%s): rsync's pass",
                        t.name, got["NOFIX"][0][:200])
        log.info("host=%s uftp staged %d files, %d missed%s%s", t.name, staged, missed,
                 "" if outcome.complete else f" ({outcome.why})",
                 ", attributes set" if "FIXED" in got else "")
        complete = outcome.complete and missed == 0
        done = None
        if "COMMITRC" in got and got["COMMITRC"][0].isdigit():
            done = (int(got["COMMITRC"][0]), out, err)
        return Staged(complete, complete and fixup and "FIXED" in got, done)

    def _send(self) -> None:
        groups: dict[str | None, list[str]] = {}
        for host, (_uid, base) in sorted(self._ready.items()):
            groups.setdefault(base, []).append(host)
        for i, (base, hosts) in enumerate(groups.items()):
            old = self.store.load(base) if base else None
            fixup = None
            if old is not None:
                changed = delta_names(old, self.listing)
                kinds = [n for n in changed if n in self.listing and self.listing[n][0] == "f"]
                fixup = multicast.fixup_script(old, self.listing, changed)
            else:
                kinds = [n for n, v in self.listing.items() if v[0] == "f"]
            names = multicast.regular_files(self.listing, kinds)
            left = len(kinds) - len(names)  # changed files uftp cannot name: rsync's
            uids = [self._ready[h][0] for h in hosts]
            result, digest = multicast.send(self.mcast, self.src, names, uids, self.cdir,
                                            str(i), dest=self.dest, fixup=fixup)
            self.bytes += result.bytes
            for host, uid in zip(hosts, uids, strict=True):
                why = result.failed.get(uid, "")
                if left and not why:
                    why = f"{left} changed names left to rsync"
                self.outcomes[host] = NodeOutcome(digest, not why, why, fixup is not None)
