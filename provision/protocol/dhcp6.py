"""DHCPv6 messages (RFC 8415): decode and encode, nothing else.

A client/server message is ``msg-type (1) | transaction-id (3) | options``; an
option is ``code (2) | length (2) | data``. Options may repeat (IA_NA), so they
are kept as a list of (code, data) in wire order. Relay messages (RELAY-FORW /
RELAY-REPL) are not handled here: ``decode`` refuses them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from ipaddress import IPv6Address

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
INFORMATION_REQUEST = 11
RELAY_FORW, RELAY_REPL = 12, 13
MESSAGE_NAMES = {SOLICIT: "SOLICIT", ADVERTISE: "ADVERTISE", REQUEST: "REQUEST",
                 CONFIRM: "CONFIRM", RENEW: "RENEW", REBIND: "REBIND", REPLY: "REPLY",
                 RELEASE: "RELEASE", DECLINE: "DECLINE",
                 INFORMATION_REQUEST: "INFORMATION-REQUEST"}

# Option codes (RFC 8415 section 21, RFC 3646, RFC 5970).
CLIENTID = 1
SERVERID = 2
IA_NA = 3
IAADDR = 5
ORO = 6
ELAPSED_TIME = 8
STATUS_CODE = 13
RAPID_COMMIT = 14
USER_CLASS = 15
VENDOR_CLASS = 16
DNS_SERVERS = 23
DOMAIN_LIST = 24
BOOTFILE_URL = 59  # RFC 5970 3.1
CLIENT_ARCH_TYPE = 61  # RFC 5970 3.3
CLIENT_NII = 62

STATUS_SUCCESS = 0
STATUS_NO_ADDRS_AVAIL = 2
STATUS_NOT_ON_LINK = 4

DUID_LLT, DUID_EN, DUID_LL, DUID_UUID = 1, 2, 3, 4
HWTYPE_ETHERNET = 1

MAX_MESSAGE = 65535


class Dhcp6Error(ValueError):
    """A message that cannot be decoded (truncated, a bad option length, a relay)."""


@dataclass
class Dhcp6Message:
    """A DHCPv6 client/server message (RFC 8415 8), options in order."""

    msg_type: int
    xid: bytes  # 3 bytes
    options: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, code: int) -> bytes | None:
        for c, data in self.options:
            if c == code:
                return data
        return None

    def all(self, code: int) -> list[bytes]:
        return [data for c, data in self.options if c == code]


def decode_options(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    i = 0
    while i < len(data):
        if i + 4 > len(data):
            raise Dhcp6Error("truncated option header")
        code, length = struct.unpack_from("!HH", data, i)
        i += 4
        if i + length > len(data):
            raise Dhcp6Error(f"option {code}: length {length} past the end")
        out.append((code, data[i:i + length]))
        i += length
    return out


def encode_options(options: list[tuple[int, bytes]]) -> bytes:
    return b"".join(struct.pack("!HH", c, len(d)) + d for c, d in options)


def decode(data: bytes) -> Dhcp6Message:
    if len(data) < 4:
        raise Dhcp6Error("shorter than a DHCPv6 header")
    if len(data) > MAX_MESSAGE:
        raise Dhcp6Error("longer than a DHCPv6 message")
    if data[0] in (RELAY_FORW, RELAY_REPL):
        raise Dhcp6Error("relay messages are not served")
    return Dhcp6Message(data[0], data[1:4], decode_options(data[4:]))


def encode(msg: Dhcp6Message) -> bytes:
    return bytes((msg.msg_type,)) + msg.xid + encode_options(msg.options)


# -- option bodies -------------------------------------------------------------------


@dataclass(frozen=True)
class IaNa:
    """An IA_NA option (RFC 8415 21.4): its IAID, T1, T2 and sub-options."""

    iaid: bytes  # 4 bytes, opaque
    t1: int
    t2: int
    options: list[tuple[int, bytes]]


def decode_ia_na(data: bytes) -> IaNa:
    if len(data) < 12:
        raise Dhcp6Error("IA_NA shorter than 12 bytes")
    t1, t2 = struct.unpack_from("!II", data, 4)
    return IaNa(data[:4], t1, t2, decode_options(data[12:]))


def ia_na(iaid: bytes, t1: int, t2: int, options: list[tuple[int, bytes]]) -> bytes:
    return iaid + struct.pack("!II", t1, t2) + encode_options(options)


def iaaddr(address: IPv6Address, preferred: int, valid: int) -> bytes:
    return address.packed + struct.pack("!II", preferred, valid)


def status(code: int, message: str) -> bytes:
    return struct.pack("!H", code) + message.encode("utf-8")[:200]


def duid_ll(mac: str) -> bytes:
    """DUID-LL (RFC 8415 11.4) for an Ethernet address."""
    return struct.pack("!HH", DUID_LL, HWTYPE_ETHERNET) + bytes.fromhex(mac.replace(":", ""))


def duid_mac(duid: bytes) -> str | None:
    """The Ethernet address inside a DUID-LLT or DUID-LL, or None (DUID-EN, DUID-UUID)."""
    if len(duid) < 4:
        return None
    kind, hw = struct.unpack_from("!HH", duid)
    body = duid[8:] if kind == DUID_LLT else duid[4:] if kind == DUID_LL else b""
    if hw != HWTYPE_ETHERNET or len(body) != 6:
        return None
    return ":".join(f"{b:02x}" for b in body)


def eui64_mac(address: IPv6Address) -> str | None:
    """The MAC a modified EUI-64 link-local address was made from (RFC 4291 app. A)."""
    b = address.packed
    if not address.is_link_local or b[11:13] != b"\xff\xfe":
        return None
    mac = bytes((b[8] ^ 0x02,)) + b[9:11] + b[13:16]
    return ":".join(f"{x:02x}" for x in mac)


def u16s(data: bytes) -> tuple[int, ...]:
    return tuple(struct.unpack(f"!{len(data) // 2}H", data[: len(data) // 2 * 2]))


def opaque_list(data: bytes) -> list[bytes]:
    """USER_CLASS / VENDOR_CLASS data items: 2-byte length + bytes, repeated."""
    out, i = [], 0
    while i + 2 <= len(data):
        (n,) = struct.unpack_from("!H", data, i)
        out.append(data[i + 2:i + 2 + n])
        i += 2 + n
    return out
