"""A raw TFTP client for tests, run inside a namespace: ``python -m tests.support.tftp_probe``.

Sends exactly the request it is told to (odd names, options, windowsize) and
prints one JSON line: the OACK, the error, the sha256 and size of what came.

    get SERVER NAME [--opt k=v ...] [--mode octet] [--requests N]
    probe SERVER NAME          # OVMF: tsize only, then ERROR 8 after the OACK
    vanish SERVER NAME         # take the first DATA block, then go silent
                               # (--acks N: acknowledge N blocks first)
    dupacks SERVER NAME        # after the OACK, ACK 0 and then --count N more ACK 0;
                               # count the DATA packets that come back
    hold SERVER NAME           # --requests N RRQs, each from its own port, never
                               # acknowledged: how many were answered, how many "busy"
    junk SERVER NAME           # a get; at the first DATA block, a datagram from another
                               # port to the server's TID (a stray: dropped, counted)
    two SERVER NAME            # from one port: RRQ with tsize, then a plain RRQ;
                               # count the TIDs that answer, abort each with ERROR 0
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import struct
import sys
import time

SO_RCVBUFFORCE = 33  # Linux, <asm-generic/socket.h>; not in the socket module


def request(name: bytes, mode: str, opts: dict[str, str]) -> bytes:
    body = name + b"\x00" + mode.encode() + b"\x00"
    for k, v in opts.items():
        body += k.encode() + b"\x00" + v.encode() + b"\x00"
    return struct.pack("!H", 1) + body


def parse_oack(pkt: bytes) -> dict[str, str]:
    f = pkt[2:].split(b"\x00")[:-1]
    return {f[i].decode(): f[i + 1].decode() for i in range(0, len(f) - 1, 2)}


def two(server: str, name: bytes, mode: str, timeout: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.sendto(request(name, mode, {"tsize": "0"}), (server, 69))
    s.sendto(request(name, mode, {}), (server, 69))
    tids: set[tuple[str, int]] = set()
    deadline = time.monotonic() + timeout
    while len(tids) < 2 and time.monotonic() < deadline:
        try:
            _, peer = s.recvfrom(70000)
        except TimeoutError:
            break
        if peer not in tids:
            tids.add(peer)
            s.sendto(struct.pack("!HH", 5, 0) + b"done\x00", peer)
    s.close()
    return {"server_tids": len(tids)}


def dupacks(server: str, name: bytes, mode: str, opts: dict[str, str], count: int,
            timeout: float) -> dict[str, object]:
    """Duplicate-ACK flood: every DATA packet that comes back is counted."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)  # count, not drop
    s.settimeout(timeout)
    s.sendto(request(name, mode, opts), (server, 69))
    pkt, peer = s.recvfrom(70000)
    out: dict[str, object] = {"first": struct.unpack_from("!H", pkt)[0]}
    data = 0
    ack0 = struct.pack("!HH", 4, 0)
    s.sendto(ack0, peer)
    s.setblocking(False)
    for _ in range(count):
        s.sendto(ack0, peer)
        while True:  # drain what came meanwhile
            try:
                pkt = s.recv(70000)
            except BlockingIOError:
                break
            data += pkt[:2] == b"\x00\x03"
    s.settimeout(timeout)  # then until the server gives up (silence)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            pkt = s.recv(70000)
        except TimeoutError:
            break
        data += pkt[:2] == b"\x00\x03"
    out["data_packets"] = data
    s.close()
    return out


def hold(server: str, name: bytes, mode: str, opts: dict[str, str], requests: int,
         bind: str, timeout: float) -> dict[str, object]:
    """``requests`` transfers started and left hanging (the first answer is read only)."""
    socks = []
    for _ in range(requests):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((bind, 0))
        s.settimeout(timeout)
        s.sendto(request(name, mode, opts), (server, 69))
        socks.append(s)
    answered, busy, other, oacks = 0, 0, 0, []
    for s in socks:
        try:
            pkt = s.recv(70000)
        except TimeoutError:
            other += 1
            continue
        op = struct.unpack_from("!H", pkt)[0]
        if op == 5 and b"busy" in pkt:
            busy += 1
        elif op in (3, 6):
            answered += 1
            if op == 6:
                oacks.append(parse_oack(pkt))
        else:
            other += 1
    for s in socks:
        s.close()
    return {"answered": answered, "busy": busy, "other": other, "oacks": oacks}


def run(action: str, server: str, name: bytes, mode: str, opts: dict[str, str],
        timeout: float, requests: int = 1, acks: int = 0) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    for _ in range(requests):  # more than one: a client retransmitting its RRQ
        s.sendto(request(name, mode, opts), (server, 69))
    peers: set[tuple[str, int]] = set()
    out: dict[str, object] = {}
    h = hashlib.sha256()
    size, expect, blksize, window = 0, 1, int(opts.get("blksize", 512)), 1
    t0 = time.monotonic()
    peer = None
    rrq_retries = 4  # like a real client, resend the request while nothing answered
    while True:
        try:
            pkt, peer_now = s.recvfrom(70000)
        except TimeoutError:
            if peer is None and rrq_retries > 0:
                rrq_retries -= 1
                s.sendto(request(name, mode, opts), (server, 69))
                continue
            out["timeout"] = True
            break
        peer = peer or peer_now
        peers.add(peer_now)
        op = struct.unpack_from("!H", pkt)[0]
        if op == 5:
            code = struct.unpack_from("!H", pkt, 2)[0]
            out.update(error=code, message=pkt[4:-1].decode("latin-1"),
                       elapsed=time.monotonic() - t0)
            break
        if op == 6:
            out["oack"] = oack = parse_oack(pkt)
            blksize = int(oack.get("blksize", 512))
            window = int(oack.get("windowsize", 1))
            if action == "probe":
                s.sendto(struct.pack("!HH", 5, 8) + b"User aborted the transfer\x00", peer)
                out["probed"] = True
                break
            s.sendto(struct.pack("!HH", 4, 0), peer)
            continue
        if op == 3:
            block = struct.unpack_from("!H", pkt, 2)[0]
            if action == "vanish" and block > acks:
                out["vanished_after"] = block
                break
            if action == "junk" and "junk" not in out:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                    other.sendto(struct.pack("!HH", 4, block), peer)  # not this transfer's
                out["junk"] = peer[1]
            data = pkt[4:]
            if block == expect & 0xFFFF:
                h.update(data)
                size += len(data)
                expect += 1
                last = len(data) < blksize
                if last or (expect - 1) % window == 0:
                    s.sendto(struct.pack("!HH", 4, block), peer)
                if last:
                    break
            else:  # out of order: ack the last good block (RFC 7440)
                s.sendto(struct.pack("!HH", 4, (expect - 1) & 0xFFFF), peer)
    out.update(sha256=h.hexdigest(), size=size, seconds=time.monotonic() - t0,
               server_tids=len(peers), rrq_sent=requests + 4 - rrq_retries)
    s.close()
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=("get", "probe", "vanish", "two", "dupacks", "hold",
                                           "junk"))
    p.add_argument("server")
    p.add_argument("name", help="file name; \\x00 style escapes allowed")
    p.add_argument("--opt", action="append", default=[])
    p.add_argument("--mode", default="octet")
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--requests", type=int, default=1, help="send the RRQ this many times")
    p.add_argument("--acks", type=int, default=0, help="vanish: acknowledge this many first")
    p.add_argument("--count", type=int, default=5000, help="dupacks: duplicate ACKs to send")
    p.add_argument("--bind", default="0.0.0.0", help="hold: the client address")
    a = p.parse_args(argv)
    name = a.name.encode("latin-1").decode("unicode_escape").encode("latin-1")
    opts = dict(o.split("=", 1) for o in a.opt)
    if a.action == "two":
        print(json.dumps(two(a.server, name, a.mode, a.timeout)))
        return 0
    if a.action == "dupacks":
        print(json.dumps(dupacks(a.server, name, a.mode, opts, a.count, a.timeout)))
        return 0
    if a.action == "hold":
        print(json.dumps(hold(a.server, name, a.mode, opts, a.requests, a.bind, a.timeout)))
        return 0
    print(json.dumps(run(a.action, a.server, name, a.mode, opts, a.timeout, a.requests,
                         a.acks)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
