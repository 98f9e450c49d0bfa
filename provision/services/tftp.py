"""TFTP service: the boot tree over TFTP, read-only, on fbtftp.

Shape (fbtftp's): one listening socket in the main process receives requests;
each accepted read request becomes an ``fbtftp.BaseHandler`` (a
``multiprocessing.Process``) that forks and talks to the client from its own
port. What this module adds to fbtftp, and why:

* no bind in a constructor: ``TftpService.start()`` binds (fbtftp's
  ``BaseServer.__init__`` binds);
* requests are decoded by ``provision.protocol.tftp`` (fbtftp crashes its loop
  on a 1-byte datagram and ignores WRQ silently); WRQ gets ERROR 2;
* names are resolved by ``BootTree.lookup`` *before* forking, so refusals
  (pxelinux probes 8 missing names per boot) cost no process and come back at
  once, with the reason's error code;
* a cap on concurrent transfers: a request over the cap gets ERROR 0 "busy";
  an RRQ repeated byte for byte by a client TID that already has a live
  transfer is dropped (that transfer answers it), so a slow storm does not fork
  twice per client;
* a lean per-block path (the cost of a transfer is its blocks): the file is
  read ahead with one ``preadv`` into a buffer laid out as DATA packets, each
  block leaves with one ``send`` of a view, ACKs land in a fixed buffer on a
  blocking socket timed by SO_RCVTIMEO (no select per block), and the next
  block is read while the ACK is on the wire; counting is done at the end;
* busy polling for the ACK (``TftpSettings.busy_poll`` us, ``dsas serve
  --tftp-busy-poll``): in lock-step, a block's cost is mostly the wake-up of the
  sleeping process (on a VM an idle vCPU halts, so an IPI and a VM exit), so a
  transfer first spins on non-blocking receives, then sleeps; only while fewer
  transfers run than there are CPUs (the listener keeps the count in a page
  shared with every child; with a spinner per CPU, 2 clients on this host took
  twice as long), and a transfer whose client is slower than the budget stops
  polling after ``_Session.POLL_MISSES`` misses in a row;
* the transfer loop: RFC 7440 windowsize, adaptive retransmission (RTT-based,
  exponential backoff, give-up after ``timeout`` s of silence), a client ERROR
  is never answered (fbtftp echoes one), OVMF's size probe (ERROR 8 right after
  the OACK) counts as a probe, not a failure;
* each transfer reports its outcome to the main process over a datagram
  socket, so ``ctx.metrics`` counts transfers, bytes and errors by reason;
* a storm (``batch_from`` transfers already running, the CPU count by default)
  is served by one batched engine process instead of a process per transfer:
  recvmmsg/sendmmsg on one socket for every lock-step octet transfer of a file
  on disk (``provision.services.tftp_batch`` says what it keeps and why).

This module is the main process (the listener and the service); one transfer,
in its child, is ``provision.services.tftp_session``; the batched engine is
``provision.services.tftp_batch``.
"""

from __future__ import annotations

import json
import logging
import mmap
import multiprocessing
import os
import selectors
import socket
import threading
import time
from typing import Any

from fbtftp.base_server import BaseServer

from ..inventory.model import Inventory
from ..observability.logsafe import safe
from ..observability.served import served
from ..policy.boottree import BootFile, BootTree, Refused
from ..protocol import tftp as codec
from ..state import rollout as rollout_pins
from .base import ServeContext, Service
from .dns_batch import available as batch_available
from .tftp_batch import EngineProcess
from .tftp_session import (  # the transfer half (tests import its private names from here)
    NO_FDS,
    TftpSettings,
    Transfer,
    _Blocks,  # noqa: F401
    _LazyData,  # noqa: F401
    _Session,  # noqa: F401
    _skip,  # noqa: F401
)

log = logging.getLogger(__name__)

M_REQUESTS = "dsas_tftp_requests_total"
M_TRANSFERS = "dsas_tftp_transfers_total"
M_BYTES = "dsas_tftp_bytes_total"
M_ERRORS = "dsas_tftp_errors_total"
M_RETRANSMITS = "dsas_tftp_retransmits_total"
M_ACTIVE = "dsas_tftp_active_transfers"
M_SPAWN_SECONDS = "dsas_tftp_spawn_seconds_total"
M_SPAWNS = "dsas_tftp_spawns_total"
M_DUPLICATES = "dsas_tftp_duplicate_requests_total"
M_POLLED = "dsas_tftp_polled_acks_total"  # ACKs caught by busy polling (no sleep)
M_CPU = "dsas_tftp_transfer_cpu_seconds_total"  # CPU time of the transfer processes
M_BATCHED = "dsas_tftp_batched_transfers_total"  # transfers the batched engine ran
M_SECONDS = "dsas_tftp_transfer_seconds"  # histogram: wall time of each transfer, by result
TRANSFER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

# descriptors a transfer's spawn needs in the listener (two pipes of multiprocessing),
# checked free before a spawn: a pipe() failing halfway through would leak the other
_FD_RESERVE = 4


class _Every:
    """Rate limit for a log line: ``due()`` is true at most once per ``interval`` s, and
    ``suppressed`` says how many calls were held back since the last one that was."""

    def __init__(self, interval: float = 10.0):
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return False
        self.last = now
        return True

    def take(self) -> int:
        n, self.suppressed = self.suppressed, 0
        return n


# --------------------------------------------------------------------------
# The listener (main process).


def _batch_settings(ctx: ServeContext) -> dict[str, Any]:
    """TftpSettings' batch fields from ``dsas serve``'s flags (defaults where unset)."""
    if not ctx.tftp_batch:
        return {"batch_engines": 0}
    return {} if ctx.tftp_batch_from is None else {"batch_from": ctx.tftp_batch_from}


class _Engine:
    """A running batched engine (``tftp_batch``): its process, its job socket, and how
    many of its transfers are live."""

    def __init__(self, proc: EngineProcess, jobs: socket.socket):
        self.proc, self.jobs, self.live = proc, jobs, 0


class _Listener(BaseServer):
    """fbtftp's server loop, without binding in the constructor."""

    def __init__(self, service: TftpService, sock: socket.socket,  # noqa: D107
                 more: tuple[socket.socket, ...] = ()):
        # BaseServer.__init__ binds a socket; we take bound ones instead (``more``: the
        # IPv6 one, served by the same loop, under the same limits).
        self._svc = service
        self._listener = sock
        self._more = more
        self._address, self._port = sock.getsockname()[:2]
        self._family = socket.AF_INET
        self._selector = selectors.DefaultSelector()
        for s in (sock, *more):
            self._selector.register(s, selectors.EVENT_READ)
        self._selector.register(service._reports_rx, selectors.EVENT_READ)
        self._should_stop = False
        self._server_stats = None
        self._metrics_timer = None
        self._server_stats_callback = None

    def run(self, run_once: bool = False) -> None:
        failed = _Every()
        while not self._should_stop:
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - one bad datagram must not stop TFTP
                self._svc._error_metric("internal")
                if failed.due():
                    log.exception("tftp: request handling failed (%d more since)",
                                  failed.take())
                time.sleep(0.01)  # a fault that repeats at once must not spin a core
        self._selector.close()

    def run_once(self) -> None:
        for key, _ in self._selector.select(timeout=0.2):
            if key.fileobj is self._listener or key.fileobj in self._more:
                self.on_new_data(key.fileobj)
            else:
                self._svc._on_report()
        self._svc._reap()

    def on_new_data(self, sock: socket.socket | None = None) -> None:
        try:
            data, peer = (sock or self._listener).recvfrom(codec.MAX_REQUEST + 1)
        except OSError:
            return
        self._svc._on_request(data, peer)


class TftpService(Service):
    """The TFTP service: each transfer in a process of its own."""

    name = "tftp"

    def __init__(self, ctx: ServeContext, settings: TftpSettings | None = None):
        super().__init__(ctx)
        self.settings = settings or TftpSettings(
            port=ctx.tftp_port, timeout=ctx.tftp_timeout, max_transfers=ctx.tftp_max_transfers,
            max_per_client=ctx.tftp_max_per_client, busy_poll=ctx.tftp_busy_poll,
            **_batch_settings(ctx))
        self.tree = BootTree(ctx.boot_root, ctx.inventory, templates=ctx.templates)
        self.metrics = ctx.metrics
        self._sock: socket.socket | None = None
        self._sock6: socket.socket | None = None  # on cluster.master_address6, if set
        self._loop: _Listener | None = None
        self._thread: threading.Thread | None = None
        self._workers: dict[int, tuple[multiprocessing.Process, tuple[str, int]]] = {}
        # client TID -> (its live transfer's pid, the RRQ's bytes)
        self._peers: dict[tuple[str, int], tuple[int, bytes]] = {}
        self._reported: set[int] = set()
        self._per_client: dict[str, int] = {}  # client address -> its live transfers
        self._fd_log = _Every()  # descriptor exhaustion: one line per interval
        self._busy_log: dict[str, _Every] = {}  # busy refusals: one line per interval
        self._reports_rx: socket.socket
        self._reports_tx: socket.socket
        # shared with every forked transfer: [0] the number of live transfers
        self._page: mmap.mmap | None = None
        self._active: memoryview | None = None
        # the batched engine (tftp_batch), its job socket, and its live jobs: id -> client
        self._engines: list[_Engine] = []  # running ones only
        self._batched: dict[int, tuple[tuple[str, int], _Engine]] = {}  # id -> client, engine
        self._eid = 0

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        # a rollout's version pins (state.rollout): read in this process, before a fork
        self.tree.image_pins = lambda: rollout_pins.pins_quiet(self.ctx.store)
        addr = str(self.ctx.bind_address or "0.0.0.0")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr, self.settings.port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        a6 = self.ctx.inventory.cluster.master_address6
        if a6 is not None:  # netboot6 hosts: UEFI PXE over IPv6 fetches ipxe.efi here
            sock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock6.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock6.bind((str(a6), self.settings.port))
            except OSError as e:
                sock6.close()
                sock.close()
                self._sock = None
                raise OSError(e.errno, f"tftp: cannot listen on [{a6}]:{self.settings.port}"
                              f" (cluster.master_address6): {e.strerror}; is the address "
                              "configured on this machine?") from None
            self._sock6 = sock6
        self._reports_rx, self._reports_tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._reports_rx.setblocking(False)
        self._page = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous, MAP_SHARED: seen by children
        self._active = memoryview(self._page).cast("i")
        if self.settings.batch_engines > 0 and batch_available():
            for _ in range(self.settings.batch_engines):
                self._start_engine(addr)
        self._loop = _Listener(self, sock, (self._sock6,) if self._sock6 else ())
        self._thread = threading.Thread(target=self._loop.run, name="tftp", daemon=True)
        self._thread.start()
        log.info("tftp: serving %s on %s:%d", self.tree.root, addr, self.settings.port)
        if self._sock6 is not None:
            log.info("tftp: also serving on [%s]:%d", a6, self.settings.port)

    def _start_engine(self, addr: str) -> None:
        """Fork a batched engine; it stops when its job socket is closed."""
        tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        tx.setblocking(False)
        listeners = [s for s in (self._sock, self._sock6) if s is not None]
        others = [e.jobs for e in self._engines]
        proc = EngineProcess(addr, self.settings, rx, self._reports_tx,
                             [*listeners, self._reports_rx, tx, *others])
        try:
            proc.start()
        finally:
            rx.close()
        self._engines.append(_Engine(proc, tx))

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._stop_engines()
        for proc, _ in list(self._workers.values()):
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=2)
        self._workers.clear()
        self._peers.clear()
        self._per_client.clear()
        for s in (self._sock, self._sock6, getattr(self, "_reports_rx", None),
                  getattr(self, "_reports_tx", None)):
            if s is not None:
                s.close()
        if self._active is not None:
            self._active.release()
        if self._page is not None:
            self._page.close()
        self._sock = self._sock6 = self._loop = self._thread = self._active = self._page = None

    def _stop_engines(self) -> None:
        for e in self._engines:
            e.jobs.close()  # the engine's cue to stop
        for e in self._engines:
            e.proc.join(timeout=2)
            if e.proc.is_alive():
                e.proc.terminate()
                e.proc.join(timeout=2)
        self._engines.clear()
        self._batched.clear()

    def reload(self, inventory: Inventory) -> None:
        self.tree.reload(inventory)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def _server_for(self, peer: tuple[Any, ...]) -> tuple[socket.socket, tuple[str, int]]:
        """The listening socket a request from ``peer`` came in on, and its address."""
        if len(peer) == 4 and self._sock6 is not None:
            return self._sock6, self._sock6.getsockname()[:2]
        assert self._sock is not None
        return self._sock, self.address

    # -- requests ---------------------------------------------------------------

    def _on_request(self, data: bytes, peer: tuple[str, int]) -> None:
        req = self._decode(data, peer)
        if req is None:
            return
        self._reap()
        live = self._peers.get(peer)
        if live is not None and live[1] == data:
            # The same RRQ from a TID with a live transfer: the client's retransmission
            # (our OACK or first block is late). That transfer answers; a second process
            # would only add load when the server is already slow (a boot storm). A
            # different request from the same TID (a firmware's size probe, then the
            # download) is served as usual.
            self.metrics.inc(M_DUPLICATES)
            return
        if self._unservable(peer, req):
            return
        if not self._fd_headroom():
            return self._out_of_descriptors(peer, req, "lookup")
        try:
            bootfile = self.tree.lookup(req.filename, peer[0])
        except Refused as r:
            return self._refuse(peer, req, r.reason.tftp_code, r.message, r.reason.key)
        if self._busy(peer, req):
            return
        if not self._fd_headroom():
            return self._out_of_descriptors(peer, req, "spawn")
        try:
            self._spawn(peer, req, bootfile, data)
        except OSError as e:  # fork or pipe refused (EAGAIN, ENOMEM, EMFILE)
            self._out_of_descriptors(peer, req, f"spawn: {e.strerror}")

    def _decode(self, data: bytes, peer: tuple[str, int]) -> codec.Request | None:
        """The request, counted; None when it is malformed (answered if it was an RRQ/WRQ)."""
        try:
            req = codec.decode_request(data)
        except codec.TftpDecodeError as e:
            self._error_metric("malformed")
            log.debug("tftp: malformed request from %s: %s", peer[0], e)
            if len(data) >= 2 and data[1] in (codec.OP_RRQ, codec.OP_WRQ) and data[0] == 0:
                # A request we cannot parse (a NUL inside the name splits it): say so.
                self._send_error(peer, codec.ERR_ILLEGAL_OPERATION, "malformed request")
            return None
        self.metrics.inc(M_REQUESTS, opcode="wrq" if req.opcode == codec.OP_WRQ else "rrq")
        return req

    def _unservable(self, peer: tuple[str, int], req: codec.Request) -> bool:
        """A write, or a mode we do not speak: refused (True)."""
        if req.opcode == codec.OP_WRQ:
            self._refuse(peer, req, codec.ERR_ACCESS_VIOLATION, "read-only server", "write")
            return True
        if req.mode not in codec.MODES:
            self._refuse(peer, req, codec.ERR_ILLEGAL_OPERATION,
                         f"unsupported mode {safe(req.mode, 40)}", "mode")
            return True
        return False

    def _busy(self, peer: tuple[str, int], req: codec.Request) -> bool:
        """Too many transfers, or too many from this address: refused (True)."""
        if self._live() >= self.settings.max_transfers:
            self._refuse(peer, req, codec.ERR_UNDEFINED, "server busy, retry later", "busy")
            return True
        if self._per_client.get(peer[0], 0) >= self.settings.max_per_client:
            self._refuse(peer, req, codec.ERR_UNDEFINED,
                         "server busy: too many transfers from this address", "busy_client")
            return True
        return False

    def _live(self) -> int:
        """Transfers running: forked and batched."""
        return len(self._workers) + len(self._batched)

    def _batch(self, peer: tuple[str, int], req: codec.Request, bootfile: BootFile,
               raw: bytes) -> bool:
        """Hand the transfer to the batched engine, if it is one the engine runs and
        enough others run already (see ``tftp_batch``); False: fork it instead."""
        if (not self._engines or req.mode != "octet" or bootfile.rendered
                or bootfile.size <= 0 or len(peer) != 2
                or self._live() < self.settings.batch_from):
            return False
        s = self.settings
        neg = codec.negotiate(req.options, lambda: bootfile.size, s.max_blksize,
                              s.max_window, s.timeout)
        if neg.windowsize != 1:
            return False
        eid = self._eid = self._eid + 1
        job = {"eid": eid, "peer": [peer[0], peer[1]], "blksize": neg.blksize,
               "oack": codec.encode_oack(neg.oack).hex() if neg.oack else "",
               "rto_max": neg.timeout if neg.timeout is not None else s.rto_max,
               "path": bootfile.path, "host": bootfile.host}
        engine = min(self._engines, key=lambda e: e.live)
        try:
            with bootfile.open() as f:
                socket.send_fds(engine.jobs, [json.dumps(job).encode()], [f.fileno()])
        except (OSError, Refused):  # the engine is behind (its queue is full), or gone
            return False
        engine.live += 1
        self.metrics.inc(M_BATCHED)
        self._batched[eid] = (peer, engine)
        self._peers[peer] = (-eid, raw)
        self._per_client[peer[0]] = self._per_client.get(peer[0], 0) + 1
        self._set_active()
        log.debug("tftp: %s -> %s (%s, host=%s, batched, options=%s)", safe(bootfile.path),
                  peer[0], peer[1], bootfile.host,
                  safe(" ".join(f"{k}={v}" for k, v in req.options.items())))
        return True

    def _spawn(self, peer: tuple[str, int], req: codec.Request, bootfile: BootFile,
               raw: bytes) -> None:
        assert self._sock is not None
        if self._batch(peer, req, bootfile, raw):
            return
        t0 = time.monotonic()
        _, server = self._server_for(peer)
        listeners = [s for s in (self._sock, self._sock6) if s is not None]
        proc = Transfer(server, peer, req, bootfile, self.settings, self._reports_tx,
                        [*listeners, self._reports_rx], self._active)
        proc.daemon = True
        proc.start()  # may raise OSError: nothing is recorded then
        self.metrics.inc(M_SPAWN_SECONDS, time.monotonic() - t0)
        self.metrics.inc(M_SPAWNS)
        assert proc.pid is not None
        self._workers[proc.pid] = (proc, peer)
        self._peers[peer] = (proc.pid, raw)
        self._per_client[peer[0]] = self._per_client.get(peer[0], 0) + 1
        self._set_active()
        log.debug("tftp: %s -> %s (%s, host=%s, mode=%s, options=%s)", safe(bootfile.path),
                 peer[0], peer[1], bootfile.host, safe(req.mode, 40),
                 safe(" ".join(f"{k}={v}" for k, v in req.options.items())))

    def _refuse(self, peer: tuple[str, int], req: codec.Request, code: int, message: str,
                reason: str) -> None:
        """Answer with an ERROR from a fresh port (a new TID, as RFC 1350 wants).

        Busy refusals are what a flood gets: they are logged once per interval."""
        self._error_metric(reason)
        if reason.startswith("busy"):
            every = self._busy_log.setdefault(reason, _Every())
            if every.due():
                log.warning("tftp: refused %s from %s: %s (%s; %d more since)",
                            safe(req.filename, 80), peer[0], message, reason, every.take())
        else:
            log.info("tftp: refused %s from %s: %s (%s)", safe(req.filename, 80), peer[0],
                     safe(message), reason)
        self._send_error(peer, code, message)

    def _send_error(self, peer: tuple[str, int], code: int, message: str) -> None:
        packet = codec.encode_error(code, message)
        listener, server = self._server_for(peer)
        try:
            with socket.socket(listener.family, socket.SOCK_DGRAM) as s:
                s.bind((server[0], 0))
                s.sendto(packet, peer)
            return
        except OSError as e:
            if e.errno not in NO_FDS:
                log.debug("tftp: cannot send error to %s: %s", peer, e)
                return
            self._fd_exhausted(f"error to {peer[0]}")
        # No descriptor for a fresh TID: answer from port 69 rather than not at all (a
        # client takes its first answer's port as the server's TID, and this ends it).
        try:
            listener.sendto(packet, peer)
        except OSError as e:
            log.debug("tftp: cannot send error to %s: %s", peer, e)

    def _fd_headroom(self) -> bool:
        """Whether ``_FD_RESERVE`` descriptors are free (a lookup opens the file, a
        spawn makes two pipes); checked by taking them and giving them back."""
        assert self._sock is not None
        taken: list[int] = []
        try:
            for _ in range(_FD_RESERVE):
                taken.append(os.dup(self._sock.fileno()))
            return True
        except OSError as e:
            if e.errno not in NO_FDS:
                raise
            return False
        finally:
            for fd in taken:
                os.close(fd)

    def _out_of_descriptors(self, peer: tuple[str, int], req: codec.Request,
                            where: str) -> None:
        """Refuse a request the process has no descriptors (or processes) for: the
        client hears "busy", the refusal is counted, one line per interval is logged."""
        self._fd_exhausted(f"{where}, {safe(req.filename, 80)} from {peer[0]}")
        self._send_error(peer, codec.ERR_UNDEFINED, "server busy, retry later")

    def _fd_exhausted(self, what: str) -> None:
        self._error_metric("descriptors")
        if self._fd_log.due():
            log.warning("tftp: out of descriptors or processes, refusing (%s); %d more "
                        "since the last warning", what, self._fd_log.take())

    def _error_metric(self, reason: str) -> None:
        self.metrics.inc(M_ERRORS, reason=reason)

    # -- worker bookkeeping ----------------------------------------------------

    def _on_report(self) -> None:
        for _ in range(256):
            try:
                raw = self._reports_rx.recv(4096)
            except (BlockingIOError, OSError):
                return
            try:
                r = json.loads(raw)
            except ValueError:
                continue
            if "strays" in r:  # the batched engine: datagrams from ports with no transfer
                self.metrics.inc(M_ERRORS, r["strays"], reason="stray")
                continue
            if "eid" in r:
                self._unbatch(int(r["eid"]))
            else:
                self._reported.add(int(r.get("pid", 0)))
            self._count(r)

    def _count(self, r: dict[str, Any]) -> None:
        self.metrics.inc(M_TRANSFERS, result=r["result"])
        self.metrics.inc(M_BYTES, r.get("bytes", 0))
        self.metrics.inc(M_RETRANSMITS, r.get("retransmits", 0))
        self.metrics.inc(M_POLLED, r.get("polled", 0))
        self.metrics.inc(M_CPU, r.get("cpu", 0.0))
        self.metrics.observe(M_SECONDS, r.get("seconds", 0.0), TRANSFER_BUCKETS,
                             result=r["result"])
        if r["result"] in ("failed", "aborted"):
            self._error_metric(r["reason"])
        if r["result"] == "ok":
            served("tftp", r.get("host"), str(r.get("path")), str(r.get("peer")),
                   r.get("bytes", 0), r.get("seconds", 0.0), self.tree.inventory)
        level = {"failed": logging.WARNING, "ok": logging.DEBUG}.get(r["result"], logging.INFO)
        log.log(level, "tftp: %s %s to %s (host=%s): %d bytes, %d retransmits, %.3f s CPU "
                "(%s)", r["result"], safe(r.get("path")), r.get("peer"), r.get("host"),
                r.get("bytes", 0), r.get("retransmits", 0), r.get("cpu", 0.0), r["reason"])

    def _unbatch(self, eid: int) -> None:
        """Forget a batched transfer that ended."""
        got = self._batched.pop(eid, None)
        if got is None:
            return
        peer, engine = got
        engine.live -= 1
        if self._peers.get(peer, (0, b""))[0] == -eid:
            del self._peers[peer]
        left = self._per_client.pop(peer[0], 1) - 1
        if left > 0:
            self._per_client[peer[0]] = left

    def _reap_engines(self) -> None:
        """An engine that died: its transfers are lost (counted); new ones go to the
        others, or are forked when none is left."""
        for e in [e for e in self._engines if e.proc.exitcode is not None]:
            self._on_report()  # what it reported before it died
            lost = [eid for eid, (_, owner) in self._batched.items() if owner is e]
            log.warning("tftp: a batched engine exited (status %s); %d transfers lost",
                        e.proc.exitcode, len(lost))
            for eid in lost:
                self._error_metric("worker_died")
                self._unbatch(eid)
            self._engines.remove(e)
            e.jobs.close()
            e.proc.close()

    def _reap(self) -> None:
        self._reap_engines()
        for pid, (proc, peer) in list(self._workers.items()):
            if proc.exitcode is None:
                continue
            del self._workers[pid]
            if self._peers.get(peer, (0, b""))[0] == pid:
                del self._peers[peer]
            left = self._per_client.pop(peer[0], 1) - 1
            if left > 0:
                self._per_client[peer[0]] = left
            if pid not in self._reported:
                self._on_report()  # the report may still be queued
            if pid not in self._reported:
                self._error_metric("worker_died")
            self._reported.discard(pid)
            proc.close()
        self._set_active()


    def _set_active(self) -> None:
        self.metrics.set(M_ACTIVE, self._live())
        if self._active is not None:
            self._active[0] = self._live()


def create(ctx: ServeContext) -> Service:
    return TftpService(ctx)
