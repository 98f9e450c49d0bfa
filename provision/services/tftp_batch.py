"""TFTP in a storm: many lock-step transfers in one process, batched system calls.

A forked transfer (``tftp_session``) costs a sleep, a wake-up and two system
calls per block, and a process switch between transfers: when 50 clients boot at
once that is what the server's CPU goes to (14-15 ms of server CPU per MiB in
``bench bootfiles``' storm, tftpd-hpa's 13-16 on the same run).
The engine is one long-lived child process that runs every batched transfer
from one UDP socket (its port is the server's TID for all of them; RFC 1350
only asks each side's TID to be fixed for the transfer, and each transfer is
told apart by the client's address and port). It reads up to ``VLEN`` ACKs
with one ``recvmmsg`` and sends the next block of each with one ``sendmmsg``,
each DATA packet a header slot and a view of the transfer's read-ahead buffer
(no copy per block). In the 50 x 8 MiB storm the server's CPU per MiB falls
to about 10 ms (tftpd-hpa: 14.5 in the same run).

The engine runs at nice ``batch_nice`` (-10, when the server may): it does the
work of up to ``max_transfers`` processes, each of which had the CPU weight of
one; at nice 0 one process among 50 busy ones (the clients, on the same host in
the benchmark; DHCP, HTTP and push on a master) got too little CPU, preempted
about 85,000 times in a 6 s storm, and every client waited for it. One engine
fills a gigabit link (about 11 us of CPU per 1468-byte block; ``batch_engines``
runs more, which costs CPU per block in smaller batches).

What goes to the engine (``TftpService`` decides): octet transfers of a
file on disk, lock-step (windowsize 1 negotiated), over IPv4, while at least
``TftpSettings.batch_from`` transfers are already running (below that, a forked
transfer's busy polling wins: a single client is served 3x faster than by
tftpd-hpa). The engine gets each job with the open file's descriptor over a
unix socket (``SCM_RIGHTS``): names are resolved and confined in the listener,
as for a forked transfer, and the engine opens nothing.

Per job the engine keeps the same rules as a forked transfer: the OACK is
resent until ACK 0; a block is resent after ``rto_min`` s, doubling up to the
client's RFC 2349 timeout (or ``rto_max``); a transfer without progress for
``timeout`` s is failed and its slot freed; a duplicate ACK is ignored
(Sorcerer's Apprentice); a client ERROR ends the transfer (ERROR 8 after the
OACK is OVMF's size probe); any other packet from a client is answered with
ERROR 4. Datagrams from an address and port that has no job are dropped and
counted (``strays``, told to the listener on the timer tick). One difference:
the socket is not connected, so no ICMP "port unreachable" reaches it, and a
client that is gone is noticed at the give-up time rather than at once. A job
whose descriptor did not arrive (the engine out of descriptors) gets ERROR 0
"busy" and is counted. Each
transfer's outcome goes to the listener as a forked transfer's does (a JSON
datagram, ``eid`` instead of ``pid``), with the engine's CPU since its previous
report, so the CPU metric still adds up to what the transfers cost.
"""

from __future__ import annotations

import ctypes
import json
import logging
import multiprocessing
import os
import select
import socket
import struct
import time
from ctypes import addressof, c_void_p, sizeof
from typing import Any

from ..observability.logsafe import safe
from ..protocol import tftp as codec
from .dns_batch import NAME_SIZE, _IoVec, _libc, _MMsgHdr
from .tftp_session import TftpSettings, _local_drop

log = logging.getLogger("provision.services.tftp")  # one logger for the whole service

VLEN = 64  # datagrams per recvmmsg / sendmmsg
RECV_SLOT = 64  # bytes per received datagram kept (an ACK or ERROR head; the rest is cut)
READ_AHEAD = 128 * 1024  # bytes of file read per refill, per transfer
MSG_DONTWAIT = socket.MSG_DONTWAIT
TICK = 0.02  # s between two scans of the retransmission and give-up timers
MAX_JOB = 65536  # bytes of a job message (JSON; a name is at most a request's 512 bytes)
_HDR = struct.Struct("!HH")


class _Job:
    """One batched transfer: its client, its file and where it stands."""

    __slots__ = ("addr", "backoff", "blksize", "block", "buf", "count", "eid", "fd", "first",
                 "give_up", "host", "key", "last", "name", "name_addr", "oack", "path", "peer",
                 "progress", "retransmits", "rto", "rto_max", "sent", "started", "valid",
                 "view")

    def __init__(self, eid: int, peer: tuple[str, int], fd: int, blksize: int,
                 oack: bytes, rto: float, rto_max: float, give_up: float,
                 path: str, host: str | None):
        self.eid, self.peer, self.fd, self.blksize = eid, peer, fd, blksize
        self.key = peer[1].to_bytes(2, "big") + socket.inet_aton(peer[0])
        # its struct sockaddr_in (AF_INET = 2), which its packets' msg_name points to
        self.name = ctypes.create_string_buffer(b"\x02\x00" + self.key + bytes(8), NAME_SIZE)
        self.name_addr = addressof(self.name)
        self.oack, self.path, self.host = oack, path, host
        self.count = max(1, READ_AHEAD // blksize)  # blocks per refill
        self.buf = bytearray(self.count * blksize)
        self.view = memoryview(self.buf)
        self.addr = addressof((ctypes.c_char * len(self.buf)).from_buffer(self.buf))
        # the block at buf[0] (none yet: far behind, so the first block refills), bytes read
        self.first, self.valid = -(1 << 40), -1
        self.block = 0 if oack else 1  # the block sent and not yet acked (0: the OACK)
        self.last = False  # the block in flight is the final one
        self.rto, self.rto_max, self.give_up = rto, rto_max, give_up
        self.backoff = self.retransmits = 0
        self.started = self.sent = self.progress = time.monotonic()

    def fill(self, block: int) -> None:
        """Read ahead from ``block``: short only at the end of the file."""
        want, got = len(self.buf), 0
        while got < want:  # bounded: every turn reads more, or stops
            n = os.preadv(self.fd, [self.view[got:]], (block - 1) * self.blksize + got)
            if n <= 0:
                break
            got += n
        self.first, self.valid = block, got

    def sent_bytes(self, done: bool) -> int:
        """Bytes the client has acknowledged."""
        full = (self.block - 1) * self.blksize
        if not done:
            return max(full, 0)
        return full + max(0, min(self.blksize, self.valid - (self.block - self.first)
                                 * self.blksize))


class Engine:
    """The batched data path, in its own process (``run``)."""

    def __init__(self, address: str, settings: TftpSettings, jobs: socket.socket,
                 reports: socket.socket):
        self.settings = settings
        self.jobs_rx = jobs  # SOCK_SEQPACKET: one job per message, with its file descriptor
        jobs.setblocking(False)  # (socket.recv_fds drops its flags argument in 3.11)
        self.reports = reports
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.setblocking(False)
        self.live: dict[bytes, _Job] = {}  # (client port, address) as in a sockaddr -> job
        self.stray = 0  # datagrams from nobody with a job, not yet reported (on the tick)
        self.cpu_mark = time.process_time()
        self._buffers()

    def _buffers(self) -> None:
        v = VLEN
        self._rbuf = ctypes.create_string_buffer(v * RECV_SLOT)
        self._rnames = ctypes.create_string_buffer(v * NAME_SIZE)
        self._riov, self._rmsg = (_IoVec * v)(), (_MMsgHdr * v)()
        self._hdrs = ctypes.create_string_buffer(v * _HDR.size)
        self._siov, self._smsg = (_IoVec * (2 * v))(), (_MMsgHdr * v)()
        for i in range(v):
            self._riov[i].iov_base = addressof(self._rbuf) + i * RECV_SLOT
            self._riov[i].iov_len = RECV_SLOT
            r = self._rmsg[i].msg_hdr
            r.msg_name, r.msg_namelen = addressof(self._rnames) + i * NAME_SIZE, NAME_SIZE
            r.msg_iov, r.msg_iovlen = addressof(self._riov) + i * sizeof(_IoVec), 1
            self._siov[2 * i].iov_base = addressof(self._hdrs) + i * _HDR.size
            self._siov[2 * i].iov_len = _HDR.size
            s = self._smsg[i].msg_hdr
            s.msg_namelen = NAME_SIZE  # msg_name: the job's own sockaddr, set per packet
            s.msg_iov, s.msg_iovlen = addressof(self._siov) + 2 * i * sizeof(_IoVec), 2
        # flat views for the per-datagram work: no ctypes object made per packet
        self._words = sizeof(_MMsgHdr) // 4
        self._len_word = _MMsgHdr.msg_len.offset // 4
        self._rlen = memoryview(self._rmsg).cast("B").cast("I")
        self._rmv = memoryview(self._rbuf).cast("B")
        self._rnm = memoryview(self._rnames).cast("B")
        self._smq = memoryview(self._smsg).cast("B").cast("Q")  # msg_name is word 0
        self._msg_q = sizeof(_MMsgHdr) // 8
        self._hmv = memoryview(self._hdrs).cast("B")
        self._siq = memoryview(self._siov).cast("B").cast("Q")  # iov_base, iov_len words
        self._queued = 0
        self._pinned: list[_Job] = []  # jobs whose buffers the queued packets point into

    # -- the loop ---------------------------------------------------------------

    def run(self) -> None:
        ep = select.epoll()
        ctl, data = self.jobs_rx.fileno(), self.sock.fileno()
        ep.register(ctl, select.EPOLLIN)
        ep.register(data, select.EPOLLIN)
        next_tick = time.monotonic() + TICK
        try:
            while True:  # ends when the listener closes its end of the job socket
                wait = TICK if self.live else 1.0
                for fd, _ in ep.poll(wait):
                    if fd == ctl and not self._take_jobs():
                        return
                    if fd == data:
                        self._on_datagrams()
                now = time.monotonic()
                if now >= next_tick:
                    self._timers(now)
                    next_tick = now + TICK
        finally:
            ep.close()
            for job in list(self.live.values()):
                self._finish(job, "failed", "stopped")

    def _take_jobs(self) -> bool:
        """Every queued job; False when the listener is gone (the engine stops)."""
        for _ in range(VLEN):  # bounded; the rest on the next turn
            try:
                raw, fds, _flags, _addr = socket.recv_fds(self.jobs_rx, MAX_JOB, 1)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not raw:
                for fd in fds:
                    os.close(fd)
                return False
            self._start(raw, fds)
        return True

    def _start(self, raw: bytes, fds: list[int]) -> None:
        try:
            j = json.loads(raw)
        except ValueError:  # cannot happen from our listener; never crash on it
            for fd in fds:
                os.close(fd)
            return
        if len(fds) != 1:  # the descriptor did not come (this process is out of them)
            for fd in fds:
                os.close(fd)
            self._refuse(j)
            return
        job = _Job(j["eid"], (j["peer"][0], j["peer"][1]), fds[0], j["blksize"],
                   bytes.fromhex(j["oack"]), self.settings.rto_min, j["rto_max"],
                   self.settings.timeout, j["path"], j["host"])
        old = self.live.pop(job.key, None)
        if old is not None:  # the listener only sends one job per client TID; be safe
            self._finish(old, "failed", "replaced")
        self.live[job.key] = job
        self._send_block(job)
        self._flush()

    # noqa below: the per-ACK hot loop stays whole (locals, no call per block: a split
    # costs CPU per block, which is what this module is for); the rare cases are in _other
    def _on_datagrams(self) -> int:  # noqa: C901, PLR0912, PLR0915
        """ACKs in batches of ``VLEN``; the next block of each transfer in one send."""
        fd, rmsg, live, unpack = self.sock.fileno(), self._rmsg, self.live, _HDR.unpack_from
        rlen, rmv, rnm, words, lw = self._rlen, self._rmv, self._rnm, self._words, self._len_word
        pack, hmv, siq, smq, mq = _HDR.pack_into, self._hmv, self._siq, self._smq, self._msg_q
        pinned, data = self._pinned, codec.OP_DATA
        total = 0
        for _ in range(64):  # bounded: at most 64 x VLEN datagrams per wake-up
            n = _libc.recvmmsg(fd, rmsg, VLEN, MSG_DONTWAIT, None)
            if n <= 0:
                break
            total += n
            now = time.monotonic()
            for i in range(n):
                job = live.get(rnm[i * NAME_SIZE + 2: i * NAME_SIZE + 8].tobytes())
                if job is None:
                    self.stray += 1
                    continue
                op, num = unpack(rmv, i * RECV_SLOT) if rlen[i * words + lw] >= 4 else (0, 0)
                if op == codec.OP_ACK:
                    if num != job.block & 0xFFFF:
                        continue  # a duplicate or stale ACK: ignored
                    if job.last:
                        self._finish(job, "ok", "ok")
                        continue
                    block = job.block = job.block + 1
                    job.sent = job.progress = now
                    if job.backoff:
                        job.backoff, job.rto = 0, self.settings.rto_min
                    k = block - job.first
                    if k >= job.count:  # past the read-ahead: refill (and queue) the slow way
                        self._send_block(job)
                        continue
                    # _send_block, inlined: a header slot and a view of the read-ahead
                    size = job.blksize
                    off = k * size
                    length = job.valid - off
                    if length >= size:
                        length = size
                    else:
                        length = max(length, 0)
                        job.last = True
                    q = self._queued
                    pack(hmv, q * 4, data, block & 0xFFFF)
                    siq[4 * q + 2] = job.addr + off
                    siq[4 * q + 3] = length
                    smq[q * mq] = job.name_addr
                    pinned.append(job)
                    self._queued = q + 1
                    if q + 1 >= VLEN:
                        self._flush()
                else:
                    self._other(job, op, num)
            self._flush()
            if n < VLEN:
                break
        return total

    def _other(self, job: _Job, op: int, num: int) -> None:
        """A client's datagram that is not an ACK."""
        if op == codec.OP_ERROR:
            probe = job.block == 0 and num == codec.ERR_OPTION_REFUSED
            self._finish(job, "probe" if probe else "aborted", f"client_error_{num}")
        else:  # short datagram, or an opcode a client never sends
            self._send_to(job.peer, codec.encode_error(codec.ERR_ILLEGAL_OPERATION,
                                                       "expected ACK"))

    def _timers(self, now: float) -> None:
        """Resend what waited past its timer; fail what made no progress for ``timeout``."""
        rto_min = self.settings.rto_min
        for job in list(self.live.values()):
            if now - job.progress > job.give_up:
                self._finish(job, "failed", "timeout")
            elif now - job.sent >= job.rto:
                job.backoff += 1
                job.retransmits += 1
                job.rto = min(job.rto_max, rto_min * 2.0 ** min(job.backoff, 16))
                job.sent = now
                self._send_block(job)
        self._flush()
        if self.stray:  # counted by the listener as errors{reason="stray"}
            self._tell({"strays": self.stray})
            self.stray = 0

    # -- sending ----------------------------------------------------------------

    def _send_block(self, job: _Job) -> None:
        """Queue the job's block in flight (the OACK for block 0) for the next flush."""
        block = job.block
        if block == 0:
            self._send_to(job.peer, job.oack)
            return
        i = block - job.first
        if job.valid < 0 or not 0 <= i < job.count:
            try:
                job.fill(block)
            except OSError as e:  # the file cannot be read (EIO): this transfer fails
                log.warning("tftp: cannot read %s: %s", safe(job.path), e.strerror)
                self._send_to(job.peer, codec.encode_error(codec.ERR_UNDEFINED, "read error"))
                self._finish(job, "failed", "read_error")
                return
            i = 0
        size = job.blksize
        off = i * size
        n = min(size, max(job.valid - off, 0))
        job.last = n < size
        q = self._queued
        _HDR.pack_into(self._hmv, q * _HDR.size, codec.OP_DATA, block & 0xFFFF)
        self._siq[4 * q + 2] = job.addr + off
        self._siq[4 * q + 3] = n
        self._smq[q * self._msg_q] = job.name_addr
        self._pinned.append(job)  # its buffer stays alive until the flush, even if it ends
        self._queued = q + 1
        if q + 1 >= VLEN:
            self._flush()

    def _flush(self) -> None:
        """sendmmsg what is queued; a datagram the kernel refuses is a loss like any
        other (the timer resends it)."""
        done, queued, base = 0, self._queued, addressof(self._smsg)
        while done < queued:  # bounded: every turn advances by at least one
            sent = _libc.sendmmsg(self.sock.fileno(), c_void_p(base + done * sizeof(_MMsgHdr)),
                                  queued - done, 0)
            done += sent if sent > 0 else 1
        self._queued = 0
        self._pinned.clear()

    def _send_to(self, peer: tuple[str, int], packet: bytes) -> None:
        """One datagram outside the batch (OACK, ERROR); refused locally, it is lost."""
        try:
            self.sock.sendto(packet, peer)
        except OSError as e:
            _local_drop(e)

    # -- the end of a transfer --------------------------------------------------

    def _refuse(self, j: dict[str, Any]) -> None:
        """A job without its file: the client hears "busy" (as from the listener when
        it is out of descriptors), the listener gets the outcome."""
        peer = (j["peer"][0], j["peer"][1])
        self._send_to(peer, codec.encode_error(codec.ERR_UNDEFINED, "server busy, retry later"))
        self._report({"eid": j["eid"], "result": "failed", "reason": "descriptors", "bytes": 0,
                      "retransmits": 0, "polled": 0, "blksize": j["blksize"], "window": 1,
                      "peer": peer[0], "path": j["path"], "host": j["host"], "seconds": 0.0})

    def _finish(self, job: _Job, result: str, reason: str) -> None:
        self.live.pop(job.key, None)
        os.close(job.fd)
        outcome: dict[str, Any] = {
            "eid": job.eid, "result": result, "reason": reason,
            "bytes": job.sent_bytes(result == "ok"), "retransmits": job.retransmits,
            "polled": 0, "blksize": job.blksize, "window": 1, "peer": job.peer[0],
            "path": job.path, "host": job.host,
            "seconds": round(time.monotonic() - job.started, 6)}
        self._report(outcome)

    def _report(self, outcome: dict[str, Any]) -> None:
        """To the listener, with the CPU since the previous report."""
        cpu = time.process_time()
        outcome["cpu"] = round(cpu - self.cpu_mark, 6)
        self.cpu_mark = cpu
        self._tell(outcome)

    def _tell(self, message: dict[str, Any]) -> None:
        try:
            self.reports.send(json.dumps(message).encode())
        except OSError:
            pass


class EngineProcess(multiprocessing.Process):
    """The engine's child: closes the listener's sockets, then runs the loop."""

    def __init__(self, address: str, settings: TftpSettings, jobs: socket.socket,
                 reports: socket.socket, close_in_child: list[socket.socket]):
        super().__init__(name="tftp-batch", daemon=True)
        self._args = (address, settings, jobs, reports)
        self._close = close_in_child

    def run(self) -> None:
        for s in self._close:
            s.close()
        try:  # the CPU weight of the transfer processes it replaces (see the docstring)
            os.setpriority(os.PRIO_PROCESS, 0, self._args[1].batch_nice)
        except OSError:  # not root: the weight of one process
            pass
        try:
            Engine(*self._args).run()
        except Exception:  # the listener sees the exit and counts its transfers
            log.exception("tftp: the batched transfer engine crashed")
            raise
