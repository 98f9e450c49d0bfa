"""dsas-push: deploy a tree from the master to many nodes, atomically per host.

Per host: read its state, prepare ``<to>.releases/.incoming-<id>``, rsync over
ssh with ``--link-dest`` against the live release, verify the received tree
against the master's manifest on the node, rename it into ``<to>.releases/<id>``,
switch the live symlink by rename, run ``--then``, prune to ``--keep``. Any
failure before the switch leaves the live release as it was. Hosts run in
parallel, bounded by ``--parallel``; one host's failure never stops the others.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import proc
from ..sshtrust.sshconf import SshConfig
from ..state.pushes import History, HostResult
from . import fanout, multicast, tunnel
from .options import (  # re-exported: the CLI and the tests import them from here
    DEFAULT_KEEP,  # noqa: F401
    DEFAULT_TO,  # noqa: F401
    PushOptions,
    RunOutcome,
    default_parallel,
)
from .prelink import Listing, ListingStore, attr_listing, base_listing, delta_names
from .progress import PlainReporter, Reporter
from .release import Manifest, NodeLayout, local_manifest, new_release_id
from .remote import (
    NodeState,
    RemoteError,
    RemoteNode,
    abort_script,
    commit_script,
    first_error,
    parse_kv,
    switch_script,
    then_script,
    to_prune,
)
from .targets import Target
from .transfer import explain, remote_dest, rsync_argv, run_rsync
from .uftp_round import Staged, UftpRound, make_agents, use_uftp

log = logging.getLogger(__name__)

PRELINK_CANDIDATES = 3  # recent releases offered to the nodes as pre-link bases


class _Failed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Mismatch(_Failed):
    """The received tree is not the master's (the incoming tree is kept)."""


@contextmanager
def control_dir() -> Iterator[Path]:
    """A short private directory for ssh ControlMaster sockets (sun_path is 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="dsas-cm-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Pusher:
    """Pushes releases to targets in parallel, atomically per host, and records them."""

    def __init__(self, ssh: SshConfig, history: History | None = None,
                 reporter: Reporter | None = None):
        self.ssh = ssh
        self.history = history
        self.reporter: Reporter = reporter or PlainReporter()
        # Why rsync cannot ride the paramiko connections here (None: it can); push() asks.
        self._no_tunnel: str | None = None
        self._ssh_used: set[str] = set()  # hosts whose rsync went through OpenSSH
        # Per pre-link base: the names that differ from it, NUL-separated, in a file
        # (rsync --files-from): a node linked from that base visits only those.
        self._deltas: dict[str, list[str]] = {}
        self._delta_files: dict[str, str] = {}
        self._round: UftpRound | None = None
        self._tree: fanout.Tree | None = None  # --transfer fanout: who feeds whom
        self._key: fanout.PushKey | None = None  # the push's key between nodes
        # One connection per fan-out parent, shared by its children's relay commands
        # (one login on the master per parent, not per child). Each parent has its own
        # lock, held while its connection is made; _peers_lock only guards the dict.
        self._peers: dict[str, tuple[RemoteNode, threading.Lock]] = {}
        self._peers_lock = threading.Lock()

    # -- the fan-out ---------------------------------------------------------

    def _fan_out(self, targets: list[Target], parallel: int, title: str,
                 work: Callable[[Target], HostResult]) -> list[HostResult]:
        self.reporter.begin([t.name for t in targets], title)

        def one(t: Target) -> HostResult:
            t0 = time.monotonic()
            try:
                res = work(t)
            except Exception as e:  # noqa: BLE001 - one host's bug must not stop the others
                log.exception("host=%s unexpected error", t.name)
                res = HostResult(t.name, False, reason=f"internal error: {e}")
            res.seconds = time.monotonic() - t0
            self.reporter.done(res)
            return res

        workers = max(1, min(parallel or default_parallel(), len(targets)))
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push") as pool:
                results = list(pool.map(one, targets))
        finally:
            self.reporter.end()
        return results

    # -- push ----------------------------------------------------------------

    def push(self, targets: list[Target], opts: PushOptions, release: str | None = None,
             action: str = "push") -> RunOutcome:
        lay = NodeLayout(opts.to)
        listing = self._listing(opts)
        # rsync's listing, when made, gives the names the excludes leave (no second dry run)
        manifest = local_manifest(opts.src, opts.excludes,
                                  sent=listing.keys() if listing is not None else None)
        rid = release or new_release_id()
        run_id = None
        if self.history is not None and not opts.dry_run:
            run_id = self.history.start(action, lay.live, [t.name for t in targets],
                                        src=os.path.abspath(opts.src), release=rid,
                                        manifest=f"{manifest.entries} {manifest.digest}",
                                        options=opts.recorded())
        log.info("push release=%s src=%s to=%s entries=%d hosts=%d%s", rid, opts.src, lay.live,
                 manifest.entries, len(targets), " (dry run)" if opts.dry_run else "")
        bases = self._prelink_bases(opts, lay, rid, listing)
        uftp = use_uftp(opts, len(targets), self.history is not None)
        ulisting = None
        if uftp:
            ulisting = listing if listing is not None else attr_listing(opts.src, opts.excludes)
            if listing is None and self.history is not None:
                self._listings().save(rid, ulisting)
        self._no_tunnel = tunnel.unavailable() if opts.transport != "ssh" else None
        if self._no_tunnel:
            log.warning("rsync goes over OpenSSH: it cannot ride dsas-push's connections "
                        "here (%s)", self._no_tunnel)
        with control_dir() as cdir:
            self._delta_files = {}
            for base, names in self._deltas.items():
                path = cdir / f"delta-{base}.list"
                path.write_bytes(b"".join(n.encode("utf-8", "surrogateescape") + b"\0"
                                          for n in names))
                self._delta_files[base] = str(path)

            def work(t: Target) -> HostResult:
                return self._push_host(t, opts, lay, rid, manifest, cdir, bases)
            title = f"push {rid}" + (" (dry run)" if opts.dry_run else "")
            parallel = opts.parallel
            if uftp and ulisting is not None:
                # every node waits for the one session: all of them at once
                self._round = self._new_round(targets, opts, lay, rid, manifest, bases,
                                              ulisting, cdir)
                parallel = len(targets)
                title += " (uftp)"
            elif self._use_fanout(opts, len(targets)):
                self._tree = fanout.Tree(targets, opts.fanout_width)
                self._key = fanout.new_key(cdir, rid)
                title += f" (fanout x{opts.fanout_width})"
            try:
                results = self._fan_out(targets, parallel, title, work)
            finally:
                mcast = self._round.close() if self._round is not None else 0
                self._round, self._tree, self._key = None, None, None
                self._close_peers()
        if self.history is not None and run_id is not None:
            self.history.finish(run_id, results, mcast_bytes=mcast)
        return RunOutcome(run_id, rid, results)

    def _new_round(self, targets: list[Target], opts: PushOptions, lay: NodeLayout, rid: str,
                   manifest: Manifest, bases: list[str], listing: Listing, cdir: Path
                   ) -> UftpRound:
        """The push's uftp round, with the node agents of the targets that have one."""
        agents = None
        if self.history is not None:
            agents = make_agents(self.ssh, self.history, targets, opts, lay, rid, manifest,
                                 bases)
        return UftpRound(self._listings(), opts.mcast, opts.src, listing, cdir, len(targets),
                         multicast.staging(lay, rid), agents)

    @staticmethod
    def _use_fanout(opts: PushOptions, count: int) -> bool:
        """Whether nodes relay this push (``--transfer fanout``, more targets than the
        master feeds, ``--delete``: a release then holds exactly the source; without
        it, each release carries its node's own leftovers and would fail its child's
        verification)."""
        if opts.transfer != "fanout" or opts.dry_run or count <= opts.fanout_width:
            return False
        if not opts.delete:
            log.warning("--transfer fanout needs --delete (a node's release then holds "
                        "exactly the source): rsync from the master to every node")
            return False
        return True

    def _listings(self) -> ListingStore:
        """The listings of the pushed releases, kept on this master."""
        return ListingStore(self.ssh.state_dir / "push" / "listings")

    def _listing(self, opts: PushOptions) -> Listing | None:
        """rsync's attribute listing of the source, for pre-linking (``--delete`` pushes
        with a history only), or None."""
        if not opts.delete or not opts.prelink or opts.dry_run or self.history is None:
            return None
        try:
            return attr_listing(opts.src, opts.excludes)
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("no listing of %s (%s): nodes use --link-dest", opts.src, e)
            return None

    def _prelink_bases(self, opts: PushOptions, lay: NodeLayout, rid: str,
                       listing: Listing | None) -> list[str]:
        """The releases a node may hard-link the new one from (``prelink.py``), newest
        first: the recent releases of ``lay.live`` whose listing the master kept and
        that are safe to link from. A node takes its live release if it is one of
        them (a canary may be ahead of the rest), else the newest it has.

        Only for ``--delete`` pushes (``listing`` is None otherwise): then a release
        holds exactly its listing (the verification proves it), so the listing tells
        what pre-linking would share, and what differs (``self._deltas``, not with
        ``--checksum``).
        """
        self._deltas = {}
        if listing is None or self.history is None:
            return []
        store = self._listings()
        store.save(rid, listing)
        bases = []
        for base in self.history.recent_releases(lay.live, PRELINK_CANDIDATES):
            old = base_listing(store, base, listing, opts.checksum)
            if old is None:
                continue
            bases.append(base)
            if not opts.checksum:
                self._deltas[base] = delta_names(old, listing)
                log.info("release %s: %d of %d entries differ from %s", rid,
                         len(self._deltas[base]) - 1, len(listing), base)
        return bases

    def _push_host(self, t: Target, opts: PushOptions, lay: NodeLayout, rid: str,
                   manifest: Manifest, cdir: Path, bases: list[str] | None = None
                   ) -> HostResult:
        rnd, arrived = self._round, False
        node = RemoteNode(self.ssh, t.name, t.address, compress=rnd is not None)
        res = HostResult(t.name, False)
        try:
            if rnd is not None and rnd.has_agent(t.name):
                arrived = True
                if rnd.by_agent(self.reporter, t, res, rid):
                    return res
                rnd = None  # arrived already: the SSH path goes on without uftp
            self.reporter.phase(t.name, "connecting")
            if opts.dry_run:
                return self._dry_run_host(t, node, opts, lay, res, cdir)
            state, kv = node.prepare(lay, rid, bases or ())
            res.previous = res.release = state.live
            if "ALREADY" in kv:
                res.ok, res.reason = True, "already live"
                return res
            if "HAVE" in kv:  # complete on the node already (a retry after a lost answer)
                self._switch(node, lay, rid, res)
            else:
                staged = Staged()
                if rnd is not None:
                    arrived = True
                    staged = rnd.stage(self.reporter, t, node, lay, rid, state, kv,
                                       self._commit_script(opts, lay, rid, manifest, state))
                self._deliver(t, node, opts, lay, rid, state, kv, res, cdir, manifest,
                              bases or [], staged)
            if opts.then:
                self.reporter.phase(t.name, "then")
                self._then(node, opts, lay, rid, state, res)
            res.ok = True
        except (_Failed, RemoteError) as e:
            res.reason = e.reason
        finally:
            self._settle(t, rnd if not arrived else None, res.release == rid)
            node.close()
            if t.address in self._ssh_used:
                self._close_master(t, cdir)
                self._ssh_used.discard(t.address)
        return res

    def _settle(self, t: Target, rnd: UftpRound | None, holds: bool) -> None:
        """A host's thread is done with the push: neither the uftp session (``rnd``, if
        it has not arrived there) nor its fan-out children wait for it any more."""
        if rnd is not None:
            rnd.arrive(t.name)  # the session does not wait for this node
        if self._tree is not None:  # its children relay from it, or go to the master
            self._tree.finished(t, holds)

    def _deliver(self, t: Target, node: RemoteNode, opts: PushOptions, lay: NodeLayout,
                 rid: str, state: NodeState, kv: dict[str, list[str]], res: HostResult,
                 cdir: Path, manifest: Manifest, bases: list[str], staged: Staged) -> None:
        """The release onto the node, verified and switched: from its fan-out parent,
        else (or if that failed) by rsync from the master."""
        relayed = self._relayed(t, node, opts, lay, rid, state, kv, res, manifest)
        if relayed:
            return
        if relayed is False:  # prepared again: what the relay left is .partial-<id>
            again, kv = node.prepare(lay, rid, bases)
            state.releases = again.releases
            if "HAVE" in kv:
                self._switch(node, lay, rid, res)
                return
        self._transfer_verified(t, node, opts, lay, rid, state, kv, res, cdir, manifest, staged)

    def _relayed(self, t: Target, node: RemoteNode, opts: PushOptions, lay: NodeLayout,
                 rid: str, state: NodeState, kv: dict[str, list[str]], res: HostResult,
                 manifest: Manifest) -> bool | None:
        """Fan-out: the release from this target's parent, verified and switched (True).
        None: the master sends it (no parent, or the parent does not hold the
        release); False: the relay or its verification failed (prepare again, then
        the master sends it)."""
        tree, key = self._tree, self._key
        up = tree.parent_of(t) if tree is not None else None
        if tree is None or key is None or up is None:
            return None
        self.reporter.phase(t.name, f"waiting for {up.name}")
        if not tree.wait(up):
            log.warning("host=%s fan-out: %s does not hold %s: rsync from the master",
                        t.name, up.name, rid)
            return None
        self.reporter.phase(t.name, f"from {up.name}")
        try:
            sent = self._relay(t, up, node, opts, lay, rid, state, kv, key)
            self.reporter.phase(t.name, "verifying")
            self._commit(node, opts, lay, rid, manifest, state, res, abort=False)
        except (_Failed, RemoteError) as e:
            log.warning("host=%s fan-out from %s failed (%s): rsync from the master",
                        t.name, up.name, e.reason)
            return False
        log.info("host=%s release %s from %s (%d bytes sent by %s), verified", t.name, rid,
                 up.name, sent, up.name)
        return True

    def _relay(self, t: Target, up: Target, node: RemoteNode, opts: PushOptions,
               lay: NodeLayout, rid: str, state: NodeState, kv: dict[str, list[str]],
               key: fanout.PushKey) -> int:
        """``up`` rsyncs its verified release into ``t``'s incoming tree over SSH, with
        the push key (authorized on ``t`` from ``up`` only, for this relay only) and
        ``t``'s host key as this master verified it. Returns the bytes ``up`` sent."""
        base = state.live or (state.releases[-1] if state.releases else None)
        linked = "LINKED" in kv
        link_dests = [f"../{base}"] if base and not linked else []
        if "PARTIAL" in kv:
            link_dests.append(f"../.partial-{rid}")
        argv = fanout.relay_argv(self.ssh, lay, rid, t.address, link_dests, opts.excludes,
                                 delete=linked, checksum=opts.checksum)
        rc, out, err = node.run(fanout.authorize_script(key, up.address), timeout=60)
        if rc != 0 or "AUTHORIZED" not in parse_kv(out):
            raise _Failed(f"authorizing {up.name}: {first_error(out, err)}")
        try:
            script = fanout.relay_script(argv, node.host_key_line())
            rc, out, err = self._peer(up).run(script, timeout=fanout.RELAY_TIMEOUT,
                                              data=key.private)
        finally:
            self._try(node, fanout.deauthorize_script(key))
        got = parse_kv(out)
        if rc != 0 or "RELAYED" not in got:
            raise _Failed(f"relay: {explain(rc, err) if rc else first_error(out, err)}")
        return int(got["RELAYED"][0] or 0)

    def _peer(self, up: Target) -> RemoteNode:
        """The master's connection to fan-out parent ``up``, made by its first child
        (children of one parent run their relays on it side by side).

        The connection is made under ``up``'s own lock, never under the one all the
        parents share: a parent that accepts and then says nothing holds its
        children for the connect timeout (each of them, in turn), and it must not
        hold the children of every other parent too (it did: with one lock, the
        healthy parents' relays waited behind the hung one's handshake)."""
        with self._peers_lock:
            entry = self._peers.get(up.name)
            if entry is None:
                entry = self._peers[up.name] = (RemoteNode(self.ssh, up.name, up.address),
                                                threading.Lock())
        peer, lock = entry
        with lock:
            new = not peer.connected
            peer.transport()  # connected now (again if the last try failed), not in run()
        if new:
            log.info("host=%s logged in for its children's relays", up.name)
        return peer

    def _close_peers(self) -> None:
        with self._peers_lock:
            peers, self._peers = list(self._peers.values()), {}
        for peer, lock in peers:
            with lock:
                peer.close()

    def _switch(self, node: RemoteNode, lay: NodeLayout, rid: str, res: HostResult) -> None:
        rc, out, err = node.run(switch_script(lay, rid))
        if rc != 0 or parse_kv(out).get("LIVE", [""])[-1] != rid:
            raise _Failed(f"switch: {first_error(out, err)}")
        res.release = rid

    def _transfer_verified(self, t: Target, node: RemoteNode, opts: PushOptions,
                           lay: NodeLayout, rid: str, state: NodeState,
                           kv: dict[str, list[str]], res: HostResult, cdir: Path,
                           manifest: Manifest, staged: Staged | None = None) -> None:
        """Transfer, verify, switch. A node pre-linked from the delta's base gets only
        the names that differ (``--files-from``); should that not give the master's
        tree (the base was changed on the node behind dsas's back), a full rsync
        into the same incoming tree repairs it before the verification that counts.
        A node uftp staged and fixed up (``staged.fixed``) is verified at once, with
        no rsync pass; if that fails, the rsync pass over the delta repairs it."""
        staged = staged or Staged()
        delta = self._delta_files.get(kv["LINKED"][0]) if "LINKED" in kv else None
        if staged.fixed:
            self.reporter.phase(t.name, "verifying")
            try:
                self._commit(node, opts, lay, rid, manifest, state, res, abort=False,
                             done=staged.commit)
                return
            except _Mismatch as e:
                log.warning("host=%s the tree uftp staged does not verify (%s): rsync's pass",
                            t.name, e.reason)
        fast = staged.complete and not staged.fixed
        try:
            self._transfer(t, node, opts, lay, rid, state, kv, res, cdir, delta, fast)
            self.reporter.phase(t.name, "verifying")
            self._commit(node, opts, lay, rid, manifest, state, res, abort=delta is None)
            return
        except _Failed as e:
            if delta is None or (not isinstance(e, _Mismatch)
                                 and not e.reason.startswith("rsync exit")):
                if delta is not None and not e.reason.startswith("connection lost"):
                    self._try(node, abort_script(lay, rid))  # free the space
                raise
            log.warning("host=%s delta transfer did not give the release (%s): full rsync",
                        t.name, e.reason)
        sent = res.bytes
        self._transfer(t, node, opts, lay, rid, state, kv, res, cdir, None)
        res.bytes += sent
        self.reporter.phase(t.name, "verifying")
        self._commit(node, opts, lay, rid, manifest, state, res)

    def _transfer(self, t: Target, node: RemoteNode, opts: PushOptions, lay: NodeLayout,
                  rid: str, state: NodeState, kv: dict[str, list[str]], res: HostResult,
                  cdir: Path, files_from: str | None = None, fast: bool = False) -> None:
        """``fast``: uftp staged every changed file, checked (multicast.py): compare
        mtimes to the second (uftp keeps no more), so rsync only sets attributes."""
        linked = "LINKED" in kv  # the incoming tree holds the base release already
        base = state.live or (state.releases[-1] if state.releases else None)
        link_dests = [f"../{base}"] if base and not linked else []
        if "PARTIAL" in kv:
            link_dests.append(f"../.partial-{rid}")
        log.debug("host=%s transfer into %s%s", t.name,
                  f"hard links of {kv['LINKED'][0]}" if linked else f"link-dest {link_dests}",
                  " (only the names that differ)" if files_from else "")
        self.reporter.phase(t.name, "transferring")
        with self._rsh(t, node, opts, cdir, bool(base)) as (rsh, dest, session):
            argv = rsync_argv(opts.src, dest + lay.incoming(rid), rsh, link_dests,
                              opts.excludes, opts.checksum, delete=linked,
                              delete_excluded=linked and bool(opts.excludes),
                              files_from=files_from)
            if fast:
                argv[argv.index("--modify-window=-1")] = "--modify-window=0"
            xfer = run_rsync(argv, lambda p: self.reporter.progress(t.name, p),
                             **_carried(session))
        res.bytes, res.files = xfer.sent, xfer.files
        if xfer.returncode != 0:
            if not xfer.reason.startswith("connection lost") and files_from is None:
                self._try(node, abort_script(lay, rid))  # free the space; live is untouched
            raise _Failed(xfer.reason)

    @staticmethod
    def _commit_script(opts: PushOptions, lay: NodeLayout, rid: str, manifest: Manifest,
                       state: NodeState) -> str:
        prev = state.live or (state.releases[-1] if state.releases else None)
        prune = [r for r in to_prune(NodeState(rid, state.releases + [rid]), opts.keep)
                 if r != state.live]
        return commit_script(lay, rid, manifest, prev, opts.delete, prune)

    def _commit(self, node: RemoteNode, opts: PushOptions, lay: NodeLayout, rid: str,
                manifest: Manifest, state: NodeState, res: HostResult,
                abort: bool = True, done: tuple[int, str, str] | None = None) -> None:
        """Verify and switch; ``done``: the commit step's (rc, out, err) when it ran
        already (after uftp's apply, in the same round trip)."""
        rc, out, err = done or node.run(self._commit_script(opts, lay, rid, manifest, state))
        kv = parse_kv(out)
        if rc == 4:
            if abort:
                self._try(node, abort_script(lay, rid))
            got = (kv.get("GOT") or ["nothing"])[0]
            raise _Mismatch(f"verify failed: node has {got!r}, expected "
                          f"'{manifest.entries} {manifest.digest[:12]}...'")
        if rc != 0 or kv.get("LIVE", [""])[-1] != rid:
            raise _Failed(f"switch: {first_error(out, err)}")
        res.release = rid

    def _then(self, node: RemoteNode, opts: PushOptions, lay: NodeLayout, rid: str,
              state: NodeState, res: HostResult) -> None:
        assert opts.then is not None
        rc, out, err = node.run(then_script(lay, rid, opts.then), timeout=600)
        if rc == 0:
            return
        why = f"--then exited {rc}: {first_error(out, err)}"
        if state.live:
            rc2, out2, err2 = node.run(switch_script(lay, state.live))
            if rc2 == 0:
                res.release = state.live
                raise _Failed(f"{why}; switched back to {state.live}")
            raise _Failed(f"{why}; switching back failed: {first_error(out2, err2)}")
        raise _Failed(why)

    def _dry_run_host(self, t: Target, node: RemoteNode, opts: PushOptions, lay: NodeLayout,
                      res: HostResult, cdir: Path) -> HostResult:
        """What would move, compared with the live release; creates nothing anywhere."""
        state = node.state(lay)
        res.previous = res.release = state.live
        if state.not_symlink:
            raise _Failed(f"{lay.live} exists and is not a dsas release symlink")
        dest = lay.release(state.live) if state.live else lay.incoming("dry-run")
        self.reporter.phase(t.name, "dry run")
        with self._rsh(t, node, opts, cdir, bool(state.live)) as (rsh, prefix, session):
            argv = rsync_argv(opts.src, prefix + dest, rsh, (), opts.excludes, opts.checksum,
                              dry_run=True, delete=opts.delete)
            xfer = run_rsync(argv, **_carried(session))
        res.bytes, res.files = xfer.size, xfer.files
        res.ok, res.reason = xfer.returncode == 0, xfer.reason or "dry run: nothing changed"
        return res

    @contextmanager
    def _rsh(self, t: Target, node: RemoteNode, opts: PushOptions, cdir: Path,
             update: bool) -> Iterator[tuple[str, str, tunnel.Session | None]]:
        """rsync's ``-e``, the ``host:`` prefix of its destination and the tunnel
        session carrying it (None: OpenSSH), for this host.

        ``update``: the node has a release to build on (so little should move)."""
        ssh = opts.transport == "ssh" or (opts.transport == "auto" and not update)
        if ssh or self._no_tunnel:
            self._ssh_used.add(t.address)
            yield self.ssh.rsync_rsh(cdir), remote_dest(self.ssh, t.address, ""), None
            return
        with tunnel.Session(t.address, node.transport()) as session:
            yield session.rsh, f"{t.address}:", session

    def _try(self, node: RemoteNode, script: str) -> None:
        try:
            node.run(script, timeout=120)
        except RemoteError as e:
            log.warning("host=%s clean-up failed: %s", node.name, e.reason)

    def _close_master(self, t: Target, cdir: Path) -> None:
        """Stop the ssh ControlMaster this host's rsync left running (ControlPersist)."""
        argv = self.ssh.ssh_command(cdir) + ["-O", "exit", t.address]
        try:
            proc.run(argv, timeout=10, check=False)
        except proc.CommandError:
            pass  # no master left, or ssh gone: nothing to stop

    # -- rollback and status -------------------------------------------------

    def rollback(self, targets: list[Target], to: str, parallel: int = 0) -> RunOutcome:
        lay = NodeLayout(to)
        run_id = None
        if self.history is not None:
            run_id = self.history.start("rollback", lay.live, [t.name for t in targets])

        def work(t: Target) -> HostResult:
            node = RemoteNode(self.ssh, t.name, t.address)
            res = HostResult(t.name, False)
            try:
                self.reporter.phase(t.name, "connecting")
                state = node.state(lay)
                res.previous = res.release = state.live
                prev = state.previous()
                if prev is None:
                    raise _Failed(f"no release older than {state.live or 'nothing'}")
                rc, out, err = node.run(switch_script(lay, prev))
                if rc != 0 or parse_kv(out).get("LIVE", [""])[-1] != prev:
                    raise _Failed(f"switch: {first_error(out, err)}")
                res.ok, res.release = True, prev
            except (_Failed, RemoteError) as e:
                res.reason = e.reason
            finally:
                node.close()
            return res

        results = self._fan_out(targets, parallel, f"rollback {lay.live}", work)
        landed = {r.release for r in results if r.ok}
        if self.history is not None and run_id is not None:
            self.history.finish(run_id, results, release=landed.pop() if len(landed) == 1
                                else None)
        return RunOutcome(run_id, None, results)

    def status(self, targets: list[Target], to: str, parallel: int = 0
               ) -> list[tuple[str, str, str, int]]:
        """(host, live release, verdict, releases kept); verdict current|stale|... ."""
        lay = NodeLayout(to)
        latest = self.history.latest_release(lay.live) if self.history else None
        rows: dict[str, tuple[str, str, str, int]] = {}

        def work(t: Target) -> HostResult:
            node = RemoteNode(self.ssh, t.name, t.address)
            try:
                st = node.state(lay)
            except RemoteError as e:  # its release is unknown: not drift, unreachable
                reason = e.reason if e.reason.startswith("unreachable") else \
                    f"unreachable: {e.reason}"
                rows[t.name] = (t.name, "-", reason, 0)
                return HostResult(t.name, False, reason=e.reason)
            finally:
                node.close()
            verdict = status_verdict(st, latest)
            rows[t.name] = (t.name, st.live or "-", verdict, len(st.releases))
            return HostResult(t.name, verdict == "current", st.live, reason=verdict)

        self._fan_out(targets, parallel, f"status {lay.live}", work)
        return [rows[t.name] for t in targets]


def _carried(session: tunnel.Session | None) -> dict[str, Any]:
    """run_rsync's arguments for an rsync carried by ``session`` (none for OpenSSH)."""
    if session is None:
        return {}
    return {"settle": session.settle, "pass_fds": session.pass_fds}


def status_verdict(st: NodeState, latest: str | None) -> str:
    if st.not_symlink:
        return "unmanaged (not a symlink)"
    if st.live is None:
        return "no release"
    if latest is None:
        return "unknown (no push recorded)"
    return "current" if st.live == latest else f"stale (latest {latest})"
