"""A TFTP fuzzer, run inside a namespace: ``python -m tests.support.tftp_fuzz_client``.

    SERVER CASES SEED NAME...   # NAME: files the server has (valid requests use them)

Every case is one datagram to port 69, built on valid structures and then broken:
RRQ/WRQ with odd names (non-ASCII, control characters, traversal, 1,500 bytes),
modes and options (known names with random values, random names, 40 of them,
repeats), truncated or cut at a NUL, without the final NUL, oversized; ACK, DATA,
ERROR, OACK and unknown opcodes sent to the listener; random bytes. A few cases
are valid requests for NAMEs: whatever transfer answers them (its own port) gets
fuzzed answers back (ACKs of any block, duplicate ACKs, ERRORs, junk, truncated
packets), at most ``PER_TID`` of them, then silence.

Paced by the server: each batch of cases ends with a sentinel request (a missing
file, from its own port), and the next batch waits (bounded) for its ERROR, so
the cases are handled rather than dropped from a full receive queue.

Prints one JSON line: cases sent, answers by opcode, transfers fuzzed, sentinels
answered.
"""

from __future__ import annotations

import json
import random
import select
import socket
import struct
import sys
import time

KNOWN = ["blksize", "tsize", "timeout", "windowsize", "multicast", "rollover", "utimeout"]
MODES = ["octet", "netascii", "mail", "OCTET", "NetAscii", "", "binary", "octet\x01"]
PER_TID = 12  # fuzzed answers to one transfer
SOCKETS = 8  # client ports the cases rotate over
BATCH = 32  # cases between two waits for answers


def value(r: random.Random) -> bytes:
    return r.choice([
        lambda: str(r.randint(0, 70000)).encode(),
        lambda: str(r.choice([0, 1, 7, 8, 255, 256, 512, 65464, 65465, 65535, 65536])).encode(),
        lambda: str(-r.randint(1, 1000)).encode(),
        lambda: str(r.randint(0, 10 ** 30)).encode(),
        lambda: b" " + str(r.randint(0, 100)).encode() + b" ",
        lambda: b"0" * r.randint(1, 40) + b"8",
        lambda: bytes(r.randint(1, 255) for _ in range(r.randint(0, 20))),
        lambda: "١٢٣".encode(),  # Arabic-Indic digits: str.isdigit() is true
        lambda: b"",
        lambda: b"0x10",
    ])()


def name(r: random.Random, names: list[bytes]) -> bytes:
    return r.choice([
        lambda: r.choice(names),
        lambda: r.choice(names) + b"\n2026-01-01 00:00:00,000 CRITICAL forged",
        lambda: bytes(r.randint(0x80, 0xFF) for _ in range(r.randint(1, 60))),
        lambda: bytes(r.randint(1, 31) for _ in range(r.randint(1, 10))),
        lambda: b"../" * r.randint(1, 20) + b"etc/passwd",
        lambda: b"/" + r.choice(names),
        lambda: b"a" * r.randint(200, 1490),
        lambda: b"pxelinux.cfg/" + bytes(r.choice(b"0123456789abcdefABCDEF-")
                                         for _ in range(r.randint(0, 30))),
        lambda: b"hosts/" + bytes(r.randint(33, 126) for _ in range(r.randint(0, 20)))
        + b"/dsas.conf",
        lambda: b"",
        lambda: "é/ünïcode\u2028.bin".encode(),
    ])()


def request(r: random.Random, names: list[bytes]) -> bytes:
    op = r.choice([1, 1, 1, 2, 2, 0, 3, 4, 5, 6, 7, 0xFFFF, 0x0100])
    fields = [name(r, names), r.choice(MODES).encode()]
    for _ in range(r.choice([0, 1, 2, 3, 4, 8, 40])):
        opt = r.choice(KNOWN) if r.random() < 0.8 else bytes(
            r.randint(1, 255) for _ in range(r.randint(0, 12)))
        if r.random() < 0.2:
            opt = opt.upper()
        fields += [opt if isinstance(opt, bytes) else opt.encode(), value(r)]
    pkt = struct.pack("!H", op) + b"".join(f + b"\x00" for f in fields)
    cut = r.random()
    if cut < 0.15:
        pkt = pkt[:r.randint(0, len(pkt))]
    elif cut < 0.25:
        pkt = pkt[:-1]
    elif cut < 0.3:
        pkt += b"\x00" * r.randint(1, 5)
    elif cut < 0.35:
        pkt += bytes(r.randint(0, 255) for _ in range(r.randint(1, 3000)))
    elif cut < 0.4:
        i = r.randint(2, max(2, len(pkt) - 1))
        pkt = pkt[:i] + bytes([r.randint(0, 255)]) + pkt[i + 1:]
    return pkt


def other_packet(r: random.Random) -> bytes:
    """ACK, DATA, ERROR, OACK or an unknown opcode, well-formed or not."""
    op = r.choice([3, 4, 5, 6, 0, 7, 99])
    head = struct.pack("!HH", op, r.randint(0, 65535))
    tail = r.choice([
        b"", b"\x00", bytes(r.randint(0, 255) for _ in range(r.randint(0, 600))),
        b"blksize\x00" + value(r) + b"\x00", b"msg" * r.randint(0, 300) + b"\x00",
    ])
    pkt = head + tail
    return pkt[:r.randint(0, len(pkt))] if r.random() < 0.2 else pkt


def case(r: random.Random, names: list[bytes]) -> tuple[bytes, bool]:
    """One datagram for port 69; True when it is a valid request (a transfer follows)."""
    k = r.random()
    if k < 0.03:
        opts = b""
        for opt in r.sample(["blksize", "tsize", "windowsize", "timeout"], r.randint(0, 4)):
            v = {"blksize": r.choice([8, 512, 1468, 65464]), "tsize": 0,
                 "windowsize": r.choice([1, 4, 64]), "timeout": r.choice([1, 255])}[opt]
            opts += opt.encode() + b"\x00" + str(v).encode() + b"\x00"
        return struct.pack("!H", 1) + r.choice(names) + b"\x00octet\x00" + opts, True
    if k < 0.75:
        return request(r, names), False
    if k < 0.9:
        return other_packet(r), False
    return bytes(r.randint(0, 255) for _ in range(r.randint(0, 1600))), False


def answer(r: random.Random, got: bytes) -> bytes:
    """A fuzzed reply to a transfer's packet ``got`` (DATA or OACK)."""
    block = struct.unpack_from("!H", got, 2)[0] if len(got) >= 4 else 0
    return r.choice([
        lambda: struct.pack("!HH", 4, block),
        lambda: struct.pack("!HH", 4, block),
        lambda: struct.pack("!HH", 4, (block - 1) & 0xFFFF),  # a duplicate
        lambda: struct.pack("!HH", 4, r.randint(0, 65535)),
        lambda: struct.pack("!HH", 5, r.randint(0, 9)) + b"fuzz\x00",
        lambda: struct.pack("!HH", 5, 8),
        lambda: struct.pack("!H", 4),
        lambda: b"\x00",
        lambda: b"",
        lambda: struct.pack("!HH", 3, block) + b"x" * r.randint(0, 600),
        lambda: struct.pack("!H", 6) + b"blksize\x00" + value(r) + b"\x00",
        lambda: struct.pack("!H", 1) + b"pxelinux.0\x00octet\x00",
        lambda: bytes(r.randint(0, 255) for _ in range(r.randint(0, 100))),
    ])()


def main(argv: list[str]) -> int:
    server, cases, seed = argv[0], int(argv[1]), int(argv[2])
    names = [n.encode() for n in argv[3:]]
    r = random.Random(seed)
    socks = []
    for _ in range(SOCKETS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        socks.append(s)
    answers: dict[str, int] = {}
    fuzzed: dict[tuple[int, tuple[str, int]], int] = {}  # (socket, TID) -> answers sent
    sent = valid = 0

    sentinel = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sentinel.setblocking(False)
    paced = 0

    def drain(wait: float, until_sentinel: bool = False) -> None:
        nonlocal paced
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([*socks, sentinel], [], [], max(left, 0))
            if not ready:
                return
            if sentinel in ready:
                try:
                    sentinel.recv(1500)
                    paced += 1
                    if until_sentinel:
                        return
                except (BlockingIOError, ConnectionRefusedError):
                    pass
            for s in ready:
                if s is sentinel:
                    continue
                for _ in range(64):
                    try:
                        got, peer = s.recvfrom(70000)
                    except (BlockingIOError, ConnectionRefusedError):
                        break
                    op = str(struct.unpack_from("!H", got)[0]) if len(got) >= 2 else "short"
                    answers[op] = answers.get(op, 0) + 1
                    key = (socks.index(s), peer)
                    if peer[1] != 69 and op in ("3", "6") and fuzzed.get(key, 0) < PER_TID:
                        fuzzed[key] = fuzzed.get(key, 0) + 1
                        try:
                            s.sendto(answer(r, got), peer)
                        except OSError:
                            pass

    for i in range(cases):
        pkt, ok = case(r, names)
        valid += ok
        try:
            socks[i % SOCKETS].sendto(pkt[:65507], (server, 69))
            sent += 1
        except OSError:
            pass
        if i % BATCH == BATCH - 1:
            sentinel.sendto(b"\x00\x01fuzz-sentinel\x00octet\x00", (server, 69))
            drain(2.0, until_sentinel=True)
    drain(0.5)
    for s in [*socks, sentinel]:
        s.close()
    print(json.dumps({"sent": sent, "valid_requests": valid, "answers": answers,
                      "transfers_fuzzed": len(fuzzed), "sentinels_answered": paced}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
