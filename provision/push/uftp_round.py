"""dsas-push's uftp round: whether a push goes by multicast, and the one round of
sessions every node's thread meets in (``multicast.py`` builds the scripts and runs uftp).

Split from ``push.py``: the Pusher asks ``use_uftp`` once per push, makes one
``UftpRound`` for all its targets, and each host thread calls ``UftpRound.stage``
before its rsync pass (which completes the node whatever uftp did).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..observability.logsafe import safe
from ..sshtrust.hostkeys import trusted_keys
from ..sshtrust.sshconf import SshConfig
from ..state.pushes import History, HostResult
from . import agent, multicast
from .options import PushOptions
from .prelink import Listing, ListingStore, delta_names
from .progress import Reporter
from .release import Manifest, NodeLayout
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


@dataclass
class Agents:
    """The node agents' part of a push (agent.py): which hosts, from which base each,
    how to make a base's signed order, and where their reports come in."""

    bases: dict[str, str]  # host -> the release its update is a delta against
    order: Callable[[str, str, Path], list[Path]]  # (base, sums digest, dir) -> sig, order
    listener: agent.ReportListener
    wait: float = agent.WAIT


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
                 listing: Listing, cdir: Path, count: int, dest: str | None = None,
                 agents: Agents | None = None):
        self.store, self.mcast, self.src = store, mcast, src
        self.agents = agents  # the node agents' part (agent.py), None: every node by SSH
        self._ordered: set[str] = set()  # hosts whose session carried an agent's order
        self._ended = 0.0  # monotonic time the sessions ended
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
                self._ended = time.monotonic()
                self._done.set()

    def wait(self, host: str, timeout: float = 3600) -> NodeOutcome | None:
        if not self._done.wait(timeout):
            return None
        return self.outcomes.get(host)

    def has_agent(self, host: str) -> bool:
        return self.agents is not None and host in self.agents.bases

    def close(self) -> int:
        """Stop the agents' report listener; returns the bytes multicast."""
        if self.agents is not None:
            self.agents.listener.close()
        return self.bytes

    def by_agent(self, reporter: Reporter, t: Target, res: HostResult, rid: str) -> bool:
        """A node agent's host: it arrives with no SSH (its uftp id from its address,
        its base from the history), and its agent's report once the session is over.
        True (``res`` says so) when the agent switched it to ``rid``, verified; False
        when it had no order (its group could not have one), uftp says it missed
        something, or no good report came in time: the SSH path does the node."""
        assert self.agents is not None
        base = self.agents.bases[t.name]
        reporter.phase(t.name, "multicast")
        self.arrive(t.name, multicast.client_uid(t.address), base)
        outcome = self.wait(t.name)
        if t.name not in self._ordered or outcome is None or not outcome.complete:
            why = "no order for its base" if t.name not in self._ordered else \
                (outcome.why if outcome else "no session")
            log.warning("host=%s agent: %s: by SSH", t.name, why)
            return False
        reporter.phase(t.name, "agent")
        report = self.agents.listener.wait(t.name, self._ended + self.agents.wait)
        if report is None:
            log.warning("host=%s agent: no report in %.0f s: by SSH", t.name, self.agents.wait)
            return False
        if not report.ok:
            log.warning("host=%s agent: %s: by SSH", t.name, report.why)
            return False
        log.info("host=%s agent switched to the release (%s)", t.name,
                 safe((report.kv.get("GOT") or ["?"])[0]))
        res.ok, res.release, res.previous = True, rid, base
        return True

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
        if "NOCPIO" in got:
            log.warning("host=%s has no cpio: the small files of the session's bundle "
                        "come by rsync", t.name)
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
            after = None
            agents = self.agents
            if agents is not None and base is not None and fixup is not None and not left \
                    and any(h in agents.bases for h in hosts):
                after = functools.partial(_order_for, agents.order, base)
                self._ordered.update(h for h in hosts if h in agents.bases)
            result, digest = multicast.send(self.mcast, self.src, names, uids, self.cdir,
                                            str(i), dest=self.dest, fixup=fixup, after=after)
            self.bytes += result.bytes
            for host, uid in zip(hosts, uids, strict=True):
                why = result.failed.get(uid, "")
                if left and not why:
                    why = f"{left} changed names left to rsync"
                self.outcomes[host] = NodeOutcome(digest, not why, why, fixup is not None)


def _order_for(order: Callable[[str, str, Path], list[Path]], base: str, digest: str,
               wd: Path) -> list[Path]:
    return order(base, digest, wd)


def make_agents(ssh: SshConfig, history: History, targets: list[Target], opts: PushOptions,
                lay: NodeLayout, rid: str, manifest: Manifest, bases: list[str]
                ) -> Agents | None:
    """The node agents' part of this push (agent.py), or None when no target can have
    one. A target can when its inventory says ``push: {agent: true}``, the push is a
    ``--delete`` push without ``--then`` (the order does what the SSH steps would, not
    a command), its live release by the history is one this push is pre-linked from
    (``bases``: the session's delta and fixup are against it), the node's uftpd root
    holds the release directory, and dsas trusts a host key for it (its reports are
    signed with it). Starts the report listener; the caller closes it."""
    if not opts.delete or opts.then or not bases:
        return None
    lives = history.live_releases()
    chosen: dict[str, str] = {}
    expected: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    for t in targets:
        if not t.agent or not lay.releases.startswith(t.push_root.rstrip("/") + "/"):
            continue
        entry = next((e for e in lives.get(t.name, []) if e["to_path"] == lay.live), None)
        keys = trusted_keys(ssh, t.address)
        if entry is None or entry["release"] not in bases or not keys:
            log.info("host=%s agent: %s: by SSH", t.name,
                     "no trusted host key" if entry and entry["release"] in bases else
                     "its live release is not one this push links from")
            continue
        chosen[t.name] = entry["release"]
        expected[t.address] = (t.name, keys)
    if not chosen:
        return None
    first = next(t for t in targets if t.name in chosen)
    nonce = agent.new_nonce()
    listener = agent.ReportListener(agent.local_address(first.address), expected, rid, nonce)
    not_after = int(time.time()) + agent.ORDER_TTL

    def order(base: str, digest: str, wd: Path) -> list[Path]:
        path = wd / agent.ORDER_NAME
        path.write_text(agent.order_script(lay, rid, base, digest, manifest, opts.keep, nonce,
                                           listener.url, not_after))
        return [agent.sign_order(ssh, path), path]

    log.info("push %s: %d node(s) by their agent, reports to %s", rid, len(chosen),
             listener.url)
    return Agents(chosen, order, listener, opts.mcast.agent_wait)
