"""DNS fuzzing of a running `dsas serve` (marker ``fuzz``; issue 13): ``fuzz_cases()``
messages built on valid headers and questions (random flags and opcodes, wrong counts,
EDNS OPT records with random sizes, versions and options, compression pointers including
loops, bad labels, junk records, truncations, oversized), plus some random bytes, over
UDP and TCP from a lab namespace. Afterwards dig is still answered over UDP and TCP, and
the log has no traceback. (tests/unit/test_dns_policy.py fuzzes the pure responder.)"""

from __future__ import annotations

import random
import select
import socket
import struct
import time

import pytest

from lab.testing import require_tool
from tests.support.dns_helpers import DOMAIN, query
from tests.support.dns_lab import CLIENT, SERVER, Net, wait_answering, write_inventory
from tests.support.fuzzing import fuzz_cases
from tests.support.hostile import drain, log_problems
from tests.support.netns_thread import in_netns

pytestmark = pytest.mark.fuzz

CHUNK = 250  # UDP cases between two liveness probes (paces the sender to the server)
TCP_SHARE = 5  # one case in TCP_SHARE goes over TCP
TCP_BATCH = 40  # TCP cases per connection
NAMES = [f"w101.{DOMAIN}", DOMAIN, f"web.{DOMAIN}", f"m1.{DOMAIN}", f"nope.{DOMAIN}",
         "1.1.18.198.in-addr.arpa", "0.18.198.in-addr.arpa", "example.org", "", "arpa",
         f"db-read.{DOMAIN}", f"_http._tcp.{DOMAIN}"]
ALPHABET = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*. \\"
QTYPES = [1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 43, 46, 48, 251, 252, 255, 65535, 0]


def _labels(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.8:
        name = rng.choice(NAMES)
        if rng.random() < 0.2:
            name = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    out = b""
    for _ in range(rng.choice([1, 2, 3, 5, 5, 40, 130])):
        if rng.random() < 0.97:
            n = rng.choice([1, 3, 10, 63, rng.randrange(1, 64)])
        else:  # a length over 63: reserved label types 01 and 10 (RFC 6891 section 5)
            n = rng.choice([64, 0x7F, 0x80, 0xBF])
        size = min(n, 63) if rng.random() < 0.95 else n
        text = (bytes(rng.choice(ALPHABET) for _ in range(size)) if rng.random() < 0.8
                else rng.randbytes(size))  # dnslib refuses most binary labels
        out += bytes([n]) + text
    return out + (b"\0" if rng.random() < 0.9 else b"")


def _name(rng: random.Random, here: int) -> bytes:
    """A name at offset ``here``, with compression pointers now and then (RFC 1035 4.1.4)."""
    r = rng.random()
    if r < 0.85:
        return _labels(rng)
    if r < 0.89:
        return struct.pack("!H", 0xC000 | here)  # points at itself: a loop
    if r < 0.92:
        return b"\x01a" + struct.pack("!H", 0xC000 | here)  # a label then back to itself
    if r < 0.95:
        return struct.pack("!H", 0xC000 | rng.randrange(12))  # into the header
    if r < 0.98:
        return struct.pack("!H", 0xC000 | rng.randrange(0x3FFF))  # anywhere, past the end
    return _labels(rng)[:-1] + struct.pack("!H", 0xC00C)  # suffix pointing at the question


def _opt(rng: random.Random) -> bytes:
    options = b""
    for _ in range(rng.choice([0, 0, 1, 2, 5])):
        code = rng.choice([3, 8, 10, 11, 12, 15, rng.randrange(65536)])  # NSID, ECS, cookie...
        data = rng.randbytes(rng.choice([0, 2, 4, 8, 16, 24, 40]))
        length = len(data) if rng.random() < 0.9 else rng.randrange(65536)
        options += struct.pack("!HH", code, length) + data
    size = rng.choice([0, 1, 511, 512, 1232, 4096, 65535, rng.randrange(65536)])
    ttl = (rng.choice([0, 0, 1, 255]) << 24 | rng.choice([0, 0, 1, 255]) << 16
           | rng.choice([0, 0x8000, rng.randrange(65536)]))  # ext rcode, version, DO+Z
    rdlen = len(options) if rng.random() < 0.9 else rng.randrange(65536)
    owner = b"\0" if rng.random() < 0.95 else _labels(rng)
    return owner + struct.pack("!HHIH", 41, size, ttl, rdlen) + options


def _record(rng: random.Random, here: int) -> bytes:
    data = rng.randbytes(rng.choice([0, 4, 16, 100]))
    return _name(rng, here) + struct.pack("!HHIH", rng.choice(QTYPES), 1, 60,
                                          len(data) if rng.random() < 0.9 else 300) + data


def dns_case(rng: random.Random) -> bytes:
    if rng.random() < 0.04:
        return rng.randbytes(rng.randint(0, 600))  # no structure at all
    flags = 0x0100 if rng.random() < 0.5 else 0
    if rng.random() < 0.1:
        flags |= rng.randrange(16) << 11  # opcode
    if rng.random() < 0.05:
        flags |= 0x8000  # QR: a response
    if rng.random() < 0.1:
        flags |= rng.randrange(65536) & 0x07FF  # AA, TC, RA, Z, AD, CD, rcode
    questions = [1] if rng.random() < 0.85 else [rng.choice([0, 2, 3])]
    body = bytearray()
    for _ in range(questions[0]):
        body += _name(rng, 12 + len(body))
        qclass = rng.choice([1, 1, 1, 1, 3, 4, 254, 255, rng.randrange(65536)])
        body += struct.pack("!HH", rng.choice(QTYPES) if rng.random() < 0.9
                            else rng.randrange(65536), qclass)
    an = ns = 0
    if rng.random() < 0.08:
        an = rng.randint(1, 3)
        for _ in range(an):
            body += _record(rng, 12 + len(body))
    if rng.random() < 0.04:
        ns = 1
        body += _record(rng, 12 + len(body))
    ar = 0
    if rng.random() < 0.4:
        ar = rng.choice([1, 1, 1, 2])
        for _ in range(ar):
            body += _opt(rng)
    counts = [questions[0], an, ns, ar]
    if rng.random() < 0.1:  # counts that do not match the records
        counts[rng.randrange(4)] = rng.choice([0, 1, 2, 100, 65535])
    data = struct.pack("!HH4H", rng.getrandbits(16), flags, *counts) + bytes(body)
    r = rng.random()
    if r < 0.07:
        data = data[: rng.randrange(len(data) + 1)]  # truncated anywhere
    elif r < 0.1:
        data += rng.randbytes(rng.choice([1, 5, 50]))  # trailing junk
    elif r < 0.12:
        data = data.ljust(rng.choice([513, 1025, 1500, 4000]), b"\0")  # oversized
    return data


def _probe(sock: socket.socket, ident: int, tries: int = 3, wait: float = 3) -> bool:
    """A valid UDP query, sent up to ``tries`` times (a datagram may be dropped by a full
    socket buffer); True when its answer comes. Other answers are read and dropped."""
    for _ in range(tries):
        sock.send(bytes(query(f"w101.{DOMAIN}", ident=ident).pack()))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:  # bounded: wait
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            try:
                reply = sock.recv(65535)
            except ConnectionRefusedError:
                continue
            if reply[:2] == struct.pack("!H", ident) and len(reply) > 12 and reply[2] & 0x80:
                return True
    return False


def _tcp_batch(cases: list[bytes]) -> None:
    """One connection: the cases framed (a few with a wrong length), then EOF; read until
    the server closes."""
    with socket.create_connection((SERVER, 53), timeout=15, source_address=(CLIENT, 0)) as s:
        stream = b""
        rng = random.Random(len(cases) ^ len(b"".join(cases)))
        for c in cases:
            length = len(c) if rng.random() < 0.97 else rng.randrange(65536)
            stream += struct.pack("!H", length) + c
        try:
            s.sendall(stream)
            s.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and s.recv(65536):  # bounded: 15 s
                pass
        except OSError:
            pass  # the server may close first (an oversized length)


def test_fuzzed_dns_messages_leave_the_server_serving(net: Net) -> None:
    proc = net.serve(write_inventory(net.work / "c.yaml"), "--bind", SERVER)
    wait_answering(net.client, SERVER, proc)
    n = fuzz_cases()
    rng = random.Random(0xD45)
    udp = in_netns(net.client.name, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    tcp_cases: list[bytes] = []
    sent = {"udp": 0, "tcp": 0}
    with udp:
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        udp.connect((SERVER, 53))
        for i in range(n):
            case = dns_case(rng)
            if i % TCP_SHARE == 0:
                tcp_cases.append(case)
                if len(tcp_cases) == TCP_BATCH:
                    in_netns(net.client.name, lambda b=tcp_cases: _tcp_batch(b))  # type: ignore[misc]
                    sent["tcp"] += len(tcp_cases)
                    tcp_cases = []
                continue
            try:
                udp.send(case)
            except ConnectionRefusedError:  # an ICMP error for an earlier datagram
                pass
            sent["udp"] += 1
            drain(udp)  # the answers: a full buffer would drop the probe's
            if (i + 1) % CHUNK == 0:
                assert _probe(udp, i & 0xFFFF), f"no answer after case {i}"
                assert proc.poll() is None
        if tcp_cases:
            in_netns(net.client.name, lambda: _tcp_batch(tcp_cases))
            sent["tcp"] += len(tcp_cases)
        assert _probe(udp, 0xFFFF)
    dig = require_tool("dig")
    for transport in ("+notcp", "+tcp"):
        out = net.client.run([dig, f"@{SERVER}", "+short", "+time=3", "+tries=1", transport,
                              f"w101.{DOMAIN}"], check=False, timeout=20)
        assert out.stdout.strip() == "198.18.1.1", (transport, out.stdout, out.stderr)
    assert proc.poll() is None
    net.lab.stop(proc)
    log = net.work / "serve-0.log"
    text = log.read_text()
    assert "Traceback" not in text, text[-6000:]
    for kind in ("internal", "error", "recv", "send"):  # M_ERRORS: a bug, not bad input
        assert f"dns: {kind} from" not in text, text[-6000:]
    assert [ln for ln in log_problems(log) if "Traceback" in ln] == []
    print(f"{n} DNS cases sent: {sent}")
