"""TFTP codec and option negotiation: bytes in, typed values out. No sockets.

RFC 1350 (the protocol), RFC 2347 (option extension, OACK), RFC 2348 (blksize),
RFC 2349 (timeout, tsize), RFC 7440 (windowsize).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

# Opcodes (RFC 1350 section 5; OACK from RFC 2347).
OP_RRQ = 1
OP_WRQ = 2
OP_DATA = 3
OP_ACK = 4
OP_ERROR = 5
OP_OACK = 6

# Error codes (RFC 1350 section 5 and Appendix; 8 from RFC 2347).
ERR_UNDEFINED = 0  # Not defined, see error message (RFC 1350)
ERR_FILE_NOT_FOUND = 1  # File not found (RFC 1350)
ERR_ACCESS_VIOLATION = 2  # Access violation (RFC 1350)
ERR_DISK_FULL = 3  # Disk full or allocation exceeded (RFC 1350)
ERR_ILLEGAL_OPERATION = 4  # Illegal TFTP operation (RFC 1350)
ERR_UNKNOWN_TID = 5  # Unknown transfer ID (RFC 1350)
ERR_FILE_EXISTS = 6  # File already exists (RFC 1350)
ERR_NO_SUCH_USER = 7  # No such user (RFC 1350)
ERR_OPTION_REFUSED = 8  # Terminate transfer due to option negotiation (RFC 2347)

DEFAULT_BLKSIZE = 512  # RFC 1350
MIN_BLKSIZE = 8  # RFC 2348
MAX_BLKSIZE = 65464  # RFC 2348
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # seconds, RFC 2349
MIN_WINDOW, MAX_WINDOW = 1, 65535  # RFC 7440
MAX_REQUEST = 1500  # a request larger than one Ethernet frame is refused unparsed
MODES = ("octet", "netascii")  # "mail" (RFC 1350) is obsolete and refused
HEADER = struct.Struct("!HH")  # opcode, then block number (DATA, ACK) or error code (ERROR)


class TftpDecodeError(ValueError):
    """Any malformed TFTP packet; ``offset`` is where decoding stopped."""

    def __init__(self, message: str, offset: int = 0):
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


@dataclass(frozen=True)
class Request:
    """A TFTP read or write request (RFC 1350), with its options (RFC 2347)."""

    opcode: int  # OP_RRQ or OP_WRQ
    filename: str  # as sent (latin-1 decoded), not yet confined
    mode: str  # lower case
    options: dict[str, str] = field(default_factory=dict)  # names lower case


def decode_request(data: bytes) -> Request:
    """Decode an RRQ/WRQ: opcode, filename NUL, mode NUL, (option NUL value NUL)*."""
    if len(data) > MAX_REQUEST:
        raise TftpDecodeError("request too large", MAX_REQUEST)
    if len(data) < 4:
        raise TftpDecodeError("short packet", len(data))
    (opcode,) = struct.unpack_from("!H", data)
    if opcode not in (OP_RRQ, OP_WRQ):
        raise TftpDecodeError(f"opcode {opcode} is not a request", 0)
    if not data.endswith(b"\x00"):
        raise TftpDecodeError("request not NUL-terminated", len(data))
    fields = data[2:-1].split(b"\x00")
    if len(fields) < 2 or len(fields) % 2:
        raise TftpDecodeError("odd number of request fields", 2)
    filename = fields[0].decode("latin-1")
    mode = fields[1].decode("latin-1").lower()
    options: dict[str, str] = {}
    for i in range(2, len(fields), 2):
        name = fields[i].decode("latin-1").lower()
        if name in options:  # RFC 2347 does not allow repeats; first one wins
            continue
        options[name] = fields[i + 1].decode("latin-1")
    return Request(opcode, filename, mode, options)


def decode_ack_or_error(data: bytes | bytearray | memoryview) -> tuple[int, int, str]:
    """(opcode, block-or-code, message) of an ACK or ERROR from a client."""
    if len(data) < 4:
        raise TftpDecodeError("short packet", len(data))
    opcode, num = HEADER.unpack_from(data)
    if opcode == OP_ACK:
        return opcode, num, ""
    if opcode == OP_ERROR:
        return opcode, num, bytes(data[4:]).split(b"\x00", 1)[0].decode("latin-1", "replace")
    raise TftpDecodeError(f"unexpected opcode {opcode}", 0)


def encode_error(code: int, message: str) -> bytes:
    return struct.pack("!HH", OP_ERROR, code) + message.encode("latin-1", "replace") + b"\x00"


def encode_oack(options: dict[str, str]) -> bytes:
    body = b"".join(k.encode("latin-1") + b"\x00" + v.encode("latin-1") + b"\x00"
                    for k, v in options.items())
    return struct.pack("!H", OP_OACK) + body


@dataclass(frozen=True)
class Negotiated:
    """What the server accepted: the OACK to send and the transfer settings."""

    oack: dict[str, str]
    blksize: int = DEFAULT_BLKSIZE
    timeout: float | None = None  # client's requested retransmission timeout
    windowsize: int = 1


def negotiate(
    options: dict[str, str],
    size: Callable[[], int],
    max_blksize: int = MAX_BLKSIZE,
    max_window: int = 64,
    max_timeout: float = MAX_TIMEOUT,
) -> Negotiated:
    """Answer a client's options (RFC 2347): unknown or invalid ones are left out.

    blksize above our limit is answered with the limit (RFC 2348 allows a smaller
    value); tsize is the exact byte count ``size()`` gives (RFC 2349); windowsize
    is capped at ``max_window`` (RFC 7440). A timeout above ``max_timeout`` (the
    server's own give-up time) is left out: RFC 2349 lets the server only accept
    the client's value or decline it, and a client's ``timeout 255`` must not
    hold a transfer for minutes. The OACK keeps the client's order.
    """
    oack: dict[str, str] = {}
    blksize, timeout, window = DEFAULT_BLKSIZE, None, 1
    for name, value in options.items():
        num = _int(value)
        if name == "blksize" and num is not None and num >= MIN_BLKSIZE:
            blksize = min(num, max_blksize, MAX_BLKSIZE)
            oack[name] = str(blksize)
        elif (name == "timeout" and num is not None and MIN_TIMEOUT <= num <= MAX_TIMEOUT
              and num <= max_timeout):
            timeout = float(num)
            oack[name] = str(num)
        elif name == "tsize" and num is not None and num >= 0:
            oack[name] = str(size())
        elif name == "windowsize" and num is not None and num >= MIN_WINDOW and max_window > 1:
            window = min(num, max_window, MAX_WINDOW)
            oack[name] = str(window)
    return Negotiated(oack, blksize, timeout, window)


def _int(value: str) -> int | None:
    v = value.strip()
    return int(v) if v.isdigit() and len(v) <= 10 else None


def netascii_encode(data: bytes) -> bytes:
    """RFC 764 NVT ASCII as RFC 1350 uses it: LF -> CR LF, CR -> CR NUL."""
    return data.replace(b"\r", b"\r\x00").replace(b"\n", b"\r\n")
