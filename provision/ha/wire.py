"""The replication channel's messages: framed, authenticated with the pair key, in order.

A connection starts with the server's HELLO (16 random bytes, its nonce, in clear) and
the client's HELLO (its own 16 random bytes, sealed). From then on every frame is

    length (u32) | version (u8) | type (u8) | direction (u8) | seq (u64) | payload | mac

where ``mac`` is HMAC-SHA256(pair key, server nonce | client nonce | header | payload),
``direction`` says who sent it (1 client, 2 server) and ``seq`` counts the frames of one
direction from 1, each exactly one more than the last. A frame with a bad MAC, another
direction, a sequence out of order (a replay, a drop, a reordering) or a bad version is
refused (``WireError``, with the reason counted by the caller) and the connection is
closed: nothing in it is applied. Both nonces are fresh per connection, so no frame of
an earlier connection (nor of the other direction) verifies in this one. The key never
leaves the key file: it is not logged and not sent.

Payloads are JSON (the changes of one batch, a full lease set, a status, a mirror's
manifest or a base64 piece of one of its files).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
from typing import Any

VERSION = 1
NONCE = 16
MAC = 32
HEADER = struct.Struct(">BBBQ")
LENGTH = struct.Struct(">I")
MAX_FRAME = 64 << 20  # a full lease set of 100,000 leases is ~10 MB of JSON
KEY_BYTES = 32

CLIENT, SERVER = 1, 2

# message types
HELLO = 1
UPDATE = 2  # a batch of changes; the peer answers ACK once they are in its store
ACK = 3
PULL = 4  # send me your whole lease set (a returning master, before it answers anyone)
STATE = 5  # the whole lease set, with its sha256
MERGE = 6  # here is my whole lease set: merge it (catch-up after an interruption)
PING = 7  # heartbeat, also carries the sender's status; answered with PONG
PONG = 8
STATUS = 9  # what `dsas master status` asks; answered with PONG
TABLES = 10  # the other state (events, push and inventory history), whole; ACK
MANIFEST = 11  # the mirror (ha.mirror): a kind's manifest, please; answered with FILES
FILES = 12
CHUNK = 13  # a piece of one file of the manifest; answered with DATA
DATA = 14
LEAVE = 15  # you are no longer a master of the pair (`dsas master join`): let the VIP go
NAMES = {HELLO: "hello", UPDATE: "update", ACK: "ack", PULL: "pull", STATE: "state",
         MERGE: "merge", PING: "ping", PONG: "pong", STATUS: "status", TABLES: "tables",
         MANIFEST: "manifest", FILES: "files", CHUNK: "chunk", DATA: "data", LEAVE: "leave"}


class WireError(Exception):
    """A frame that is refused; ``reason`` is the metric label (bad_mac, bad_sequence...)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


def new_key() -> bytes:
    """A fresh pair key (hex text, so the file can be copied with any tool)."""
    return os.urandom(KEY_BYTES).hex().encode() + b"\n"


def parse_key(data: bytes) -> bytes:
    text = data.strip()
    try:
        key = bytes.fromhex(text.decode())
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the pair key file holds no hex key (`dsas master key` makes one)") \
            from None
    if len(key) < 16:
        raise ValueError("the pair key is too short (`dsas master key` makes one)")
    return key


class Codec:
    """One connection's sealing and opening: the key, both nonces, both sequences."""

    def __init__(self, key: bytes, server_nonce: bytes, client_nonce: bytes, me: int) -> None:
        self._key = key
        self._nonces = server_nonce + client_nonce
        self.me = me
        self.peer = SERVER if me == CLIENT else CLIENT
        self.sent = 0
        self.received = 0

    def _mac(self, header: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, self._nonces + header + payload, hashlib.sha256).digest()

    def seal(self, mtype: int, body: Any) -> bytes:
        payload = json.dumps(body, separators=(",", ":")).encode()
        self.sent += 1
        header = HEADER.pack(VERSION, mtype, self.me, self.sent)
        frame = header + payload + self._mac(header, payload)
        return LENGTH.pack(len(frame)) + frame

    def open(self, frame: bytes) -> tuple[int, Any]:
        """(type, body) of one frame (without its length prefix), or WireError."""
        if len(frame) < HEADER.size + MAC:
            raise WireError("short_frame")
        header, payload, mac = frame[:HEADER.size], frame[HEADER.size:-MAC], frame[-MAC:]
        if not hmac.compare_digest(mac, self._mac(header, payload)):
            raise WireError("bad_mac")
        version, mtype, direction, seq = HEADER.unpack(header)
        if version != VERSION:
            raise WireError("bad_version", str(version))
        if direction != self.peer:
            raise WireError("bad_direction")
        if seq != self.received + 1:
            raise WireError("bad_sequence", f"{seq} after {self.received}")
        self.received = seq
        try:
            body = json.loads(payload)
        except ValueError:
            raise WireError("bad_payload") from None
        return mtype, body


def read_frame(sock: socket.socket, limit: int = MAX_FRAME) -> bytes:
    """One frame's bytes (after its length); ConnectionError at EOF, WireError if too big."""
    (n,) = LENGTH.unpack(_read(sock, LENGTH.size))
    if n > limit:
        raise WireError("oversized", str(n))
    return _read(sock, n)


def _read(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        buf += chunk
    return bytes(buf)


def client_handshake(sock: socket.socket, key: bytes) -> Codec:
    """Read the server's nonce, send ours sealed: the codec of this connection."""
    server_nonce = _read(sock, NONCE)
    client_nonce = os.urandom(NONCE)
    sock.sendall(client_nonce)
    codec = Codec(key, server_nonce, client_nonce, CLIENT)
    sock.sendall(codec.seal(HELLO, {}))
    mtype, _ = codec.open(read_frame(sock))  # the server proves it has the key too
    if mtype != HELLO:
        raise WireError("bad_hello")
    return codec


def server_handshake(sock: socket.socket, key: bytes) -> Codec:
    server_nonce = os.urandom(NONCE)
    sock.sendall(server_nonce)
    client_nonce = _read(sock, NONCE)
    codec = Codec(key, server_nonce, client_nonce, SERVER)
    mtype, _ = codec.open(read_frame(sock, 4096))
    if mtype != HELLO:
        raise WireError("bad_hello")
    sock.sendall(codec.seal(HELLO, {}))
    return codec
