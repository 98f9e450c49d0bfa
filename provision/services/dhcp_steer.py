"""Several DHCP worker processes on one port: which worker serves which machine.

``dsas serve --dhcp-workers N`` runs N processes, each with its own sockets bound to
the same interfaces and ports with SO_REUSEPORT. A classic BPF program attached to the
group (SO_ATTACH_REUSEPORT_CBPF) hands every datagram to the socket of worker
``worker_of(chaddr, N)``: the last four bytes of the client's hardware address modulo
N. The kernel runs the program with the UDP payload at offset 0, so chaddr's last four
bytes are the 32-bit word at 30 (BOOTP: chaddr starts at 28); a datagram too short for
that load makes the program return 0 (worker 0). The group's sockets are numbered in the
order they were bound, so the workers bind one after the other, worker 0 first.

Why no address is given twice: all of one machine's requests (DISCOVER, REQUEST,
RENEW, RELEASE, DECLINE) reach the same worker, and worker k gives out only the pool
addresses with ``ip % N == k`` (``Pool.share``): two workers never choose from the same
addresses, so each worker's own lease table decides alone, as a single process does.
A lease from before (another N) on an address of another worker's share is not renewed
(the client is NAKed and gets one of this worker's), so no worker extends a lease
another worker may hand out once it ended.
"""

from __future__ import annotations

import ctypes
import socket
import struct

SO_ATTACH_REUSEPORT_CBPF = 51  # asm-generic/socket.h
CHADDR_WORD = 30  # offset of chaddr's last four bytes in the BOOTP message
# classic BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_ALU_MOD_K = 0x04 | 0x90 | 0x00  # BPF_ALU | BPF_MOD | BPF_K
_RET_A = 0x06 | 0x10  # BPF_RET | BPF_A


def worker_of(chaddr: bytes, workers: int) -> int:
    """The worker the kernel hands this machine's requests to (as the BPF program)."""
    if workers <= 1 or len(chaddr) < 6:
        return 0
    return int.from_bytes(chaddr[2:6], "big") % workers


def program(workers: int) -> bytes:
    """The BPF program (struct sock_filter[]): A = word at 30; A %= workers; return A."""
    code = [(_LD_W_ABS, 0, 0, CHADDR_WORD), (_ALU_MOD_K, 0, 0, workers), (_RET_A, 0, 0, 0)]
    return b"".join(struct.pack("HBBI", *insn) for insn in code)


def attach(sock: socket.socket, workers: int) -> None:
    """Steer the reuseport group of ``sock`` by ``worker_of`` (raises OSError)."""
    insns = program(workers)
    buf = ctypes.create_string_buffer(insns, len(insns))
    fprog = struct.pack("HL", len(insns) // 8, ctypes.addressof(buf))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
