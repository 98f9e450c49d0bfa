"""The channel between the two masters of the pair (issue 18), both ends: the server
that applies what the peer sends and the link that replicates this master's lease batches
(hot standby, synchronous; see ``provision.ha.pair`` for the design)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..observability.metrics import Metrics
from ..policy.leases import Change, Lease, LeasePut
from ..state import StateStore, replica
from ..state.leases import LeaseJournal
from . import wire
from .members import Me, PairError

log = logging.getLogger(__name__)

PING_EVERY = 0.5  # s between heartbeats on an idle channel
CONNECT_TIMEOUT = 1.0
SYNC_TIMEOUT = 30.0  # s for a whole lease set to cross
HANDSHAKE_TIMEOUT = 5.0  # s a connection may take to authenticate
MAX_CONNECTIONS = 4  # at once: the peer needs one or two; more are refused, counted
TABLES_TIMEOUT = 5.0  # s for a copy of the other state (events, histories) to be acked
TABLES_EVERY = 2.0  # s at most between two copies of the other state (when it changed)
STATUS_FILE = "master-status.json"


class Replicator:
    """The channel to the peer, both ends: a server on this master's own address that
    applies what the peer sends, and a link that sends this master's batches when it is
    the active one."""

    def __init__(self, me: Me, key: bytes, store: StateStore, metrics: Metrics,
                 state_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.me = me
        self._key = key
        self.store = store
        self.journal = LeaseJournal(store)
        self.metrics = metrics
        self.state_dir = state_dir
        self.clock = clock
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the link's socket and its state
        self._sock: socket.socket | None = None
        self._codec: wire.Codec | None = None
        self.active = False
        self.synced = False  # the peer has everything this (active) side committed
        self.backlog = 0  # changes committed here and not acked by the peer
        self.backlog_since: float | None = None
        self.last_sync: float | None = None  # the peer acked everything (clock())
        self.last_applied: float | None = None  # last update from the peer applied here
        self.applied = 0  # changes applied from the peer
        self.peer_seen: float | None = None  # last frame from the peer (either direction)
        self.peer_status: dict[str, Any] = {}
        self.resynced: dict[str, Any] | None = None
        self.last_tables_sync: float | None = None  # the other state reached the peer
        self.last_tables_applied: float | None = None  # the peer's other state came here
        self._tables_at = -TABLES_EVERY
        self._tables_mark: list[Any] | None = None
        self.dropped: dict[str, int] = {}
        self.on_interrupted: Callable[[str | None], None] = lambda side: None
        self.on_applied: Callable[[list[Change]], None] = lambda changes: None
        self.on_unconfirmed: Callable[[list[Lease]], None] = lambda leases: None
        # A new binding of the peer's half (policy.fresh), and the batch the peer acked.
        self.is_fresh: Callable[[Lease], bool] = lambda lease: False
        self.on_confirmed: Callable[[list[Change]], None] = lambda changes: None
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.mirror: Any = None  # ha.mirror.Mirror: answers MANIFEST and CHUNK
        # Masters that left the pair (address -> name): still let in, answered LEAVE.
        self.former: dict[str, str] = {}
        self.left: str | None = None  # why this master left the pair (told by its peer)
        self.on_leave: Callable[[str], None] = lambda why: None

    # -- life cycle ---------------------------------------------------------------
    def start(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            ls.bind((str(self.me.address), self.me.pair.port))
        except OSError as e:
            ls.close()
            raise PairError(f"replication: cannot listen on {self.me.address}:"
                            f"{self.me.pair.port}: {e.strerror or e}") from None
        ls.listen(8)
        ls.settimeout(0.5)
        self._listener = ls
        for target, name in ((self._serve, "pair-server"), (self._link, "pair-link")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("master pair: %s (%s) replicating with %s %s:%d", self.me.name, self.me.side,
                 self.me.peer_name, self.me.peer_address, self.me.pair.port)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=3)
        if self._listener is not None:
            self._listener.close()
        self._close_link()

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.metrics.inc("dsas_master_dropped_total", reason=reason)

    # -- the server: what the peer sends -----------------------------------------------
    def _serve(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, (addr, _) = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            former = addr in self.former
            if addr != str(self.me.peer_address) and not former:  # between the two masters
                conn.close()
                self._drop("not_peer")
                continue
            if not self._slots.acquire(blocking=False):  # idle connections cannot pile up
                conn.close()
                self._drop("busy")
                continue
            threading.Thread(target=self._connection, args=(conn, former), name="pair-conn",
                             daemon=True).start()

    def _connection(self, conn: socket.socket, former: bool) -> None:
        try:
            self._serve_connection(conn, former)
        finally:
            self._slots.release()

    def _serve_connection(self, conn: socket.socket, former: bool = False) -> None:
        with conn:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            try:
                codec = wire.server_handshake(conn, self._key)
            except wire.WireError as e:
                self._drop(e.reason)
                log.warning("master pair: refused a connection: %s", e.reason)
                return
            except (OSError, ConnectionError):
                return
            conn.settimeout(SYNC_TIMEOUT)
            while not self._stop.is_set():
                try:
                    mtype, body = codec.open(wire.read_frame(conn))
                except wire.WireError as e:
                    self._drop(e.reason)
                    log.warning("master pair: dropped a frame (%s); closing", e.reason)
                    return
                except (OSError, ConnectionError):
                    return
                if former:  # a master that left the pair, started again with its old inventory
                    with contextlib.suppress(OSError):
                        conn.sendall(codec.seal(wire.LEAVE, self._leave_body()))
                    return
                self.peer_seen = self.clock()
                try:
                    reply = self._handle(mtype, body)
                except (ValueError, KeyError, TypeError) as e:
                    self._drop("bad_payload")
                    log.warning("master pair: bad %s from the peer: %s",
                                wire.NAMES.get(mtype, mtype), e)
                    return
                try:
                    conn.sendall(codec.seal(*reply))
                except OSError:
                    return

    def _handle(self, mtype: int, body: Any) -> tuple[int, Any]:
        if mtype == wire.LEAVE:
            self._told_to_leave(body)
            return wire.ACK, {}
        if mtype in (wire.MANIFEST, wire.CHUNK) and self.mirror is not None:
            return self.mirror.handle(mtype, body)  # type: ignore[no-any-return]
        if mtype in (wire.PING, wire.STATUS):
            if mtype == wire.PING:
                self.peer_status = dict(body)
            return wire.PONG, self.status()
        return self._handle_state(mtype, body)

    def _handle_state(self, mtype: int, body: Any) -> tuple[int, Any]:
        """The leases and the other state the peer sends or asks for."""
        if mtype == wire.UPDATE:
            changes = replica.decode(body["changes"])
            self.journal.commit(changes, float(body["now"]))
            self._applied(len(changes))
            self.on_applied(changes)
            return wire.ACK, {"n": len(changes)}
        if mtype == wire.MERGE:
            rows = body["leases"]
            if replica.digest(rows) != body["sha256"]:
                raise ValueError("lease set sha256 mismatch")
            taken = replica.merge(self.store, rows)
            self._applied(taken)
            self.on_applied([])
            return wire.ACK, {"n": taken}
        if mtype == wire.PULL:
            rows = replica.lease_set(self.store)
            return wire.STATE, {"leases": rows, "sha256": replica.digest(rows)}
        if mtype == wire.TABLES:
            tables = body["tables"]
            if _digest(tables) != body["sha256"]:
                raise ValueError("tables sha256 mismatch")
            n = replica.replace_other(self.store, tables)
            self.last_tables_applied = self.clock()
            return wire.ACK, {"n": n}
        raise ValueError(f"unexpected message {wire.NAMES.get(mtype, mtype)}")

    def _applied(self, n: int) -> None:
        self.applied += n
        self.last_applied = self.clock()
        self.metrics.inc("dsas_master_applied_total", n)

    # -- the link: what this master sends ---------------------------------------------
    def _connect(self, timeout: float) -> wire.Codec:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.bind((str(self.me.address), 0))
            sock.connect((str(self.me.peer_address), self.me.pair.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            codec = wire.client_handshake(sock, self._key)
        except BaseException:
            sock.close()
            raise
        self._sock, self._codec = sock, codec
        return codec

    def _close_link(self) -> None:
        self._tables_mark = None  # a new connection: the peer may have missed a copy
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._codec = None

    def _call(self, mtype: int, body: Any, timeout: float) -> tuple[int, Any]:
        """One request and its reply on the link (connecting first); raises on failure."""
        codec = self._codec or self._connect(timeout)
        assert self._sock is not None
        self._sock.settimeout(timeout)
        self._sock.sendall(codec.seal(mtype, body))
        got = codec.open(wire.read_frame(self._sock))
        if got[0] == wire.LEAVE:
            self._told_to_leave(got[1])
            raise wire.WireError("left_pair")
        self.peer_seen = self.clock()
        return got

    def _leave_body(self) -> dict[str, Any]:
        return {"by": self.me.name, "masters": [self.me.name, self.me.peer_name]}

    def _told_to_leave(self, body: Any) -> None:
        why = (f"{body.get('by')} says the masters are now "
               f"{', '.join(str(m) for m in body.get('masters', []))}")
        first = self.left is None
        self.left = why
        if first:
            log.error("master pair: %s is no longer a master of the pair (%s)", self.me.name,
                      why)
            # not in this thread: the reply (or the next heartbeat) must not wait for
            # keepalived to stop
            threading.Thread(target=self.on_leave, args=(why,), name="pair-leave",
                             daemon=True).start()

    def replicate(self, changes: list[Change], now: float) -> None:
        """The committer, after the local commit and before the ACKs: hand the batch to
        the peer and wait for its ack (bounded). Raises ``Unconfirmed`` when the batch
        bound addresses of the peer's half and the peer did not confirm it."""
        if not changes:
            return
        with self._lock:
            if not self.active:
                return  # the standby only applies (its own DHCP answers nobody)
            if self.synced:
                try:
                    mtype, _ = self._call(wire.UPDATE, {"changes": replica.encode(changes),
                                                        "now": now}, self.me.pair.peer_timeout)
                    if mtype != wire.ACK:
                        raise wire.WireError("bad_reply")
                    self.last_sync = self.clock()
                    self.metrics.inc("dsas_master_replicated_total", len(changes))
                    self.on_confirmed(changes)
                    return
                except (OSError, ConnectionError, wire.WireError) as e:
                    if isinstance(e, wire.WireError):
                        self._drop(e.reason)
                    self._interrupt(f"{type(e).__name__}: {e}")
            self.backlog += len(changes)
            if self.backlog_since is None:
                self.backlog_since = self.clock()
            theirs = self._peer_half_bindings(changes)
        if theirs:
            self.on_unconfirmed(theirs)
            raise Unconfirmed(len(theirs))

    def _peer_half_bindings(self, changes: list[Change]) -> list[Lease]:
        return [c.lease for c in changes if isinstance(c, LeasePut) and c.lease.mac
                and c.lease.state == "bound" and self.is_fresh(c.lease)]

    def _interrupt(self, why: str) -> None:
        """(Under the lock) the peer did not answer: go on alone."""
        self._close_link()
        if self.synced:
            log.warning("master pair: %s %s does not answer (%s): communication-interrupted, "
                        "serving renewals and the %s half of the pool alone", self.me.peer_name,
                        self.me.peer_address, why, self.me.side)
        self.synced = False
        self.on_interrupted(self.me.side)

    def retarget(self, me: Me) -> None:
        """Another peer (``dsas master join``): the link to the old one closed; an active
        side is interrupted (own half only) until the new peer has its whole set."""
        with self._lock:
            old = self.me
            try:  # tell the master that leaves (if it hears): it lets the VIP go
                self.me = me
                body = self._leave_body()
                self.me = old
                self._call(wire.LEAVE, body, old.pair.peer_timeout)
            except (OSError, ConnectionError, wire.WireError) as e:
                log.warning("master pair: %s (%s) did not hear that it left the pair (%s): "
                            "if it runs, it is told when it connects", old.peer_name,
                            old.peer_address, e)
            self.former[str(old.peer_address)] = old.peer_name
            self.former.pop(str(me.peer_address), None)
            self.me = me
            self._close_link()
            self.peer_seen, self.peer_status = None, {}
            if self.active:
                self.synced = False
                self.on_interrupted(me.side)

    def set_active(self, active: bool) -> None:
        with self._lock:
            self.active = active
            if active:
                # The peer may have served alone: until it has our whole set and we
                # have seen it answer, we are interrupted (own half only).
                self.synced = False
                self.on_interrupted(self.me.side)
            else:
                self.on_interrupted(None)

    def _link(self) -> None:
        """Heartbeats, and the catch-up of a peer that answers again (when active)."""
        while not self._stop.wait(PING_EVERY):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the link thread must go on
                log.exception("master pair: link tick failed")
            self._write_status()

    def _tick(self) -> None:
        with self._lock:
            # A new connection, or an active side not yet in sync: send our whole set
            # first (MERGE). Either side may have served alone since they last talked.
            if self._codec is None or (self.active and not self.synced):
                try:
                    rows = replica.lease_set(self.store)
                    mtype, _ = self._call(wire.MERGE, {"leases": rows,
                                                       "sha256": replica.digest(rows)},
                                          SYNC_TIMEOUT)
                    if mtype != wire.ACK:
                        raise wire.WireError("bad_reply")
                except (OSError, ConnectionError, wire.WireError):
                    if self.active and self.synced:  # the link dropped while in sync
                        self._interrupt("no answer to the lease set")
                    else:
                        self._close_link()
                    return
                if self.backlog or self.active:
                    log.info("master pair: %s caught up (%d leases, %d change(s) it had "
                             "missed)%s", self.me.peer_name, len(rows), self.backlog,
                             "; in sync" if self.active else "")
                self.backlog, self.backlog_since = 0, None
                self.last_sync = self.clock()
                if self.active:
                    self.synced = True
                    self.on_interrupted(None)
                return
            if self.active and self.synced and self._tables_due():
                return
            try:
                _, body = self._call(wire.PING, self.status(), self.me.pair.peer_timeout)
                self.peer_status = dict(body)
            except (OSError, ConnectionError, wire.WireError):
                self._close_link()
                if self.active and self.synced:
                    self._interrupt("no heartbeat answer")

    def _tables_due(self) -> bool:
        """(Under the lock, active and in sync) send the other state whole when it
        changed since the last send, at most every TABLES_EVERY s. True if sent."""
        now = time.monotonic()
        if now - self._tables_at < TABLES_EVERY:
            return False
        mark = replica.other_fingerprint(self.store)
        if mark == self._tables_mark:
            return False
        tables = replica.other_tables(self.store)
        try:
            # bounded well under SYNC_TIMEOUT: the lock is held, and DHCP ACKs wait for it
            mtype, _ = self._call(wire.TABLES, {"tables": tables, "sha256": _digest(tables)},
                                  max(TABLES_TIMEOUT, 5 * self.me.pair.peer_timeout))
            if mtype != wire.ACK:
                raise wire.WireError("bad_reply")
        except (OSError, ConnectionError, wire.WireError):
            # in sync until now: a peer that cannot take the copy is gone (go on alone; a
            # bare close would leave us "in sync" through every later failed reconnect)
            self._interrupt("no answer to the state copy")
            return True
        self._tables_at, self._tables_mark = now, mark
        self.last_tables_sync = self.clock()
        return True

    # -- resync at start -----------------------------------------------------------------
    def resync(self, wait: float) -> bool:
        """Pull the peer's whole lease set and merge it (sha256 checked), trying for at
        most ``wait`` s. False when the peer did not answer (we start with our own)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                with self._lock:
                    mtype, body = self._call(wire.PULL, {}, SYNC_TIMEOUT)
                    self._close_link()
                if mtype != wire.STATE:
                    raise wire.WireError("bad_reply")
                rows = body["leases"]
                if replica.digest(rows) != body["sha256"]:
                    raise wire.WireError("bad_digest")
                taken = replica.merge(self.store, rows)
                self.resynced = {"at": self.clock(), "leases": len(rows), "taken": taken,
                                 "sha256": body["sha256"]}
                self.last_sync = self.clock()
                log.info("master pair: resynced from %s: %d leases (sha256 %s verified), "
                         "%d newer than ours", self.me.peer_name, len(rows),
                         body["sha256"][:16], taken)
                return True
            except (OSError, ConnectionError, wire.WireError) as e:
                with self._lock:
                    self._close_link()
                if time.monotonic() >= deadline:
                    log.warning("master pair: %s did not answer a resync within %g s (%s): "
                                "starting with our own leases", self.me.peer_name, wait, e)
                    return False
                time.sleep(0.2)

    # -- status --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self.clock()
        lag = 0.0 if self.backlog_since is None else now - self.backlog_since
        return {
            "name": self.me.name, "side": self.me.side,
            "role": "active" if self.active else "standby",
            "address": str(self.me.address), "vip": str(self.me.vip),
            "in_sync": bool(self.active and self.synced),
            "peer": self.me.peer_name, "peer_address": str(self.me.peer_address),
            "peer_reachable": self.peer_seen is not None
                              and now - self.peer_seen < 3 * PING_EVERY + 1,
            "lag_updates": self.backlog, "lag_seconds": round(lag, 3),
            "last_sync": self.last_sync, "last_applied": self.last_applied,
            "last_sync_other": self.last_tables_sync,
            "last_applied_other": self.last_tables_applied,
            "applied": self.applied, "dropped": dict(self.dropped),
            "resynced": self.resynced, "written": now, "pid": os.getpid(),
            "left_pair": self.left,
            "mirror": self.mirror.status() if self.mirror is not None else {},
        }

    def _write_status(self) -> None:
        path = self.state_dir / STATUS_FILE
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.status()))
            tmp.replace(path)
        except OSError:
            pass


def _digest(tables: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(tables, sort_keys=True,
                                     separators=(",", ":")).encode()).hexdigest()


class Unconfirmed(Exception):
    """A batch bound addresses of the peer's half that the peer never confirmed."""


def ask_status(me: Me, key: bytes, timeout: float = 2.0) -> dict[str, Any]:
    """The peer's status, over the channel (for `dsas master status`)."""
    sock = socket.create_connection((str(me.peer_address), me.pair.port), timeout=timeout)
    with sock:
        sock.settimeout(timeout)
        codec = wire.client_handshake(sock, key)
        sock.sendall(codec.seal(wire.STATUS, {}))
        mtype, body = codec.open(wire.read_frame(sock))
        if mtype != wire.PONG:
            raise wire.WireError("bad_reply")
        return dict(body)
