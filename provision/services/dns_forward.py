"""DNS forwarding for the DNS service: one query to one upstream, relayed with the
client's ID, and the small wire helpers the service's loops share with it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time
from dataclasses import dataclass

from ..policy.dns_wire import MAX_QUERY, matches

RECV_SIZE = MAX_QUERY + 1  # a longer datagram arrives cut to this, and is dropped as oversized
AA_BIT = 0x04  # in the third header byte (RFC 1035 section 4.1.1)
RA_BIT = 0x80  # in the fourth


@dataclass(frozen=True)
class Upstream:
    """A DNS server queries outside the zone are forwarded to."""

    host: str
    port: int = 53

    @classmethod
    def parse(cls, text: str) -> Upstream:
        host, _, port = text.partition(":") if text.count(":") == 1 else (text, "", "")
        try:
            ipaddress.IPv4Address(host)
            number = int(port) if port else 53
        except ValueError:
            raise ValueError(f"DNS forwarder {text!r}: expected ADDR or ADDR:PORT") from None
        if not 0 < number < 65536:
            raise ValueError(f"DNS forwarder {text!r}: port out of range")
        return cls(host, number)


def ask(up: Upstream, query: bytes, timeout: float, udp: bool) -> bytes | None:
    """One query to one upstream, with our own random ID; the reply as we relay it."""
    reply = _ask(up, query, timeout, udp)
    return relayed(query, reply) if reply is not None else None


def relayed(query: bytes, reply: bytes) -> bytes:
    """The upstream's reply with the client's ID, AA cleared (the data is not ours) and RA set."""
    return query[:2] + bytes([reply[2] & ~AA_BIT & 0xFF, reply[3] | RA_BIT]) + reply[4:]


def _ask(up: Upstream, query: bytes, timeout: float, udp: bool) -> bytes | None:
    ours = os.urandom(2) + query[2:]
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.settimeout(timeout)
        s.connect((up.host, up.port))
        if udp:
            s.send(ours)
            deadline = time.monotonic() + timeout
            while True:  # skip stray datagrams until ours comes or time runs out
                reply = s.recv(RECV_SIZE)
                if matches(ours, reply):
                    return reply
                s.settimeout(max(0.001, deadline - time.monotonic()))
        s.sendall(struct.pack("!H", len(ours)) + ours)
        head = recv_exact(s, 2)
        answer = recv_exact(s, struct.unpack("!H", head)[0]) if head else None
        return answer if answer and matches(ours, answer) else None


def question_name(query: bytes) -> str:
    """The first question's name as the client sent it ('?' when it does not parse). A
    label may hold any byte, newlines included (RFC 2181 section 11): escape it (logsafe)
    before it reaches a log, as ``_event`` does with its detail."""
    labels: list[bytes] = []
    i = 12
    while i < len(query) and len(labels) < 128:  # bounded: a name has at most 127 labels
        n = query[i]
        if n == 0:
            return (b".".join(labels) + b".").decode("latin-1") if labels else "."
        if n & 0xC0 or i + 1 + n > len(query):  # no pointers in a query's first name
            break
        labels.append(query[i + 1: i + 1 + n])
        i += 1 + n
    return "?"


def recv_exact(conn: socket.socket, n: int, deadline: float | None = None) -> bytes | None:
    """``n`` bytes, None at end of stream; TimeoutError once ``deadline`` (monotonic) passed."""
    buf = b""
    while len(buf) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("message deadline passed")
            conn.settimeout(left)
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
