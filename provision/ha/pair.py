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

Return. A master that starts pulls the peer's whole lease set (PULL/STATE, sha256
checked) and merges it before it starts keepalived, so it holds the VIP (and answers
anyone) only with a current store. Whether the returning primary then takes the VIP back
is ``pair.preempt`` (keepalived's preemption; ``nopreempt`` otherwise).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from ..inventory.model import Inventory, MasterPair
from ..observability.metrics import Metrics
from ..policy.leases import Change, Lease, LeasePut
from ..state import StateStore, replica
from ..state.leases import LeaseJournal
from . import wire

log = logging.getLogger(__name__)

ROLE_POLL = 0.1  # s between two looks at whether the VIP is local
PING_EVERY = 0.5  # s between heartbeats on an idle channel
CONNECT_TIMEOUT = 1.0
SYNC_TIMEOUT = 30.0  # s for a whole lease set to cross
TABLES_EVERY = 2.0  # s at most between two copies of the other state (when it changed)
STATUS_FILE = "master-status.json"
KEEPALIVED_CONF = "keepalived-master.conf"
PR_SET_PDEATHSIG = 1


class PairError(Exception):
    pass


@dataclass(frozen=True)
class Me:
    """This master and its peer, from the inventory."""

    side: str  # "primary" | "secondary"
    name: str
    address: IPv4Address
    peer_side: str
    peer_name: str
    peer_address: IPv4Address
    vip: IPv4Address
    network: IPv4Network  # the network of the VIP (both masters are on it)
    pair: MasterPair


def resolve(inv: Inventory, name: str | None = None) -> Me:
    """Which master this is: ``name``, else the master whose address is local here."""
    pair = inv.cluster.pair
    if pair is None or inv.cluster.secondary_master is None:
        raise PairError("the inventory has no master pair (cluster.masters.pair)")
    vip = inv.cluster.master_address
    sides = {"primary": inv.cluster.primary_master, "secondary": inv.cluster.secondary_master}
    net = next(n for n in inv.networks.values() if vip in n.cidr)

    def addr(host: str) -> IPv4Address:
        return inv.hosts[host].addresses[net.name]

    if name is None:
        local = [s for s, h in sides.items() if is_local(addr(h))]
        if len(local) != 1:
            raise PairError("neither master's address is local here: name this master "
                            f"(--master {sides['primary']} or {sides['secondary']})"
                            if not local else "both masters' addresses are local here: "
                            "name this master with --master")
        side = local[0]
    else:
        matches = [s for s, h in sides.items() if h == name]
        if not matches:
            raise PairError(f"{name!r} is not a master of the pair "
                            f"({sides['primary']}, {sides['secondary']})")
        side = matches[0]
    peer = "secondary" if side == "primary" else "primary"
    return Me(side, sides[side], addr(sides[side]), peer, sides[peer], addr(sides[peer]), vip,
              net.cidr, pair)


def is_local(address: IPv4Address) -> bool:
    """Is ``address`` one of this network namespace's addresses (bind() says)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(address), 0))
        except OSError:
            return False
    return True


def key_path(state_dir: Path, pair: MasterPair) -> Path:
    p = Path(pair.key_file)
    return p if p.is_absolute() else state_dir / p


def read_key(state_dir: Path, pair: MasterPair) -> bytes:
    path = key_path(state_dir, pair)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as e:
        raise PairError(f"no pair key {path} ({e.strerror}): make it with `dsas master key` "
                        "on one master and copy it to the other (mode 0600)") from None
    if st.st_mode & 0o077:
        raise PairError(f"the pair key {path} is readable by others: chmod 600 it")
    try:
        return wire.parse_key(data)
    except ValueError as e:
        raise PairError(f"{path}: {e}") from None


def make_key(state_dir: Path, pair: MasterPair) -> tuple[Path, bool]:
    """Write a new pair key (0600) unless one exists; (path, made)."""
    path = key_path(state_dir, pair)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "wb") as f:
        f.write(wire.new_key())
        f.flush()
        os.fsync(f.fileno())
    return path, True


# -- keepalived -------------------------------------------------------------------------
def render_keepalived(me: Me, interface: str) -> str:
    """keepalived.conf holding the master VIP (VRRP), for this master of the pair."""
    prio = 150 if me.side == "primary" else 100
    lines = [
        "# dsas: the master VIP, rendered from the inventory (cluster.masters.pair)",
        "global_defs {",
        f"    router_id dsas-master-{me.name}",
        "    vrrp_garp_master_delay 1",
        "    vrrp_garp_master_refresh 60",
        "}",
        "",
        "vrrp_instance dsas_master {",
        "    state BACKUP",
        f"    interface {interface}",
        f"    virtual_router_id {me.pair.vrid}",
        f"    priority {prio}",
        "    advert_int 1",
    ]
    if not me.pair.preempt:
        lines.append("    nopreempt")
    lines += [
        f"    unicast_src_ip {me.address}",
        "    unicast_peer {",
        f"        {me.peer_address}",
        "    }",
        "    virtual_ipaddress {",
        f"        {me.vip}/{me.network.prefixlen} dev {interface}",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)


def _die_with_parent() -> None:  # in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Keepalived:
    """keepalived (Debian's) as a child of `dsas serve`: it gets SIGTERM when serve dies
    (PR_SET_PDEATHSIG), however serve dies, and then gives the VIP up at once."""

    def __init__(self, state_dir: Path, conf: str, binary: str = "keepalived") -> None:
        self.dir = state_dir
        self.conf = conf
        self.binary = binary
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        path = self.dir / KEEPALIVED_CONF
        path.write_text(self.conf)
        run = self.dir / "keepalived"
        run.mkdir(exist_ok=True)
        log_file = open(self.dir / "keepalived.log", "ab")  # noqa: SIM115 - the child's
        try:
            self.proc = subprocess.Popen(
                [self.binary, "-n", "-l", "-D", "-G", "-P", "-f", str(path),
                 "-p", str(run / "keepalived.pid"), "-r", str(run / "vrrp.pid"),
                 "-c", str(run / "checkers.pid")],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        except OSError as e:
            raise PairError(f"cannot start keepalived: {e}") from None
        finally:
            log_file.close()
        log.info("master pair: keepalived started (pid %d, %s)", self.proc.pid, path)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


# -- the replicator ---------------------------------------------------------------------
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
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), name="pair-conn",
                             daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(SYNC_TIMEOUT)
            try:
                codec = wire.server_handshake(conn, self._key)
            except wire.WireError as e:
                self._drop(e.reason)
                log.warning("master pair: refused a connection: %s", e.reason)
                return
            except (OSError, ConnectionError):
                return
            while not self._stop.is_set():
                try:
                    mtype, body = codec.open(wire.read_frame(conn))
                except wire.WireError as e:
                    self._drop(e.reason)
                    log.warning("master pair: dropped a frame (%s); closing", e.reason)
                    return
                except (OSError, ConnectionError):
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
        if mtype in (wire.PING, wire.STATUS):
            if mtype == wire.PING:
                self.peer_status = dict(body)
            return wire.PONG, self.status()
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
        self.peer_seen = self.clock()
        return got

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
            mtype, _ = self._call(wire.TABLES, {"tables": tables, "sha256": _digest(tables)},
                                  SYNC_TIMEOUT)
            if mtype != wire.ACK:
                raise wire.WireError("bad_reply")
        except (OSError, ConnectionError, wire.WireError):
            self._close_link()
            return False
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
                 resync_wait: float = 10.0) -> None:
        self.me = me
        self.replicator = Replicator(me, key, store, metrics, state_dir)
        self.role = Role(me.vip, self._role_changed)
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
        self.replicator.start()
        return self.replicator.resync(self.resync_wait)

    def start_vip(self) -> None:
        self.role.start()
        if self.keepalived is not None:
            self.keepalived.start()

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
        self.replicator.stop()
