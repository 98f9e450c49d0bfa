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
  socket, so ``ctx.metrics`` counts transfers, bytes and errors by reason.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import mmap
import multiprocessing
import os
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from fbtftp.base_handler import BaseHandler, ResponseData
from fbtftp.base_server import BaseServer

from ..inventory.model import Inventory
from ..observability.logsafe import safe
from ..observability.served import served
from ..policy.boottree import BootFile, BootTree, Refused
from ..protocol import tftp as codec
from .base import ServeContext, Service

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
M_SECONDS = "dsas_tftp_transfer_seconds"  # histogram: wall time of each transfer, by result
TRANSFER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)

_TIMEVAL = struct.Struct("@ll")  # struct timeval for SO_RCVTIMEO (Linux: two longs)
# errnos of descriptor (or kernel memory) exhaustion: refused and counted, never raised
_NO_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
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


@dataclass(frozen=True)
class TftpSettings:
    """Every TFTP setting, with its unit and default."""

    port: int = 69
    timeout: float = 5.0  # s without progress before a transfer is abandoned (slot freed)
    rto_min: float = 0.1  # s, lower bound of the adaptive retransmission timer
    rto_max: float = 1.0  # s, upper bound (exponential backoff stops here)
    max_transfers: int = 128  # concurrent transfer processes; more get ERROR 0 "busy"
    max_per_client: int = 8  # concurrent transfers per client address; more get "busy"
    max_blksize: int = codec.MAX_BLKSIZE  # RFC 2348 upper bound
    max_window: int = 64  # RFC 7440 windowsize we accept (1 disables it)
    # us a transfer polls (non-blocking recv) for the next ACK before it sleeps in a
    # blocking recv, while fewer transfers run than there are CPUs (0: never poll)
    busy_poll: int = 50


# --------------------------------------------------------------------------
# One transfer (runs in the forked child).


class _LazyData(ResponseData):
    """The file's bytes, opened in the child (the parent keeps no descriptor).

    fbtftp's stream interface (``read``/``size``) plus ``preadv_into`` for the data
    path: positioned reads into a caller's buffer, no bytes object per block.
    """

    def __init__(self, bootfile: BootFile, netascii: bool):
        self._file = bootfile
        self._netascii = netascii
        self._reader: BinaryIO | None = None
        self._fd = -1
        self._mem: memoryview | None = None

    def _open(self) -> BinaryIO:
        if self._reader is None:
            if self._netascii:
                with self._file.open() as f:
                    encoded = io.BytesIO(codec.netascii_encode(f.read()))
                self._reader, self._mem = encoded, encoded.getbuffer()
            else:
                self._reader = self._file.open()
                if isinstance(self._reader, io.BytesIO):  # rendered content
                    self._mem = self._reader.getbuffer()
                else:
                    self._fd = self._reader.fileno()
        return self._reader

    def read(self, n: int) -> bytes:
        return self._open().read(n)

    def preadv_into(self, bufs: list[memoryview], offset: int) -> int:
        """Fill ``bufs`` in turn from byte ``offset``; short only at the end of the data."""
        self._open()
        if self._mem is not None:
            pos = offset
            for buf in bufs:
                part = self._mem[pos:pos + len(buf)]
                buf[:len(part)] = part
                pos += len(part)
                if len(part) < len(buf):
                    break
            return pos - offset
        got, total = os.preadv(self._fd, bufs, offset), sum(len(b) for b in bufs)
        while 0 < got < total:  # a short read is the end, unless more comes
            more = os.preadv(self._fd, _skip(bufs, got), offset + got)
            if more <= 0:
                break
            got += more
        return got

    def size(self) -> int:
        if not self._netascii:
            return self._file.size
        self._open()
        assert self._mem is not None  # netascii: encoded in memory
        return len(self._mem)

    def close(self) -> None:
        if self._mem is not None:
            self._mem.release()
            self._mem = None
        if self._reader is not None:
            self._reader.close()


def _skip(bufs: list[memoryview], n: int) -> list[memoryview]:
    """``bufs`` without their first ``n`` bytes."""
    for i, buf in enumerate(bufs):
        if n < len(buf):
            return [buf[n:], *bufs[i + 1:]]
        n -= len(buf)
    return []


class _Blocks:
    """DATA packet ``n`` (1-based) as a view into a read-ahead buffer of packets.

    The buffer is laid out as packets (4-byte header, then ``blksize`` bytes): one
    ``preadv`` fills the data parts of every slot, the headers are written at the
    same time, and a block is sent as one contiguous view, never joined. A block
    outside the buffer (a retransmission across a refill) refills it from there.
    """

    READ_AHEAD = 256 * 1024  # bytes of file per refill (at most IOV_MAX slots)

    def __init__(self, data: _LazyData, blksize: int, read_ahead: int = READ_AHEAD):
        self.data = data
        self.blksize = blksize
        self.slot = codec.HEADER.size + blksize
        slots = min(max(1, read_ahead // blksize), os.sysconf("SC_IOV_MAX"))
        self.buf = memoryview(bytearray(self.slot * slots))
        self.parts = [self.buf[i * self.slot + codec.HEADER.size:(i + 1) * self.slot]
                      for i in range(slots)]
        self.first = self.end = 1  # the block at the start of buf; one past its last slot
        self.valid = 0  # data bytes read into buf

    def packet(self, n: int) -> memoryview:
        if not self.first <= n < self.end:
            self._fill(n)
        i = n - self.first
        off = i * self.slot
        size = min(self.blksize, self.valid - i * self.blksize)
        return self.buf[off:off + codec.HEADER.size + max(size, 0)]

    def _fill(self, n: int) -> None:
        self.valid = self.data.preadv_into(self.parts, (n - 1) * self.blksize)
        self.first, self.end = n, n + len(self.parts)
        for i in range(len(self.parts)):
            codec.HEADER.pack_into(self.buf, i * self.slot, codec.OP_DATA, (n + i) & 0xFFFF)


class Transfer(BaseHandler):
    """One read transfer, forked by fbtftp's process model."""

    def __init__(self, server_addr: tuple[str, int], peer: tuple[str, int],
                 request: codec.Request, bootfile: BootFile, settings: TftpSettings,
                 report: socket.socket, close_in_child: list[socket.socket],
                 active: memoryview | None = None):
        self._bootfile = bootfile
        self._active = active  # [0]: live transfers, kept by the parent in shared memory
        self._request = request
        self._settings = settings
        self._report = report
        self._close_in_child = close_in_child
        options: dict[str, Any] = {"mode": request.mode, "default_timeout": 1,
                                   "retries": 1, **request.options}
        super().__init__(server_addr, peer, request.filename, options, self._noop)

    @staticmethod
    def _noop(stats: Any) -> None:
        pass

    def get_response_data(self) -> ResponseData:
        return _LazyData(self._bootfile, self._request.mode == "netascii")

    def run(self) -> None:  # in the child
        for s in self._close_in_child:
            s.close()
        outcome = {"result": "failed", "reason": "internal", "bytes": 0, "retransmits": 0}
        t0 = time.monotonic()
        try:
            outcome = _Session(self, self._settings).serve()
        except OSError as e:
            if e.errno not in _NO_FDS:
                log.exception("tftp transfer of %s to %s crashed: %s", safe(self._path),
                              self._peer, e)
            else:  # no descriptor for the transfer's socket or file: a refusal, counted
                outcome["reason"] = "descriptors"
            self._abort()
        except Exception as e:  # noqa: BLE001 - reported, never raised into multiprocessing
            log.exception("tftp transfer of %s to %s crashed: %s", safe(self._path),
                          self._peer, e)
            self._abort()
        finally:
            outcome.update(peer=self._peer[0], path=self._bootfile.path,
                           host=self._bootfile.host, pid=os.getpid(),
                           cpu=round(time.process_time(), 6),
                           seconds=round(time.monotonic() - t0, 6))
            try:
                self._report.send(json.dumps(outcome).encode())
            except OSError:
                pass
            if self._response_data:
                self._response_data.close()
            if self._listener:
                self._listener.close()

    def _abort(self) -> None:
        """Tell the client the transfer failed (best effort: there may be no socket)."""
        try:
            self._get_listener().sendto(
                codec.encode_error(codec.ERR_UNDEFINED, "internal error"), self._peer)
        except OSError:
            pass


def _local_drop(e: OSError) -> None:
    """A send refused locally (EPERM from a firewall, ENOBUFS, no route) is a loss
    like any other, repaired by retransmission; anything else is raised."""
    if e.errno not in (errno.EPERM, errno.EACCES, errno.ENOBUFS, errno.EAGAIN,
                       errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH):
        raise e


class _Session:
    """The data path of one transfer: OACK, then windows of DATA until the last ACK.

    Per block: one ``send`` of a view of the read-ahead buffer (laid out as packets)
    and one ``recv_into`` a fixed buffer, first polled (``_wait``), then on a blocking
    socket whose SO_RCVTIMEO is the retransmission timer (set again only when the
    timer changes): no select, no per-block logging or metrics (counted at the end).
    """

    POLL_MISSES = 32  # empty polls in a row after which a transfer only sleeps
    NCPU = len(os.sched_getaffinity(0))

    def __init__(self, h: Transfer, settings: TftpSettings):
        self.h = h
        self.s = settings
        # fbtftp binds it (server address, ephemeral port)
        self.sock: socket.socket = h._get_listener()
        self.sock.connect(h._peer)  # only the client's packets reach us from now on
        self.sock.settimeout(None)  # blocking: SO_RCVTIMEO bounds each wait
        self.timeo = -1.0  # SO_RCVTIMEO now set, s
        self.ack = memoryview(bytearray(512))
        self.data: _LazyData = h._response_data
        self.retransmits = 0
        self.bytes = 0
        self.srtt: float | None = None
        self.polled = 0  # ACKs that busy polling caught

    def serve(self) -> dict[str, Any]:
        neg = codec.negotiate(self.h._request.options, self.data.size,
                              self.s.max_blksize, self.s.max_window, self.s.timeout)
        self.neg = neg
        # RFC 2349 timeout: the client's bound on our retransmission timer (curl asks 6 s);
        # we still retransmit sooner when the measured round trip says so. negotiate()
        # declines a timeout above ours, so no client holds a slot longer than
        # ``give_up``: the total time since the last progress, whatever the backoff.
        self.rto_max = neg.timeout if neg.timeout is not None else self.s.rto_max
        self.give_up = self.s.timeout
        if neg.oack:
            self.h._options = neg.oack
            oack = codec.encode_oack(neg.oack)
            err = self._exchange(lambda: self._send(oack), 0)
            if err is not None:
                return err
        return self._send_file(neg.blksize, neg.windowsize)

    def _send(self, *parts: bytes | memoryview) -> None:
        """Send one datagram (see ``_local_drop``)."""
        try:
            self.sock.sendmsg(parts)
        except OSError as e:
            _local_drop(e)

    def _rto(self, backoff: int) -> float:
        base = self.s.rto_min if self.srtt is None else max(self.s.rto_min, 4 * self.srtt)
        return min(self.rto_max, base * (2.0 ** min(backoff, 16)))

    def _outcome(self, result: str, reason: str) -> dict[str, Any]:
        return {"result": result, "reason": reason, "bytes": self.bytes,
                "retransmits": self.retransmits, "polled": self.polled,
                "blksize": self.neg.blksize,
                "window": self.neg.windowsize}

    def _exchange(self, send: Any, want: int) -> dict[str, Any] | None:
        """Send (the OACK) until ACK ``want`` arrives; a client ERROR here is a probe."""
        send()
        backoff, last_progress = 0, time.monotonic()
        while True:
            left = last_progress + self.give_up - time.monotonic()
            got = self._recv(min(self._rto(backoff), max(left, 0.001)))
            if got is None:
                if time.monotonic() - last_progress > self.give_up:
                    return self._outcome("failed", "timeout")
                backoff += 1
                self.retransmits += 1
                send()
                continue
            op, num, msg = got
            if op == codec.OP_ERROR:
                # OVMF asks for tsize, then aborts with ERROR 8: a probe, not a failure.
                return self._outcome("probe" if num == codec.ERR_OPTION_REFUSED else "aborted",
                                     f"client_error_{num}")
            if op == codec.OP_ACK and num == want:
                return None
            if time.monotonic() - last_progress > self.give_up:
                return self._outcome("failed", "timeout")

    def _set_timeo(self, wait: float) -> None:
        wait = max(wait, 0.001)  # SO_RCVTIMEO 0 would mean "wait forever"
        sec = int(wait)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO,
                             _TIMEVAL.pack(sec, int((wait - sec) * 1e6)))
        self.timeo = wait

    def _recv(self, wait: float) -> tuple[int, int, str] | None:
        """The next well-formed ACK/ERROR from the client, or None after ``wait`` s."""
        deadline = time.monotonic() + wait
        while True:
            if wait != self.timeo:
                self._set_timeo(wait)
            try:
                n = self.sock.recv_into(self.ack)
            except BlockingIOError:  # SO_RCVTIMEO expired
                return None
            except ConnectionRefusedError:  # ICMP port unreachable: the client is gone
                n = -1
            if n >= 0:
                try:
                    return codec.decode_ack_or_error(self.ack[:n])
                except codec.TftpDecodeError:
                    self._send(codec.encode_error(codec.ERR_ILLEGAL_OPERATION, "expected ACK"))
            wait = deadline - time.monotonic()  # not an answer: wait out the rest only
            if wait <= 0:
                return None

    def _send_file(self, blksize: int, window: int) -> dict[str, Any]:
        """DATA in windows until the last ACK (lock-step when ``window`` is 1).

        Ordered for latency: after an in-order ACK the next block, read and sliced
        while the ACK was on the wire, goes out first; the round-trip sample and the
        timer come after, while the client works. Anything else (timeout, ERROR,
        a stale or malformed packet) goes to ``_off_path``.
        """
        blocks = _Blocks(self.data, blksize)
        unpack, clock, full = codec.HEADER.unpack_from, time.monotonic, codec.HEADER.size + blksize
        send, wait, ack = self.sock.send, self._wait, self.ack
        self.spin = self.s.busy_poll * 1000 if self.h._active is not None else 0
        self.misses = 0  # polls in a row that came back empty-handed
        base, nxt, last, last_len = 1, 1, 0, 0  # first unacked, next to send, final (0: unknown)
        ahead: memoryview | None = None  # block nxt, read while waiting
        progressed = False
        self.backoff, self.timed, self.t_sent = 0, 0, 0.0  # timed: RTT probe block (0: none)
        self.rewound = 0  # the base of the last resend a duplicate ACK asked for
        self.last_progress, self.rto = clock(), self._rto(0)
        while True:
            first = nxt
            while nxt < base + window and (not last or nxt <= last):
                pkt = blocks.packet(nxt) if ahead is None else ahead
                ahead = None
                try:
                    send(pkt)
                except OSError as e:
                    _local_drop(e)
                if len(pkt) < full:
                    last, last_len = nxt, len(pkt) - codec.HEADER.size
                nxt += 1
            now = clock()
            if progressed:
                self._progress(now, base)
                progressed = False
            if not self.timed and nxt > first:
                self.timed, self.t_sent = nxt - 1, now
            if ahead is None and (not last or nxt <= last):
                ahead = blocks.packet(nxt)
            k = wait()
            if k >= 4:
                op, num = unpack(ack)
                acked = nxt - 1 - ((nxt - 1 - num) & 0xFFFF)  # absolute block number
                if op == codec.OP_ACK and acked >= base:
                    if last and acked >= last:
                        self.bytes = (last - 1) * blksize + last_len
                        return self._outcome("ok", "ok")
                    base, progressed = acked + 1, True
                    continue
            self.bytes = (base - 1) * blksize  # acked blocks: all full (the last is not acked)
            end = self._off_path(k, blocks, base, nxt, window, now)
            if end is not None:
                return end
            ahead = None  # a resend may have moved the read-ahead buffer

    def _wait(self) -> int:
        """The next datagram into ``self.ack``: its size, -1 when the retransmission
        timer ran out, -2 when the client is gone (ICMP port unreachable).

        Busy polling first, while fewer transfers run than there are CPUs (a CPU is
        left to everything else; a storm only sleeps), until ``POLL_MISSES`` polls in
        a row found nothing (a slow client).
        """
        if self.spin and self.h._active[0] < self.NCPU:  # type: ignore[index]
            k = self._poll(self.spin)
            if k != -3:
                self.misses = 0
                self.polled += 1
                return k
            self.misses += 1
            if self.misses >= self.POLL_MISSES:
                self.spin = 0
        if self.rto != self.timeo:
            self._set_timeo(self.rto)
        try:
            return self.sock.recv_into(self.ack)
        except BlockingIOError:  # SO_RCVTIMEO: the retransmission timer expired
            return -1
        except ConnectionRefusedError:  # ICMP port unreachable: the client is gone
            return -2

    def _poll(self, budget_ns: int) -> int:
        """Non-blocking receives for up to ``budget_ns``: the datagram's size, -2 when
        the client is gone (ICMP port unreachable), -3 when nothing came.

        An ACK usually comes back within tens of microseconds on a LAN; sleeping for it
        costs a wake-up (on a VM an idle vCPU halts: an IPI and a VM exit per block).
        """
        recv_into, ack, clock = self.sock.recv_into, self.ack, time.perf_counter_ns
        end = clock() + budget_ns
        while True:
            try:
                return recv_into(ack, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                if clock() >= end:
                    return -3
            except ConnectionRefusedError:
                return -2

    def _progress(self, now: float, base: int) -> None:
        """After an ACK moved the window: round-trip sample, timer, give-up clock."""
        self.last_progress = now
        if self.timed and base > self.timed:
            # measured after our next send, so a few microseconds long: harmless
            sample = now - self.t_sent
            self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample
            self.timed, self.backoff, self.rto = 0, 0, self._rto(0)
        elif self.backoff:
            self.backoff, self.rto = 0, self._rto(0)

    def _off_path(self, k: int, blocks: _Blocks, base: int, nxt: int, window: int,
                  waiting_since: float) -> dict[str, Any] | None:
        """Whatever is not an in-order ACK; returns the outcome when the transfer ends."""
        now = time.monotonic()
        if now - self.last_progress > self.give_up:
            return self._outcome("failed", "timeout")
        op, num = codec.HEADER.unpack_from(self.ack) if k >= 4 else (-1, -1)
        if op == codec.OP_ERROR:
            return self._outcome("aborted", f"client_error_{num}")
        if k >= 0 and op != codec.OP_ACK:  # short datagram or an opcode a client never sends
            self._send(codec.encode_error(codec.ERR_ILLEGAL_OPERATION, "expected ACK"))
        if k == -1 or now - waiting_since >= self.rto:  # the timer ran out: back off, resend
            self.backoff += 1
            # never wait past the give-up time: it is the total since the last progress
            left = self.last_progress + self.give_up - now
            self.rto = min(self._rto(self.backoff), max(left, 0.001))
            self._resend(blocks, base, nxt)
        elif (op == codec.OP_ACK and window > 1 and num == (base - 1) & 0xFFFF
              and self.rewound != base):
            # RFC 7440: the client saw a gap after base - 1; the window from base goes
            # again, once: the other duplicates of that ACK were sent before our resend
            # reached it (one per out-of-order block, or a flood). If the resend is lost
            # too, the retransmission timer repairs it, with backoff.
            self.rewound = base
            self._resend(blocks, base, nxt)
        # else a lock-step or repeated duplicate ACK: ignored (Sorcerer's Apprentice)
        return None

    def _resend(self, blocks: _Blocks, base: int, nxt: int) -> None:
        self.timed = 0  # Karn: no round-trip sample from a resent block
        for n in range(base, nxt):
            self.retransmits += 1
            self._send(blocks.packet(n))


# --------------------------------------------------------------------------
# The listener (main process).


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
    name = "tftp"

    def __init__(self, ctx: ServeContext, settings: TftpSettings | None = None):
        super().__init__(ctx)
        self.settings = settings or TftpSettings(
            port=ctx.tftp_port, timeout=ctx.tftp_timeout, max_transfers=ctx.tftp_max_transfers,
            max_per_client=ctx.tftp_max_per_client, busy_poll=ctx.tftp_busy_poll)
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

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
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
        self._loop = _Listener(self, sock, (self._sock6,) if self._sock6 else ())
        self._thread = threading.Thread(target=self._loop.run, name="tftp", daemon=True)
        self._thread.start()
        log.info("tftp: serving %s on %s:%d", self.tree.root, addr, self.settings.port)
        if self._sock6 is not None:
            log.info("tftp: also serving on [%s]:%d", a6, self.settings.port)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
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

    def reload(self, inventory: Inventory) -> None:
        self.tree.inventory = inventory

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
        try:
            req = codec.decode_request(data)
        except codec.TftpDecodeError as e:
            self._error_metric("malformed")
            log.debug("tftp: malformed request from %s: %s", peer[0], e)
            if len(data) >= 2 and data[1] in (codec.OP_RRQ, codec.OP_WRQ) and data[0] == 0:
                # A request we cannot parse (a NUL inside the name splits it): say so.
                self._send_error(peer, codec.ERR_ILLEGAL_OPERATION, "malformed request")
            return
        self.metrics.inc(M_REQUESTS, opcode="wrq" if req.opcode == codec.OP_WRQ else "rrq")
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
        if req.opcode == codec.OP_WRQ:
            return self._refuse(peer, req, codec.ERR_ACCESS_VIOLATION, "read-only server",
                                "write")
        if req.mode not in codec.MODES:
            return self._refuse(peer, req, codec.ERR_ILLEGAL_OPERATION,
                                f"unsupported mode {safe(req.mode, 40)}", "mode")
        if not self._fd_headroom():
            return self._out_of_descriptors(peer, req, "lookup")
        try:
            bootfile = self.tree.lookup(req.filename, peer[0])
        except Refused as r:
            return self._refuse(peer, req, r.reason.tftp_code, r.message, r.reason.key)
        if len(self._workers) >= self.settings.max_transfers:
            return self._refuse(peer, req, codec.ERR_UNDEFINED,
                                "server busy, retry later", "busy")
        if self._per_client.get(peer[0], 0) >= self.settings.max_per_client:
            return self._refuse(peer, req, codec.ERR_UNDEFINED,
                                "server busy: too many transfers from this address",
                                "busy_client")
        if not self._fd_headroom():
            return self._out_of_descriptors(peer, req, "spawn")
        try:
            self._spawn(peer, req, bootfile, data)
        except OSError as e:  # fork or pipe refused (EAGAIN, ENOMEM, EMFILE)
            self._out_of_descriptors(peer, req, f"spawn: {e.strerror}")

    def _spawn(self, peer: tuple[str, int], req: codec.Request, bootfile: BootFile,
               raw: bytes) -> None:
        assert self._sock is not None
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
            if e.errno not in _NO_FDS:
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
            if e.errno not in _NO_FDS:
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

    def _reap(self) -> None:
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
        self.metrics.set(M_ACTIVE, len(self._workers))
        if self._active is not None:
            self._active[0] = len(self._workers)


def create(ctx: ServeContext) -> Service:
    return TftpService(ctx)
