"""The DHCP service: receive -> decode -> ask the policy -> make leases durable -> send.

One UDP socket per interface, bound to port 67 (and 4011 in ProxyDHCP mode) with
SO_BINDTODEVICE, so broadcasts leave through the interface the request came in on
(PXE-CLIENTS.md 5). The loop thread serves every socket: each wake-up drains what is
queued (up to ``BATCH`` datagrams per socket), decides every request and sends the
replies that need no disk (OFFERs: RFC 2131 4.3.1). ACKs go with their lease changes to
the committer thread, which writes everything queued in one fsync'd sqlite transaction
and only then sends them (group commit): an ACK never leaves before its lease is on
disk, a busy server pays one fsync per batch, and the loop keeps deciding meanwhile.
Lazy changes (releases, declines, discovered machines) ride along with the next commit
or are flushed within ``LAZY_FLUSH`` seconds. The batches and the committer are
``provision.services.dhcp_batch``.
"""

from __future__ import annotations

import logging
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from .. import layout
from ..inventory.model import Inventory
from ..observability.logsafe import safe
from ..observability.metrics import Metrics
from ..policy.dhcp import PXE_PORT, SERVER_PORT, Decision, DhcpPolicy, DhcpSettings, Link
from ..policy.leases import Change, Lease, LeasePut, LeaseStore, LeaseTable, Sighting
from ..policy.presence import SETUP_COMMAND, LoaderPresence
from ..protocol import dhcp_options as o
from ..protocol.dhcp import DhcpDecodeError, DhcpEncodeError, DhcpPacket, decode, encode
from ..state.leases import LeaseJournal
from . import dhcp_steer, dhcp_workers
from .base import ServeContext, Service
from .dhcp_batch import LAZY_FLUSH, Batch, Committer, Endpoint
from .dhcp_socket import ANCILLARY, addressed_to, bind_interface, interface_address

__all__ = ["DhcpService", "create", "interface_address"]

log = logging.getLogger(__name__)

MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: the enum's & costs more than a decode step
MAX_DATAGRAM = 1500  # larger requests are dropped unparsed ("oversized")
RECV_BUFFER = 4096  # with MSG_TRUNC, anything larger is still seen as oversized
BATCH = 256  # datagrams decided per commit at most
LOGGED_MACS = 10_000  # MACs remembered for "log once per MAC"
POOL_GAUGE_EVERY = 2.0  # seconds between two updates of dsas_dhcp_pool_free
METRICS_EVERY = 0.1  # seconds the loop's counters may wait before they reach /metrics
WARN_EVERY = 10.0  # seconds between two warnings that new MACs are being rate-limited
MACHINE_LINES = 50  # new machines logged one by one per WARN_EVERY; the rest are summed up


class DhcpService(Service):
    """The DHCPv4 (and ProxyDHCP) service."""

    name = "dhcp"

    def __init__(self, ctx: ServeContext, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx)
        self.metrics: Metrics = ctx.metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._committer: Committer | None = None
        self._endpoints: list[Endpoint] = []
        self._selector: selectors.DefaultSelector | None = None
        self._logged: set[str] = set()  # MACs logged once (unknown or discovered)
        self._pool_gauge_at = 0.0
        self._limited = 0  # new MACs rate-limited since the last warning
        self._warned_at = -WARN_EVERY
        self._machine_lines = 0  # new machines logged one by one in this interval
        self._unlogged = 0  # and those only counted, for the summary line
        self._lines_at = time.monotonic()
        self.policy: DhcpPolicy | None = None
        self._presence = LoaderPresence(ctx.boot_root)
        self._workers: list[subprocess.Popen[bytes]] = []  # the other DHCP workers

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> None:
        journal = LeaseJournal(self.ctx.store)
        if self.ctx.dhcp_workers > 1:  # the workers' commits take turns (LeaseJournal)
            journal.take_turns(self.ctx.state_dir / "dhcp-commit.lock")
        table = LeaseTable(journal.load())
        loaders = self._presence.current()
        workers = self.ctx.dhcp_workers
        rate = self.ctx.discovery_rate / workers  # each worker's bucket: its share
        settings = DhcpSettings(discovery=self.ctx.discovery, proxy=self.ctx.proxy,
                                http_port=self.ctx.http_port, loaders=loaders,
                                new_mac_rate=rate, new_mac_burst=max(1, int(rate * 4)),
                                share=(self.ctx.dhcp_worker, workers) if workers > 1 else None)
        self.policy = DhcpPolicy(self.ctx.inventory, table, settings)  # serve logs what's missing
        self._journal = journal
        committed: LeaseStore = journal
        pair = self.ctx.pair
        if pair is not None:  # one master of a pair: replicate, answer only while active
            committed = _Replicating(journal, pair.replicator)
            self._hook_pair(pair)
        self.metrics.set("dsas_dhcp_leases", len(table))
        self.metrics.describe("dsas_dhcp_pool_free",
                              "Free addresses of each discovery pool in use, by network")
        self._selector = selectors.DefaultSelector()
        ports = [SERVER_PORT, PXE_PORT] if self.ctx.proxy else [SERVER_PORT]
        try:
            for ifname in self.ctx.interfaces:
                address, net = interface_address(ifname)
                if pair is not None and pair.me.vip in net:
                    address = pair.me.vip  # server id, next-server, boot URLs: the VIP
                for port in ports:
                    sock = bind_interface(ifname, port, reuseport=workers > 1)
                    if workers > 1 and self.ctx.dhcp_worker == 0:
                        dhcp_steer.attach(sock, workers)  # the first of its group
                    ep = Endpoint(sock, Link(ifname, address, net, port))
                    self._endpoints.append(ep)
                    self._selector.register(sock, selectors.EVENT_READ, ep)
                log.info("dhcp listening on %s (%s, ports %s)%s%s", ifname, address,
                         "/".join(map(str, ports)), " proxy" if self.ctx.proxy else "",
                         " discovery" if self.ctx.discovery else "")
            if workers > 1 and self.ctx.dhcp_worker == 0:
                self._workers = dhcp_workers.start_all(self.ctx)  # bound after ours, in order
                log.info("dhcp: %d workers serve the ports, each machine by its MAC "
                         "(pids %s and ours)", workers,
                         ",".join(str(w.pid) for w in self._workers))
        except OSError:
            self._close()
            raise
        self._stop.clear()
        self._committer = Committer(committed, self._send, self.metrics, self._clock,
                                    lambda: len(table))
        self._committer.start()
        self._thread = threading.Thread(target=self._serve, name="dhcp", daemon=True)
        self._thread.start()

    # -- one master of a pair (issue 18) ------------------------------------------
    def _hook_pair(self, pair: Any) -> None:
        rep = pair.replicator
        assert self.policy is not None
        self.policy.me = pair.me.side
        policy = self.policy
        rep.on_interrupted = self._interrupted
        rep.on_applied = self._peer_applied
        rep.on_unconfirmed = self._unconfirmed
        rep.is_fresh = lambda lease: policy.fresh.get(lease.ip) == lease.mac
        rep.on_confirmed = self._confirmed
        pair.listeners.append(self._role)
        if pair.role.active and not rep.active:  # the VIP came before this service
            self._role(True)
            rep.set_active(True)
        elif rep.active and not rep.synced:
            self._interrupted(pair.me.side)

    def _reload_table(self) -> None:
        """(Under the lock) the lease table from the store: what the peer sent is in it."""
        assert self.policy is not None
        side, mclt, whole = self.policy.side, self.policy.mclt, self.policy.whole_after
        self.policy.interrupted(None)
        self.policy.table = LeaseTable(self._journal.load())
        if side is not None:
            self.policy.interrupted(side, mclt, whole)
        self.metrics.set("dsas_dhcp_leases", len(self.policy.table))

    def _role(self, active: bool) -> None:
        if active:
            with self._lock:
                self._reload_table()
        self.metrics.set("dsas_master_active", int(active))

    def _interrupted(self, side: str | None) -> None:
        with self._lock:
            assert self.policy is not None
            pair = self.ctx.pair.me.pair
            mclt = float(pair.mclt) if side is not None else 0.0
            whole = self.policy.whole_after if self.policy.side is not None else (
                time.time() + mclt if pair.auto_partner_down else None)
            if whole is not None and self.policy.side is None and side is not None:
                log.warning("master pair: alone; auto_partner_down: the whole pool in %g s "
                            "(MCLT) unless the peer answers first", mclt)
            self.policy.interrupted(side, mclt, whole)
        self.metrics.set("dsas_master_interrupted", int(side is not None))

    def _peer_applied(self, changes: list[Change]) -> None:
        if self.ctx.pair is not None and self.ctx.pair.active:  # rare: both were active
            with self._lock:
                self._reload_table()

    def _confirmed(self, changes: list[Change]) -> None:
        with self._lock:
            assert self.policy is not None
            fresh = self.policy.fresh
            if fresh:
                for c in changes:
                    if isinstance(c, LeasePut):
                        fresh.pop(c.lease.ip, None)

    def _unconfirmed(self, leases: list[Any]) -> None:
        """(The committer) bindings of the peer's half the peer never heard of: forget
        them (their ACKs are withheld; the clients retry into our own half)."""
        dels: list[Change] = []
        with self._lock:
            assert self.policy is not None
            for lease in leases:
                dels += self.policy.table.drop(lease.ip, lease.mac)
                self.policy.fresh.pop(lease.ip, None)
        if dels:
            self._journal.commit(dels, self._clock())

    def stop(self) -> None:
        dhcp_workers.stop_all(self._workers)
        self._workers = []
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._committer is not None:
            self._committer.finish()
            self._committer = None
        self._close()

    def _close(self) -> None:
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for ep in self._endpoints:
            ep.sock.close()
        self._endpoints.clear()

    def alive(self) -> bool:
        return (self._thread is not None and self._thread.is_alive()
                and self._committer is not None and self._committer.is_alive()
                and dhcp_workers.all_alive(self._workers))

    def reload(self, inventory: Inventory) -> None:
        dhcp_workers.reload_all(self._workers)  # each reads the file itself
        if self.policy is not None:
            with self._lock:
                self.policy.reload(inventory)

    # -- the loop ------------------------------------------------------------------
    def _serve(self) -> None:
        assert self._selector is not None and self._committer is not None
        lazy: list[Change] = []  # decided, not urgent: handed over with the next durable
        lazy_since = 0.0
        counts: dict[tuple[str, str, str], int] = {}  # not yet on /metrics
        sent: dict[str, int] = {}
        counted_at = 0.0
        while not self._stop.is_set():
            ready = self._selector.select(timeout=0.5)
            batch = Batch(counts, sent)
            for key, _ in ready:
                self._drain(key.data, batch)
            now = time.monotonic()
            if now - counted_at >= METRICS_EVERY:  # before the replies: a client that
                self._count(counts, sent)  # got one sees its request counted
                counted_at = now
            for ep, decision, source in batch.now:
                self._send(ep, decision, source, sent)
            if batch.changes:
                if not lazy:
                    lazy_since = now
                lazy += batch.changes
            # Lazy changes wait in this thread (no wake-up of the committer for them)
            # until a batch needs the disk, or LAZY_FLUSH. One list, in decision order.
            if lazy and (batch.durable or now - lazy_since >= LAZY_FLUSH):
                self._committer.submit(lazy, True, batch.after_commit)  # due: commit now
                lazy = []
            self._watch_pools(now)
        self._count(counts, sent)
        if lazy:
            self._committer.submit(lazy, False, [])

    def _count(self, counts: dict[tuple[str, str, str], int], sent: dict[str, int]) -> None:
        """Put the loop's counters on /metrics (every METRICS_EVERY: one Metrics.inc
        per series, not per packet) and empty them."""
        for (name, label, value), n in counts.items():
            self.metrics.inc(name, n, **{label: value})
        for kind, n in sent.items():
            self.metrics.inc("dsas_dhcp_sent_total", n, type=kind)
        self._limited += counts.get(
            ("dsas_dhcp_dropped_total", "reason", "discovery_rate_limited"), 0)
        counts.clear()
        sent.clear()

    def _watch_pools(self, now: float) -> None:
        """Free pool addresses on /metrics; a warning (once per interval) while new
        machines are being rate-limited, so a discovery flood is visible."""
        if now - self._lines_at >= WARN_EVERY:
            if self._unlogged:
                log.info("dhcp: %d more new machine(s) in the last %.0f s, not logged one by "
                         "one (`dsas discovered` lists those discovered)", self._unlogged,
                         now - self._lines_at)
            self._machine_lines, self._unlogged, self._lines_at = 0, 0, now
        if self._limited and now - self._warned_at >= WARN_EVERY:
            log.warning("dhcp: %d DISCOVER/REQUEST(s) from new machines rate-limited "
                        "(over %g new MACs/s; a flood of forged MACs?)", self._limited,
                        self.ctx.discovery_rate)
            self._limited, self._warned_at = 0, now
        if self.ctx.discovery and now - self._pool_gauge_at >= POOL_GAUGE_EVERY:
            self._pool_gauge_at = now
            with self._lock:
                assert self.policy is not None
                free = self.policy.pool_free(self._clock())
            for network, n in free.items():
                self.metrics.set("dsas_dhcp_pool_free", n, network=network)

    def _drain(self, ep: Endpoint, batch: Batch) -> None:
        for _ in range(BATCH):
            try:
                data, anc, flags, source = ep.sock.recvmsg(RECV_BUFFER, ANCILLARY,
                                                           socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop("recv_error", None, repr(e))
                return
            decision = self._decide(ep, data, anc, flags, batch)
            if decision is None:
                continue
            if decision.durable:
                batch.changes += decision.durable
                batch.changes += decision.lazy
                batch.durable = True
                if decision.reply is not None:  # an ACK: sent once its lease is on disk
                    batch.after_commit.append((ep, decision, source))
            else:
                if decision.lazy:
                    batch.changes += decision.lazy
                if decision.reply is not None:  # an OFFER needs no disk (RFC 2131 4.3.1)
                    batch.now.append((ep, decision, source))

    def _decide(self, ep: Endpoint, data: bytes, anc: list[tuple[int, int, bytes]],
                flags: int, batch: Batch) -> Decision | None:
        if flags & MSG_TRUNC or len(data) > MAX_DATAGRAM:
            self._drop("oversized", data)
            return None
        try:
            req = decode(data)
        except DhcpDecodeError as e:
            self._drop(e.kind, data, e.reason)
            return None
        mtype = o.MESSAGE_TYPE_NAMES.get(req.message_type or 0, "BOOTP")
        batch.count("dsas_dhcp_received_total", "type", mtype)
        if self.ctx.pair is not None and not self.ctx.pair.active:
            batch.count("dsas_dhcp_dropped_total", "reason", "standby")  # the active answers
            return None
        link = ep.unicast if addressed_to(anc, ep.packed) else ep.link
        try:
            with self._lock:
                assert self.policy is not None
                loaders = self._presence.current()
                if loaders is not self.policy.settings.loaders:
                    self._loaders_now(self.policy.settings.loaders or frozenset())
                decision = self.policy.handle(req, link, self._clock())
        except Exception:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("dhcp policy failed mac=%s xid=%#x", req.mac, req.xid)
            self._drop("internal_error", data)
            return None
        if decision.drop is not None:
            batch.count("dsas_dhcp_dropped_total", "reason", decision.drop)
        self._log(req, link, decision)
        decision.max_size = req.max_message_size
        return decision

    def _send(self, ep: Endpoint, decision: Decision, source: tuple[str, int],
              sent: dict[str, int]) -> None:
        assert decision.reply is not None and decision.to is not None
        try:
            wire = encode(decision.reply, decision.max_size)
        except DhcpEncodeError as e:
            self._drop("encode_error", None, str(e))
            return
        to = decision.to
        dest = source if to.sockaddr is None else to.sockaddr
        try:
            ep.sock.sendto(wire, dest)
        except OSError as e:
            self.metrics.inc("dsas_dhcp_send_errors_total")
            log.warning("dhcp: send to %s:%s on %s failed: %s mac=%s xid=%#x", dest[0],
                        dest[1], ep.link.interface, e, decision.reply.mac, decision.reply.xid)
            return
        kind = decision.kind
        sent[kind] = sent.get(kind, 0) + 1

    def _loaders_now(self, before: frozenset[str]) -> None:
        """Offer the loaders the boot root has now; say which went or came."""
        assert self.policy is not None
        now = self._presence.current()
        self.policy.settings = replace(self.policy.settings, loaders=now)
        for name in sorted(before - now):
            if name == layout.LOADER_EFI_ARM64:
                continue  # optional: Debian 12 ships none
            log.warning("dhcp: %s is missing from %s: not offered to the machines that need "
                        "it; `%s --boot-root %s` puts it there", name, self.ctx.boot_root,
                        SETUP_COMMAND, self.ctx.boot_root)
        for name in sorted(now - before):
            log.info("dhcp: %s is in %s now: offered", name, self.ctx.boot_root)

    # -- accounting ----------------------------------------------------------------
    def _drop(self, reason: str, data: bytes | None, detail: str = "") -> None:
        self.metrics.inc("dsas_dhcp_dropped_total", reason=reason)
        if log.isEnabledFor(logging.DEBUG):
            mac = ":".join(f"{b:02x}" for b in data[28:34]) if data and len(data) >= 34 else "?"
            log.debug("dhcp drop reason=%s mac=%s %s", reason, mac, safe(detail))

    def _log(self, req: DhcpPacket, link: Link, d: Decision) -> None:
        if d.drop is not None:
            if d.drop == "unknown_mac" and self._first_time(req.mac):
                log.info("dhcp: ignoring unknown machine mac=%s interface=%s arch=%s "
                         "vendor=%s hostname=%s (not in the inventory; discovery is off)",
                         req.mac, link.interface, req.client_arch, _client(req.vendor_class),
                         _client(req.options.get(o.HOST_NAME)))
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("dhcp drop reason=%s mac=%s xid=%#x", d.drop, req.mac, req.xid)
            return
        if d.note:
            log.warning("dhcp: %s host=%s mac=%s xid=%#x interface=%s", d.note, d.host or "-",
                        req.mac, req.xid, link.interface)
        if d.reply is None:
            return
        if not d.host and req.mac not in self._logged and any(
                isinstance(c, Sighting) for c in d.lazy) and self._first_time(req.mac):
            log.info("dhcp: discovered machine mac=%s interface=%s arch=%s vendor=%s "
                     "hostname=%s client_id=%s", req.mac, link.interface, req.client_arch,
                     _client(req.vendor_class), _client(req.options.get(o.HOST_NAME)),
                     safe((req.client_id or b"").hex()) or "-")
        # Inventory hosts: one line per lease event. The pool: debug (a flood of unknown
        # machines must not flood the log; each is logged once above).
        level = logging.INFO if d.host and (d.kind in ("ACK", "NAK") or d.state == "proxy") \
            else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "dhcp %s %s host=%s mac=%s xid=%#x state=%s interface=%s file=%s",
                    d.kind, d.reply.yiaddr, d.host or "-", req.mac, req.xid, d.state,
                    link.interface, safe(d.reply.file) or "-")

    def _first_time(self, mac: str) -> bool:
        """Log this machine now? Once per MAC, and at most ``MACHINE_LINES`` new
        machines per interval (a flood of forged MACs is summed up in one line)."""
        if mac in self._logged:
            return False
        if len(self._logged) >= LOGGED_MACS:
            self._logged.clear()
        self._logged.add(mac)
        if self._machine_lines >= MACHINE_LINES:
            self._unlogged += 1
            return False
        self._machine_lines += 1
        return True


class _Replicating:
    """The committer's journal on a master of a pair: the local store, then the peer
    (before the batch's ACKs; ``Replicator.replicate``)."""

    def __init__(self, journal: LeaseJournal, replicator: Any) -> None:
        self._journal = journal
        self._replicator = replicator

    def load(self) -> Iterator[Lease]:
        return self._journal.load()

    def commit(self, changes: list[Change], now: float) -> None:
        self._journal.commit(changes, now)
        self._replicator.replicate(changes, now)


def _client(value: bytes | None) -> str:
    """A client-supplied option for a log line: escaped (logsafe), '-' when absent."""
    return safe(value) if value else "-"


def create(ctx: ServeContext) -> Service:
    return DhcpService(ctx)
