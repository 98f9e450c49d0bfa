"""The DNS service: UDP and TCP loops around the zone's ``Responder``.

receive -> ``Responder.handle`` (decode, ask the zone, encode) -> send; a query for
a name outside our zones goes to the forwarders (when configured) on a small
thread pool, and a failed forward is answered SERVFAIL. Anything that goes wrong
with one packet is counted and logged (rate-limited) and the loop goes on.

``reload(inventory)`` builds the new zone beside the running one and swaps one
reference: a query is answered by the old or the new zone, never by neither.
The SOA serial is the reload time in seconds, and always above the last one.
One forwarded query is ``provision.services.dns_forward``; batched UDP is
``provision.services.dns_batch``.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dnslib import RCODE

from .. import proc
from ..inventory.model import Inventory
from ..observability.logsafe import safe
from ..policy.dns import SERVER_UDP_SIZE, Zone
from ..policy.dns_wire import (
    ANSWER,
    FORWARD,
    MAX_QUERY,
    Outcome,
    Responder,
    servfail,
)
from .base import ServeContext, Service
from .dns_batch import BatchSocket, available
from .dns_forward import RECV_SIZE, Upstream, ask, question_name, recv_exact

log = logging.getLogger(__name__)
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)

SEND_SIZE = SERVER_UDP_SIZE  # the largest UDP reply we send (cached ones never exceed it)
TCP_IDLE = 10.0  # seconds a TCP client may stay silent (RFC 7766 section 6.2.3)
# Seconds from waiting for a TCP message to having all of it (length and body): one total
# deadline, so a client trickling a byte now and then cannot hold a slot (issue 13).
TCP_MESSAGE = TCP_IDLE
TCP_CLIENTS = 64  # concurrent TCP connections; more are closed at once
TCP_PER_CLIENT = 8  # concurrent TCP connections from one address; more are closed at once
FORWARD_TIMEOUT = 2.0  # seconds for one forwarded query, all upstreams together
FORWARD_WORKERS = 8
FORWARD_PENDING = 256  # queued forwards beyond this are answered SERVFAIL at once
WARN_EVERY = 10.0  # seconds between two warnings of the same kind

M_QUERIES = "dsas_dns_queries_total"
M_DROPPED = "dsas_dns_dropped_total"
M_MALFORMED = "dsas_dns_malformed_total"
M_TRUNCATED = "dsas_dns_truncated_total"
M_FORWARDED = "dsas_dns_forwarded_total"
M_FORWARD_FAILED = "dsas_dns_forward_failures_total"
M_ERRORS = "dsas_dns_errors_total"
M_RELOADS = "dsas_dns_reloads_total"
M_TCP_TIMEOUTS = "dsas_dns_tcp_timeouts_total"
HELP = {
    M_QUERIES: "DNS queries answered, by rcode (flushed about once a second)",
    M_DROPPED: "DNS datagrams dropped unanswered, by reason (short, oversized, response, ...)",
    M_MALFORMED: "DNS queries that did not decode, answered FORMERR (or NOTIMP)",
    M_TRUNCATED: "DNS answers sent with TC=1 because they did not fit the UDP size",
    M_FORWARDED: "DNS queries answered by a forwarder",
    M_FORWARD_FAILED: "DNS queries answered SERVFAIL because no forwarder answered in time",
    M_ERRORS: "DNS internal, send or receive errors",
    M_RELOADS: "DNS zone reloads",
    M_TCP_TIMEOUTS: "DNS TCP connections closed: idle, or a message not whole in time",
}


def create(ctx: ServeContext) -> DnsService:
    forwarders = tuple(Upstream.parse(u) for u in ctx.dns_forwarders)
    return DnsService(ctx, forwarders, ctx.dns_forward_timeout)


class DnsService(Service):
    """The DNS service (UDP and TCP) for the cluster's zone."""

    name = "dns"

    def __init__(self, ctx: ServeContext, forwarders: tuple[Upstream, ...] = (),
                 forward_timeout: float = FORWARD_TIMEOUT, batch: bool | None = None):
        super().__init__(ctx)
        self.batch = available() if batch is None else batch  # recvmmsg/sendmmsg loop
        self.forwarders = forwarders
        self.forward_timeout = forward_timeout
        self.serial = 0
        self.responder = self._build(ctx.inventory)
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None
        self._pending = threading.BoundedSemaphore(FORWARD_PENDING)
        self._tcp_slots = threading.BoundedSemaphore(TCP_CLIENTS)
        self._tcp_conns: set[socket.socket] = set()
        self._tcp_lock = threading.Lock()
        self._tcp_per_client: dict[str, int] = {}  # address -> open connections
        self._counts = [0] * 32  # answers by rcode, written by the loops only
        self._flushed = [0] * 32
        self._warned: dict[str, float] = {}

    # -- life cycle ----------------------------------------------------------

    def addresses(self) -> list[str]:
        """Where to listen: every IPv4 address of the --interface list, else bind_address."""
        if self.ctx.interfaces:
            found = [a for itf in self.ctx.interfaces for a in interface_addresses(itf)]
            vip = str(self.ctx.pair.me.vip) if self.ctx.pair is not None else None
            return found + [vip] if vip and vip not in found else found  # issue 18
        return [str(self.ctx.bind_address or "0.0.0.0")]

    def start(self) -> None:
        for metric, text in HELP.items():
            self.ctx.metrics.describe(metric, text)
        port = self.ctx.dns_port
        addrs = self.addresses()
        if not addrs:
            raise OSError(f"no IPv4 address on {', '.join(self.ctx.interfaces)}")
        self._pool = ThreadPoolExecutor(FORWARD_WORKERS, thread_name_prefix="dns-fwd")
        try:
            for addr in addrs:
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._socks.append(udp)
                tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                self._socks.append(tcp)
                if self.ctx.pair is not None and addr == str(self.ctx.pair.me.vip):
                    for s in (udp, tcp):  # the master VIP: bound before it is local
                        s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
                udp.bind((addr, port))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((addr, port))
                tcp.listen(64)
                self._spawn(self._udp_loop, udp, f"dns-udp-{addr}")
                self._spawn(self._tcp_accept, tcp, f"dns-tcp-{addr}")
        except OSError:
            self.stop()
            raise
        log.info("dns: serving %s on port %d (udp, tcp), serial %d, forwarding to %s",
                 ", ".join(addrs), port, self.serial,
                 ", ".join(f"{u.host}:{u.port}" for u in self.forwarders) or "nobody")

    def _spawn(self, target: Callable[[socket.socket], None], sock: socket.socket,
               name: str) -> None:
        t = threading.Thread(target=target, args=(sock,), name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def stop(self) -> None:
        self._stopping.set()
        for s in [*self._socks, *list(self._tcp_conns)]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv/accept
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        for s in self._socks:
            s.close()
        self._socks.clear()
        self._threads.clear()
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.flush_metrics()

    def alive(self) -> bool:
        self.flush_metrics()
        threads = self._threads
        return not self._stopping.is_set() and bool(threads) and all(t.is_alive() for t in threads)

    def reload(self, inventory: Inventory) -> None:
        new = self._build(inventory)
        warmed = new.warm(self.responder)  # the questions clients ask, answered anew
        self.responder = new  # one reference swap: no query is lost
        self.ctx.metrics.inc(M_RELOADS)
        log.info("dns: zone reloaded, serial %d, %d hosts, %d cached answers renewed",
                 self.serial, len(inventory.hosts), warmed)

    def _build(self, inventory: Inventory) -> Responder:
        serial = max(int(time.time()), self.serial + 1) & 0xFFFFFFFF
        zone = Zone(inventory, serial, forwarding=bool(self.forwarders))
        self.serial = serial
        return Responder(zone)

    # -- metrics and warnings --------------------------------------------------

    def flush_metrics(self) -> None:
        """Move the loops' answer counts into ctx.metrics (cheap; called from alive())."""
        for rcode, n in enumerate(self._counts):
            delta = n - self._flushed[rcode]
            if delta:
                self._flushed[rcode] = n
                self.ctx.metrics.inc(M_QUERIES, delta, rcode=RCODE.get(rcode, str(rcode)))

    def _event(self, metric: str, kind: str, peer: object, detail: str = "") -> None:
        self.ctx.metrics.inc(metric, reason=kind)
        now = time.monotonic()
        if now - self._warned.get(kind, -WARN_EVERY) >= WARN_EVERY:
            self._warned[kind] = now
            log.warning("dns: %s from %s %s(further ones for %ds: counted in %s only)",
                        kind, peer, f"{safe(detail)} " if detail else "", WARN_EVERY, metric)

    def _outcome(self, out: Outcome, peer: object) -> None:
        if out.kind == ANSWER:
            self._counts[out.rcode & 31] += 1
            if out.truncated:
                self.ctx.metrics.inc(M_TRUNCATED)
        elif out.kind == FORWARD:
            return  # counted when the forwarder answers, or fails to
        elif out.reply is None:
            self._event(M_DROPPED, out.kind, peer)
        else:
            self._event(M_MALFORMED if out.kind != "error" else M_ERRORS, out.kind, peer)

    # -- UDP -----------------------------------------------------------------

    def _udp_loop(self, sock: socket.socket) -> None:
        if self.batch:
            self._udp_batch_loop(sock)
            return
        recvfrom, counts = sock.recvfrom, self._counts
        while not self._stopping.is_set():
            try:
                data, peer = recvfrom(RECV_SIZE)
            except OSError as e:
                if not self._stopping.is_set():
                    self._event(M_ERRORS, "recv", "-", str(e))
                    time.sleep(0.01)
                continue
            if peer is None:
                continue  # shutdown() woke us
            # fast path: a request seen before gets its cached reply with its own ID
            hit = self.responder.udp_hits.get(data[2:])
            if hit is None:
                self._udp_slow(sock, data, peer)
                continue
            counts[hit[1] & 0xF] += 1  # counted before sending: a client never sees
            try:  # an answer the metrics do not have yet
                sock.sendto(data[:2] + hit, peer)
            except OSError as e:
                self._event(M_ERRORS, "send", peer, str(e))

    def _udp_batch_loop(self, sock: socket.socket) -> None:
        batch = BatchSocket(sock, RECV_SIZE, SEND_SIZE)

        def slow(data: bytes, peer: tuple[str, int]) -> None:
            if self._stopping.is_set():
                return  # shutdown() woke recvmmsg with an empty datagram from 0.0.0.0:0
            self._udp_slow(sock, data, peer)

        try:
            while not self._stopping.is_set():
                try:
                    batch.serve_once(self.responder.udp_hits, self._counts, slow)
                except OSError as e:
                    if not self._stopping.is_set():
                        self._event(M_ERRORS, "recv", "-", str(e))
                        time.sleep(0.01)
                except Exception as e:  # a bug here must not end the loop
                    self._event(M_ERRORS, "internal", "-", repr(e))
        finally:
            batch.close()

    def _udp_slow(self, sock: socket.socket, data: bytes, peer: tuple[str, int]) -> None:
        """Everything but a cache hit: decode, ask the zone, encode (or forward)."""
        try:
            out = self.responder.handle(data, True)
            self._outcome(out, peer)
            if out.reply is not None:
                sock.sendto(out.reply, peer)
            elif out.kind == FORWARD:
                self._forward(data, lambda r: sock.sendto(r, peer), peer, True)
        except Exception as e:  # one bad packet never stops the loop
            self._event(M_ERRORS, "internal", peer, repr(e))

    # -- TCP -----------------------------------------------------------------

    def _tcp_accept(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = sock.accept()
            except OSError as e:
                if not self._stopping.is_set():
                    # EMFILE/ENFILE (descriptors exhausted) and the like: this service
                    # refuses TCP for a moment, counts it and logs it once per interval.
                    self._event(M_ERRORS, "accept", "-", str(e))
                    self._stopping.wait(0.1)
                continue
            if not self._tcp_admit(peer[0]):
                conn.close()
                continue
            try:
                threading.Thread(target=self._tcp_client, args=(conn, peer), daemon=True,
                                 name=f"dns-tcp-{peer[0]}").start()
            except RuntimeError as e:  # no thread to be had: refuse this one, go on
                self._tcp_leave(peer[0])
                conn.close()
                self._event(M_ERRORS, "thread", peer, str(e))

    def _tcp_admit(self, address: str) -> bool:
        """Take a slot for a connection from ``address``: at most TCP_CLIENTS in all and
        TCP_PER_CLIENT from one address, so one client cannot take every slot."""
        with self._tcp_lock:
            mine = self._tcp_per_client.get(address, 0)
            if mine >= TCP_PER_CLIENT:
                busy = "tcp-client-busy"
            elif not self._tcp_slots.acquire(blocking=False):
                busy = "tcp-busy"
            else:
                self._tcp_per_client[address] = mine + 1
                return True
        self._event(M_DROPPED, busy, address)
        return False

    def _tcp_leave(self, address: str) -> None:
        with self._tcp_lock:
            left = self._tcp_per_client.get(address, 1) - 1
            if left > 0:
                self._tcp_per_client[address] = left
            else:
                self._tcp_per_client.pop(address, None)
            self._tcp_slots.release()

    def _tcp_client(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        lock = threading.Lock()

        def send(reply: bytes) -> None:
            with lock:
                conn.sendall(struct.pack("!H", len(reply)) + reply)

        self._tcp_conns.add(conn)
        try:
            conn.settimeout(TCP_IDLE)
            while not self._stopping.is_set():
                data = self._tcp_message(conn, peer)
                if data is None:
                    return
                out = self.responder.handle(data, False)
                self._outcome(out, peer)
                if out.reply is not None:
                    send(out.reply)
                elif out.kind == FORWARD:
                    self._forward(data, send, peer, False)
        except TimeoutError:
            self.ctx.metrics.inc(M_TCP_TIMEOUTS)
            return
        except OSError:
            return
        except Exception as e:
            self._event(M_ERRORS, "internal", peer, repr(e))
        finally:
            self._tcp_conns.discard(conn)
            conn.close()
            self._tcp_leave(peer[0])

    def _tcp_message(self, conn: socket.socket, peer: tuple[str, int]) -> bytes | None:
        """One length-prefixed query (RFC 7766 8), or None: closed or oversized."""
        # One deadline for the whole message: the idle wait, its length and its
        # body (a byte every few seconds never resets it).
        deadline = time.monotonic() + TCP_MESSAGE
        head = recv_exact(conn, 2, deadline)
        if head is None:
            return None
        (length,) = struct.unpack("!H", head)
        if length > MAX_QUERY:
            self._event(M_DROPPED, "oversized", peer, f"tcp length {length}")
            return None
        return recv_exact(conn, length, deadline)

    # -- forwarding ------------------------------------------------------------

    def _forward(self, query: bytes, send: object, peer: object, udp: bool) -> None:
        pool = self._pool
        if pool is None or not self._pending.acquire(blocking=False):
            self._event(M_FORWARD_FAILED, "busy", peer)
            send(servfail(query))  # type: ignore[operator]
            return
        pool.submit(self._forward_one, query, send, peer, udp)

    def _forward_one(self, query: bytes, send: object, peer: object, udp: bool) -> None:
        try:
            reply = self._ask_upstreams(query, udp)
            if reply is None:
                self._event(M_FORWARD_FAILED, "upstream", peer,
                            f"no answer in time for {question_name(query)}")
                reply = servfail(query)
            else:
                self.ctx.metrics.inc(M_FORWARDED)
            send(reply)  # type: ignore[operator]
        except Exception as e:
            self._event(M_ERRORS, "forward", peer, repr(e))
        finally:
            self._pending.release()

    def _ask_upstreams(self, query: bytes, udp: bool) -> bytes | None:
        deadline = time.monotonic() + self.forward_timeout
        for i, up in enumerate(self.forwarders):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            budget = left / (len(self.forwarders) - i)
            try:
                reply = ask(up, query, budget, udp)
            except OSError as e:
                log.debug("dns: upstream %s:%d failed: %s", up.host, up.port, e)
                continue
            if reply is not None:
                return reply
        return None


def interface_addresses(ifname: str) -> list[str]:
    """The IPv4 addresses of one interface (``ip -j addr``), primary first."""
    try:
        out = proc.run(["ip", "-j", "-4", "addr", "show", "dev", ifname], timeout=10,
                       check=False)
    except proc.CommandError as e:  # ip missing or hung: the service cannot start, as below
        raise OSError(f"interface {ifname}: {e}") from None
    if out.returncode != 0:
        raise OSError(f"interface {ifname}: {out.stderr.strip() or 'not found'}")
    return [a["local"] for link in json.loads(out.stdout or "[]")
            for a in link.get("addr_info", []) if a.get("family") == "inet"]
