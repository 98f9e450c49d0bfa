"""TFTP transfers: one read transfer, from the OACK to the last ACK, in its forked child.

The other half of ``provision.services.tftp`` (the listener and the service, in the
main process), cut along its section headers; that module's docstring says what the
data path adds to fbtftp and why. The settings live here because both halves read them.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from fbtftp.base_handler import BaseHandler, ResponseData

from ..observability.logsafe import safe
from ..policy.boottree import BootFile
from ..protocol import tftp as codec

log = logging.getLogger("provision.services.tftp")  # one logger for the whole service

_TIMEVAL = struct.Struct("@ll")  # struct timeval for SO_RCVTIMEO (Linux: two longs)
# errnos of descriptor (or kernel memory) exhaustion: refused and counted, never raised
NO_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


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
    # live transfers from which new lock-step octet transfers of files on disk go to the
    # batched engine (``tftp_batch``) instead of a process each (0: every one)
    batch_from: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    batch_engines: int = 1  # engine processes (one fills a gigabit link; see tftp_batch)
    batch_nice: int = -10  # the engines' nice value: the CPU weight of ~9 processes


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
    same time, and a block is sent as one contiguous view, never joined. The views
    of a refill (``views``, from block ``first``) are made once, with it: the
    transfer loop indexes them instead of slicing per block. A block outside the
    buffer (a retransmission across a refill) refills it from there.
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
        self.first = 1  # the block in the buffer's first slot
        self.views: list[memoryview] = []  # packet of block first + i, as sent
        self.valid = 0  # data bytes read into buf

    def packet(self, n: int) -> memoryview:
        i = n - self.first
        if not 0 <= i < len(self.views):
            self._fill(n)
            i = 0
        return self.views[i]

    def _fill(self, n: int) -> None:
        self.valid = valid = self.data.preadv_into(self.parts, (n - 1) * self.blksize)
        self.first = n
        buf, slot, blk, head = self.buf, self.slot, self.blksize, codec.HEADER.size
        for i in range(len(self.parts)):
            codec.HEADER.pack_into(buf, i * slot, codec.OP_DATA, (n + i) & 0xFFFF)
        # past the end: header only (the empty final block of a file that ends on a
        # block boundary; blocks after it are never sent)
        self.views = [buf[i * slot:i * slot + head + min(blk, max(valid - i * blk, 0))]
                      for i in range(len(self.parts))]


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
            if e.errno not in NO_FDS:
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
    RTT_EVERY = 16  # blocks between two round-trip samples
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

    # noqa below: the per-block hot loop stays whole (locals, no call per block: a split
    # costs throughput); the rare paths are already in _off_path.
    def _send_file(self, blksize: int, window: int) -> dict[str, Any]:  # noqa: C901, PLR0912, PLR0915
        """DATA in windows until the last ACK (lock-step when ``window`` is 1).

        Per block, in the common case (an in-order ACK, nobody polling): a list index
        for the packet (its view was made with the read-ahead), one ``send``, one
        ``recv_into`` and no method call; after an ACK the next block goes out first,
        the timer's bookkeeping comes after, while the client works; a refill is done
        while the ACK is on the wire. The round trip is sampled once every
        ``RTT_EVERY`` blocks (Karn: never on a resent one). Anything else (timeout,
        ERROR, a stale or malformed packet) goes to ``_off_path``.
        """
        blocks = _Blocks(self.data, blksize)
        unpack, clock, full = codec.HEADER.unpack_from, time.monotonic, codec.HEADER.size + blksize
        send, recv_into, ack = self.sock.send, self.sock.recv_into, self.ack
        self.spin = self.s.busy_poll * 1000 if self.h._active is not None else 0
        active, ncpu = self.h._active, self.NCPU
        self.misses = 0  # polls in a row that came back empty-handed
        base, nxt, last, last_len = 1, 1, 0, 0  # first unacked, next to send, final (0: unknown)
        blocks.packet(1)
        views, vfirst, nviews = blocks.views, blocks.first, len(blocks.views)
        probe = 1  # the next block that may carry a round-trip sample
        progressed = False
        self.backoff, self.timed, self.t_sent = 0, 0, 0.0  # timed: RTT probe block (0: none)
        self.rewound = 0  # the base of the last resend a duplicate ACK asked for
        self.last_progress, self.rto = clock(), self._rto(0)
        while True:
            first = nxt
            while nxt < base + window and (not last or nxt <= last):
                i = nxt - vfirst
                if not 0 <= i < nviews:
                    blocks.packet(nxt)
                    views, vfirst, i = blocks.views, blocks.first, 0
                pkt = views[i]
                try:
                    send(pkt)
                except OSError as e:
                    _local_drop(e)
                if len(pkt) < full:
                    last, last_len = nxt, len(pkt) - codec.HEADER.size
                nxt += 1
            now = clock()
            if progressed:  # after the send: the client works on it meanwhile
                self.last_progress, progressed = now, False
                if self.backoff or (self.timed and base > self.timed):
                    self._progress(now, base)
            if nxt > first and nxt > probe and not self.timed:
                self.timed, self.t_sent, probe = nxt - 1, now, nxt + self.RTT_EVERY
            if not 0 <= nxt - vfirst < nviews and (not last or nxt <= last):
                blocks.packet(nxt)  # the refill, while the ACK is on the wire
                views, vfirst = blocks.views, blocks.first
            if self.spin and active[0] < ncpu:  # type: ignore[index]
                k = self._wait()
            else:
                if self.rto != self.timeo:
                    self._set_timeo(self.rto)
                try:
                    k = recv_into(ack)
                except BlockingIOError:  # SO_RCVTIMEO: the retransmission timer expired
                    k = -1
                except ConnectionRefusedError:  # ICMP port unreachable: the client is gone
                    k = -2
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
            # a resend may have moved the read-ahead buffer
            views, vfirst = blocks.views, blocks.first

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
