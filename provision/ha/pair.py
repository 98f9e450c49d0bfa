"""One master of the pair at run time (issue 18): its role, the channel to its peer,
the lease replication and the keepalived that holds the VIP.

Role. A master is *active* while the VIP (``cluster.master_address``) is one of its
local addresses, *standby* otherwise: ``Role`` polls that every ``ROLE_POLL`` s (a
bind() to the VIP succeeds only where it is local) and calls back on each change. The
standby answers no DHCP (both masters sit on the clients' segment) but applies every
update the active sends into its own state store.

Replication (hot standby, synchronous). The DHCP committer writes a batch of lease
changes to the local store, then ``Replicator.replicate`` sends the same batch to the
peer and waits for its ack (one round trip per group commit, not per lease); only then
are the batch's ACKs sent. This is Kea HA's hot-standby (lease updates go to the partner
before the ACK) and not ISC failover's bounded ``max-unacked-updates``: with a bound, up
to N ACKed leases may exist only on the active, and a takeover right then could hand one
of them to a second machine; a group commit already batches, so the round trip costs
one RTT per batch, not per lease.

If the peer does not answer within ``pair.peer_timeout`` the active goes on alone,
*communication-interrupted* (ISC failover's name): it renews what it knows, gives new
pool addresses only from its own half (``Pool.half``: primary the lower, secondary the
upper half of each pool), extends pool leases at most MCLT past what the peer knew, and
does not reuse an address another machine held until MCLT after its end. A batch that
could not be replicated and bound an address of the *peer's* half (the active uses the
peer's half only once its own is full) gets no ACK: those bindings are dropped, and the
clients retry into the active's own half. When the peer answers again, the active sends
it its whole lease set (MERGE: per address the row written last wins), and they are in
sync again.

Mirror. The inventory, dsas-push's known_hosts, the boot tree and the image store are
copied from the active to the standby and verified by sha256 (``provision.ha.mirror``);
a stale one is reported, never served silently.

Return. A master that starts pulls the peer's whole lease set (PULL/STATE, sha256
checked) and merges it, then mirrors the peer's files, before it starts keepalived, so
it holds the VIP (and answers anyone) only with a current store and boot tree. Whether
the returning primary then takes the VIP back is ``pair.preempt`` (keepalived's
preemption; ``nopreempt`` otherwise).
"""


from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from ..inventory.model import Inventory
from ..observability.metrics import Metrics
from ..state import StateStore
from .keepalived import KEEPALIVED_CONF, Keepalived, render_keepalived
from .members import Me, PairError, is_local, key_path, make_key, read_key, resolve
from .mirror import Mirror, Tree
from .replicator import STATUS_FILE, Replicator, Unconfirmed, ask_status

__all__ = ["KEEPALIVED_CONF", "STATUS_FILE", "Keepalived", "Me", "Mirror", "PairError",
           "PairRuntime", "Replicator", "Role", "Tree", "Unconfirmed", "ask_status",
           "is_local", "key_path", "make_key", "read_key", "render_keepalived", "resolve",
           "state_line"]

log = logging.getLogger(__name__)

ROLE_POLL = 0.1  # s between two looks at whether the VIP is local


def state_line(st: dict[str, Any]) -> str:
    """One master's pair state for the status page, from its status (``Replicator.status``
    here, the peer's last heartbeat there): role, sync, lag, the mirror."""
    if not st or st.get("role") in (None, "unknown"):
        return "not reachable"
    parts = [str(st["role"])]
    if st.get("left_pair"):
        parts.append("left the pair")
    if st["role"] == "active":
        parts.append("in sync" if st.get("in_sync") else "alone (own half of the pool)")
    if not st.get("peer_reachable"):
        parts.append("peer not reachable")
    if st.get("lag_updates"):
        parts.append(f"{st['lag_updates']} update(s) not acked")
    stale = sorted(k for k, v in (st.get("mirror") or {}).items() if v.get("stale"))
    if stale:
        parts.append(f"mirror STALE: {', '.join(stale)}")
    elif st.get("mirror") and st["role"] == "standby":
        parts.append("mirror in sync")
    return ", ".join(parts)


class Role(threading.Thread):
    """Polls whether the VIP is local; calls ``on_change(active)`` on each change."""

    def __init__(self, vip: IPv4Address, on_change: Callable[[bool], None]) -> None:
        super().__init__(name="pair-role", daemon=True)
        self.vip = vip
        self.on_change = on_change
        self.active = False
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(ROLE_POLL):
            now = is_local(self.vip)
            if now != self.active:
                self.active = now
                log.info("master pair: %s the VIP %s: %s", "holding" if now else "lost",
                         self.vip, "active" if now else "standby")
                self.on_change(now)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=2)


class PairRuntime:
    """This master of the pair in `dsas serve`: the replicator, the role watcher and
    (unless the operator runs it) keepalived. ``start_sync`` runs before the services
    (the store is current before anyone is answered), ``start_vip`` after them."""

    def __init__(self, me: Me, key: bytes, store: StateStore, metrics: Metrics,
                 state_dir: Path, interface: str, keepalived: bool = True,
                 resync_wait: float = 10.0, trees: list[Tree] | None = None) -> None:
        self.me = me
        self.replicator = Replicator(me, key, store, metrics, state_dir)
        rep = self.replicator
        self.mirror = Mirror(me, key, trees or [], metrics, lambda: rep.active,
                             lambda: rep.peer_status,
                             displaced=state_dir / "mirror-displaced",
                             state_file=state_dir / "mirror-state.json") if trees else None
        rep.mirror = self.mirror
        rep.on_leave = self._leave
        self.role = Role(me.vip, self._role_changed)
        self.interface = interface
        self.keepalived = Keepalived(state_dir, render_keepalived(me, interface)) \
            if keepalived else None
        self.resync_wait = resync_wait
        self.listeners: list[Callable[[bool], None]] = []  # before the replicator hears
        self._restarted = -5.0

    @property
    def active(self) -> bool:
        return self.replicator.active

    def _role_changed(self, active: bool) -> None:
        for listener in self.listeners:
            listener(active)
        self.replicator.set_active(active)

    def start_sync(self) -> bool:
        """The peer's leases, then its mirror (when it is the active one), before this
        master answers anyone; False when the leases could not be pulled."""
        self.replicator.start()
        ok = self.replicator.resync(self.resync_wait)
        if self.mirror is not None:
            if ok:
                # bounded: an image store can be large; what is left is fetched by the
                # mirror's thread, and reported stale until then
                done = self.mirror.sync(time.monotonic() + max(self.resync_wait, 30.0))
                log.info("master pair: mirror from %s at start: %s", self.me.peer_name,
                         "in sync" if done else "stale (see master status)")
            self.mirror.start()
        return ok

    def start_vip(self) -> None:
        self.role.start()
        if self.keepalived is not None:
            self.keepalived.start()

    def states(self) -> dict[str, str]:
        """master name -> its state line: this one now, the peer as its last heartbeat
        said (or not reachable when none came for ~2 s)."""
        mine = self.replicator.status()
        peer = dict(self.replicator.peer_status) if mine.get("peer_reachable") else {}
        return {self.me.name: state_line(mine), self.me.peer_name: state_line(peer)}

    def _leave(self, why: str) -> None:
        """The peer says this master left the pair: let the VIP go (keepalived stopped,
        not restarted), so the standby role answers nobody."""
        if self.keepalived is not None:
            log.error("master pair: letting the VIP go (%s); stop this serve", why)
            self.keepalived.stop()
            self.keepalived = None

    def retarget(self, inv: Inventory) -> None:
        """(After each inventory reload) follow a change of the pair: a new peer (``dsas
        master join``) is taken live; this master no longer in the pair lets the VIP go
        and answers nobody; another side or VIP needs a restart (said, not done)."""
        try:
            me = resolve(inv, self.me.name)
        except PairError as e:
            if self.keepalived is not None:
                log.error("master pair: %s is no longer a master of the pair (%s): letting "
                          "the VIP go; stop this serve", self.me.name, e)
                self.keepalived.stop()
                self.keepalived = None
            return
        if me == self.me:
            return
        if (me.side, me.vip, me.address, me.pair.port) != \
                (self.me.side, self.me.vip, self.me.address, self.me.pair.port):
            log.error("master pair: this master's side, VIP, address or port changed in the "
                      "inventory: restart dsas serve to take it (still serving as before)")
            return
        log.warning("master pair: the peer is now %s %s (was %s %s)", me.peer_name,
                    me.peer_address, self.me.peer_name, self.me.peer_address)
        self.me = me
        self.replicator.retarget(me)
        if self.mirror is not None:
            self.mirror.retarget(me)
        if self.keepalived is not None:
            self.keepalived.reload(render_keepalived(me, self.interface))

    def check(self) -> None:
        """(The supervisor's tick) keepalived died: start it again, at most once per
        5 s (a master without it never holds the VIP, so must not stay that way)."""
        ka = self.keepalived
        if ka is None or ka.alive() or time.monotonic() - self._restarted < 5:
            return
        code = ka.proc.returncode if ka.proc is not None else None
        log.error("master pair: keepalived exited (%s); starting it again (see %s)", code,
                  ka.dir / "keepalived.log")
        self._restarted = time.monotonic()
        try:
            ka.start()
        except PairError as e:
            log.error("master pair: %s", e)

    def stop(self) -> None:
        if self.keepalived is not None:
            self.keepalived.stop()
        self.role.stop()
        if self.mirror is not None:
            self.mirror.stop()
        self.replicator.stop()
