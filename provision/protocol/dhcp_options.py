"""DHCPv4 option codes and the value codecs the server needs.

Pure functions: bytes in, typed value out, and back. Every decode failure raises
``DhcpDecodeError`` (defined here so the option codecs and the packet codec share
it). Offsets in these errors are relative to the start of the option value unless
the caller rebases them.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

IPv4Address = ipaddress.IPv4Address


class DhcpDecodeError(ValueError):
    """Any malformed DHCP input. ``offset`` is where in the datagram it was found."""

    def __init__(self, offset: int, reason: str, kind: str = "malformed") -> None:
        super().__init__(f"{reason} (at offset {offset})")
        self.offset = offset
        self.reason = reason
        self.kind = kind  # a short, fixed label for counters


class DhcpEncodeError(ValueError):
    """A packet that cannot be encoded (a value out of range, options that do not fit)."""


# -- option codes --------------------------------------------------------------
PAD = 0  # RFC 2132 3.1
SUBNET_MASK = 1  # RFC 2132 3.3
ROUTER = 3  # RFC 2132 3.5
DNS_SERVERS = 6  # RFC 2132 3.8
HOST_NAME = 12  # RFC 2132 3.14
DOMAIN_NAME = 15  # RFC 2132 3.17
BROADCAST_ADDRESS = 28  # RFC 2132 5.3
VENDOR_SPECIFIC = 43  # RFC 2132 8.4 (PXE: RFC 4578 / PXE 2.1 spec)
REQUESTED_IP = 50  # RFC 2132 9.1
LEASE_TIME = 51  # RFC 2132 9.2
OVERLOAD = 52  # RFC 2132 9.3
MESSAGE_TYPE = 53  # RFC 2132 9.6
SERVER_ID = 54  # RFC 2132 9.7
PARAMETER_LIST = 55  # RFC 2132 9.8
MESSAGE = 56  # RFC 2132 9.9
MAX_MESSAGE_SIZE = 57  # RFC 2132 9.10
RENEWAL_TIME = 58  # RFC 2132 9.11 (T1)
REBINDING_TIME = 59  # RFC 2132 9.12 (T2)
VENDOR_CLASS = 60  # RFC 2132 9.13
CLIENT_ID = 61  # RFC 2132 9.14
TFTP_SERVER = 66  # RFC 2132 9.4
BOOTFILE_NAME = 67  # RFC 2132 9.5
USER_CLASS = 77  # RFC 3004
RELAY_AGENT_INFO = 82  # RFC 3046
CLIENT_ARCH = 93  # RFC 4578 2.1
CLIENT_NDI = 94  # RFC 4578 2.2
CLIENT_UUID = 97  # RFC 4578 2.3
IPXE_ENCAP = 175  # iPXE's encapsulated options (ipxe.org/cfg)
END = 255  # RFC 2132 3.2

# DHCP message types, RFC 2132 9.6.
DISCOVER = 1
OFFER = 2
REQUEST = 3
DECLINE = 4
ACK = 5
NAK = 6
RELEASE = 7
INFORM = 8
MESSAGE_TYPE_NAMES = {
    DISCOVER: "DISCOVER",
    OFFER: "OFFER",
    REQUEST: "REQUEST",
    DECLINE: "DECLINE",
    ACK: "ACK",
    NAK: "NAK",
    RELEASE: "RELEASE",
    INFORM: "INFORM",
}

# RFC 4578 2.1 / IANA "Processor Architecture Types".
ARCH_X86_BIOS = 0
ARCH_EFI_IA32 = 6
ARCH_EFI_X64 = 7
ARCH_EFI_BC = 9  # EFI byte code; in practice x86-64 UEFI firmware sends it
ARCH_EFI_ARM32 = 10
ARCH_EFI_ARM64 = 11
ARCH_EFI_X64_HTTP = 16  # x86-64 UEFI HTTP boot (UEFI 2.5+ 24.7; vendor class HTTPClient)

# PXE 2.1 vendor options (inside option 43).
PXE_DISCOVERY_CONTROL = 6
# Bit 3: "if a boot file name is present in the offer, download it (no menu, no
# boot server discovery)". PXE 2.1 spec, table 2-1.
PXE_DISCOVERY_USE_BOOTFILE = 0x08

# iPXE encapsulated option 175 sub-options (ipxe.org/cfg).
IPXE_BUS_ID = 177
IPXE_NO_PXEDHCP = 176
IPXE_VERSION = 235

# Options whose value has a fixed length or a fixed unit; checked on decode so that
# policy code never sees a malformed value. (code -> (minimum length, unit)).
_SHAPES: dict[int, tuple[int, int]] = {
    SUBNET_MASK: (4, 4),
    ROUTER: (4, 4),
    DNS_SERVERS: (4, 4),
    BROADCAST_ADDRESS: (4, 4),
    REQUESTED_IP: (4, 4),
    LEASE_TIME: (4, 4),
    OVERLOAD: (1, 1),
    MESSAGE_TYPE: (1, 1),
    SERVER_ID: (4, 4),
    MAX_MESSAGE_SIZE: (2, 2),
    RENEWAL_TIME: (4, 4),
    REBINDING_TIME: (4, 4),
    CLIENT_ARCH: (2, 2),
    CLIENT_ID: (2, 1),  # RFC 2132 9.14: minimum length 2
    CLIENT_NDI: (3, 1),
    CLIENT_UUID: (1, 1),
}
SHAPED = frozenset(_SHAPES)
# Options that must be exactly the minimum length.
_EXACT = {OVERLOAD, MESSAGE_TYPE, REQUESTED_IP, SERVER_ID, MAX_MESSAGE_SIZE, LEASE_TIME,
          RENEWAL_TIME, REBINDING_TIME, SUBNET_MASK, BROADCAST_ADDRESS, CLIENT_NDI}


# code -> (minimum, unit, exact) for the decoder's one pass over a packet's options
SHAPES: dict[int, tuple[int, int, bool]] = {
    code: (minimum, unit, code in _EXACT) for code, (minimum, unit) in _SHAPES.items()}


def check_shape(code: int, value: bytes, offset: int) -> None:
    """Raise ``DhcpDecodeError`` if a well-known option has an impossible length."""
    shape = SHAPES.get(code)
    if shape is None:
        return
    minimum, unit, exact = shape
    n = len(value)
    if n < minimum or n % unit or (exact and n != minimum):
        raise DhcpDecodeError(offset, f"option {code} has bad length {n}", "bad_option_length")


# -- value codecs ---------------------------------------------------------------

def ip(value: IPv4Address | str) -> bytes:
    return IPv4Address(value).packed


def ips(values: Iterable[IPv4Address | str]) -> bytes:
    return b"".join(IPv4Address(v).packed for v in values)


def u8(n: int) -> bytes:
    return struct.pack("!B", n)


def u16(n: int) -> bytes:
    return struct.pack("!H", n)


def u32(n: int) -> bytes:
    return struct.pack("!I", n)


def text(s: str) -> bytes:
    return s.encode("ascii")


def to_ip(value: bytes) -> IPv4Address:
    return IPv4Address(value[:4])


def to_ips(value: bytes) -> tuple[IPv4Address, ...]:
    return tuple(IPv4Address(value[i : i + 4]) for i in range(0, len(value) - 3, 4))


def to_u16s(value: bytes) -> tuple[int, ...]:
    return struct.unpack(f"!{len(value) // 2}H", value[: len(value) // 2 * 2])


def parse_tlv(value: bytes, base: int = 0, what: str = "sub-option") -> dict[int, bytes]:
    """Code/length/value list with PAD and END (options 43, 82, 175). Repeats concatenate."""
    out: dict[int, bytes] = {}
    i, n = 0, len(value)
    while i < n:
        code = value[i]
        if code == PAD:
            i += 1
            continue
        if code == END:
            break
        if i + 1 >= n:
            raise DhcpDecodeError(base + i, f"{what} {code} has no length", "bad_suboption")
        length = value[i + 1]
        if i + 2 + length > n:
            raise DhcpDecodeError(base + i, f"{what} {code} overruns its container",
                                  "bad_suboption")
        out[code] = out.get(code, b"") + value[i + 2 : i + 2 + length]
        i += 2 + length
    return out


def build_tlv(items: Mapping[int, bytes], end: bool = False) -> bytes:
    out = bytearray()
    for code, val in items.items():
        if not 0 < code < 255 or len(val) > 255:
            raise DhcpEncodeError(f"sub-option {code} cannot be encoded ({len(val)} bytes)")
        out += bytes((code, len(val))) + val
    if end:
        out.append(END)
    return bytes(out)


def parse_relay_agent(value: bytes, base: int = 0) -> tuple[tuple[int, bytes], ...]:
    """Option 82 sub-options, in order (RFC 3046 2.0: no PAD or END inside)."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(value)
    while i < n:
        if i + 1 >= n or i + 2 + value[i + 1] > n:
            raise DhcpDecodeError(base + i, "relay agent sub-option overruns option 82",
                                  "bad_suboption")
        out.append((value[i], value[i + 2 : i + 2 + value[i + 1]]))
        i += 2 + value[i + 1]
    return tuple(out)


def parse_user_class(value: bytes) -> tuple[bytes, ...]:
    """Option 77 user classes.

    RFC 3004 encodes a list of length-prefixed strings, but iPXE and many PXE ROMs
    send the bare string (``iPXE``). A value that does not parse exactly as the RFC
    form is one raw class.
    """
    out: list[bytes] = []
    i, n = 0, len(value)
    while i < n:
        length = value[i]
        if length == 0 or i + 1 + length > n:
            return (value,)
        out.append(value[i + 1 : i + 1 + length])
        i += 1 + length
    return tuple(out) if out else (value,)


def build_user_class(classes: Iterable[bytes]) -> bytes:
    """RFC 3004 form."""
    out = bytearray()
    for c in classes:
        if not 0 < len(c) < 256:
            raise DhcpEncodeError("user class must be 1..255 bytes")
        out.append(len(c))
        out += c
    return bytes(out)


@dataclass(frozen=True)
class ClientNdi:
    """RFC 4578 2.2: network interface type (1 = UNDI) and version."""

    type: int
    major: int
    minor: int


def to_ndi(value: bytes) -> ClientNdi:
    return ClientNdi(value[0], value[1], value[2])


def to_uuid(value: bytes) -> bytes | None:
    """RFC 4578 2.3: type 0 followed by 16 bytes; anything else is ignored."""
    if len(value) == 17 and value[0] == 0:
        return value[1:]
    return None
