"""Batched UDP for the DNS service: recvmmsg(2)/sendmmsg(2) through ctypes (Linux).

Python spends more time getting into and out of the kernel than answering a
cached query, so one system call carries up to ``VLEN`` datagrams each way. The
buffers are allocated once; a datagram is read through a memoryview and a cached
reply is copied into the send buffer with the request's ID in front of it, the
reply going to the address the request came from (the same ``sockaddr`` slot).
Anything not in the cache goes to the caller's ``slow`` function, one datagram at
a time, exactly as the plain loop would handle it.

Bounds: every copy is checked against its slot size; a reply longer than a send
slot takes the slow path. ``available()`` says whether libc has the calls.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable
from ctypes import Structure, addressof, c_int, c_size_t, c_uint, c_uint32, c_void_p, sizeof

VLEN = 64  # datagrams per system call
NAME_SIZE = 16  # sizeof(struct sockaddr_in)
MSG_WAITFORONE = 0x10000  # recvmmsg(2): block for the first datagram only

_libc = ctypes.CDLL(None, use_errno=True)


class _IoVec(Structure):
    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


class _MsgHdr(Structure):
    _fields_ = [("msg_name", c_void_p), ("msg_namelen", c_uint32), ("msg_iov", c_void_p),
                ("msg_iovlen", c_size_t), ("msg_control", c_void_p),
                ("msg_controllen", c_size_t), ("msg_flags", c_int)]


class _MMsgHdr(Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", c_uint)]


def available() -> bool:
    return hasattr(_libc, "recvmmsg") and hasattr(_libc, "sendmmsg")


Slow = Callable[[bytes, tuple[str, int]], None]


class BatchSocket:
    """One UDP socket read and written VLEN datagrams at a time."""

    def __init__(self, sock: socket.socket, recv_size: int, send_size: int, vlen: int = VLEN):
        self.sock, self.vlen = sock, vlen
        self.recv_size, self.send_size = recv_size, send_size
        self._rbuf = ctypes.create_string_buffer(vlen * recv_size)
        self._sbuf = ctypes.create_string_buffer(vlen * send_size)
        self._names = ctypes.create_string_buffer(vlen * NAME_SIZE)
        self._riov, self._siov = (_IoVec * vlen)(), (_IoVec * vlen)()
        self._rmsg, self._smsg = (_MMsgHdr * vlen)(), (_MMsgHdr * vlen)()
        for i in range(vlen):
            self._riov[i].iov_base = addressof(self._rbuf) + i * recv_size
            self._riov[i].iov_len = recv_size
            self._siov[i].iov_base = addressof(self._sbuf) + i * send_size
            for msgs, iov in ((self._rmsg, self._riov), (self._smsg, self._siov)):
                hdr = msgs[i].msg_hdr
                hdr.msg_name = addressof(self._names) + i * NAME_SIZE
                hdr.msg_namelen = NAME_SIZE
                hdr.msg_iov = addressof(iov) + i * sizeof(_IoVec)
                hdr.msg_iovlen = 1
        # Flat views for the per-datagram work: no ctypes objects made in the loop.
        self._msg_words = sizeof(_MMsgHdr)
        self._rlen = memoryview(self._rmsg).cast("B").cast("I")  # uint32 words
        self._smsg_q = memoryview(self._smsg).cast("B").cast("Q")  # uint64 words
        self._siov_q = memoryview(self._siov).cast("B").cast("Q")
        self._rmv = memoryview(self._rbuf).cast("B")
        self._smv = memoryview(self._sbuf).cast("B")
        self._nmv = memoryview(self._names).cast("B")

    def close(self) -> None:
        for mv in (self._rlen, self._smsg_q, self._siov_q, self._rmv, self._smv, self._nmv):
            mv.release()

    def peer(self, i: int) -> tuple[str, int]:
        off = i * NAME_SIZE
        name = self._nmv[off: off + 8].tobytes()
        return socket.inet_ntoa(name[4:8]), int.from_bytes(name[2:4], "big")

    def serve_once(self, hits: dict[bytes, bytes], counts: list[int], slow: Slow) -> int:
        """Receive one batch (blocking), answer cache hits in one send, the rest via slow.

        Returns how many datagrams came in (0: woken up with nothing, e.g. by shutdown).
        """
        n: int = _libc.recvmmsg(self.sock.fileno(), self._rmsg, self.vlen, MSG_WAITFORONE, None)
        if n <= 0:
            if n < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"recvmmsg: {os.strerror(err)}")
            return 0
        rlen, rmv, smv = self._rlen, self._rmv, self._smv
        siov_q, smsg_q = self._siov_q, self._smsg_q
        len_word = _MMsgHdr.msg_len.offset // 4
        words4, words8 = self._msg_words // 4, self._msg_words // 8
        rsize, ssize, names = self.recv_size, self.send_size, addressof(self._names)
        queued = 0
        for i in range(n):
            length = rlen[i * words4 + len_word]
            off = i * rsize
            hit = hits.get(rmv[off + 2: off + length].tobytes()) if length >= 12 else None
            if hit is None or len(hit) + 2 > ssize:
                slow(rmv[off: off + length].tobytes(), self.peer(i))
                continue
            counts[hit[1] & 0xF] += 1
            so = queued * ssize
            smv[so: so + 2] = rmv[off: off + 2]
            smv[so + 2: so + 2 + len(hit)] = hit
            siov_q[queued * 2 + 1] = len(hit) + 2
            smsg_q[queued * words8] = names + i * NAME_SIZE  # msg_name: the request's sender
            queued += 1
        self._send(queued)
        return n

    def _send(self, queued: int) -> None:
        """sendmmsg the queued replies; a datagram the kernel refuses is skipped, not retried."""
        done = 0
        base = addressof(self._smsg)
        while done < queued:  # bounded: every turn advances by at least one
            sent = _libc.sendmmsg(self.sock.fileno(), c_void_p(base + done * self._msg_words),
                                  queued - done, 0)
            done += sent if sent > 0 else 1
