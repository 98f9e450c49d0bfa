"""DHCPv4 / BOOTP packet codec (RFC 951, 2131, 2132, 3396, 4578). Bytes <-> ``DhcpPacket``.

No sockets, clocks or logging. ``decode`` raises only ``DhcpDecodeError`` (with the
offset of the problem); ``encode`` raises only ``DhcpEncodeError``.

Options are kept as raw bytes by code (repeated options concatenated, RFC 3396);
option overload (52) is undone on decode and applied on encode only when the
options do not fit, so a decoded packet never carries option 52. Typed views of the
options the server needs are properties of the packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address

from . import dhcp_options as o
from .dhcp_options import DhcpDecodeError, DhcpEncodeError

__all__ = ["DhcpPacket", "DhcpDecodeError", "DhcpEncodeError", "decode", "encode",
           "make_packet"]

BOOTREQUEST = 1  # RFC 951
BOOTREPLY = 2
HTYPE_ETHERNET = 1  # RFC 1700 hardware type
FLAG_BROADCAST = 0x8000  # RFC 2131 2, figure 2
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 3
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")
HEADER_LEN = HEADER.size  # 236
OPTIONS_START = HEADER_LEN + 4  # after the magic cookie
SNAME_OFFSET = 44
FILE_OFFSET = 108
MIN_PACKET = 300  # RFC 1542 2.1: BOOTP relays may drop anything shorter
DEFAULT_MAX_SIZE = 576  # RFC 2131 2: every client accepts 576-byte IP datagrams
IP_UDP_HEADERS = 28  # option 57 counts the IP and UDP headers (RFC 2132 9.10)
ZERO = IPv4Address(0)
ZERO_BYTES = bytes(4)
END_BYTE = bytes((o.END,))
PADDING = bytes(MIN_PACKET)  # zeros to pad short replies with (sliced)


@dataclass(frozen=True)
class DhcpPacket:
    """A DHCPv4 message (RFC 2131 2), options by code."""

    op: int
    xid: int
    chaddr: bytes  # the hardware address, hlen bytes (6 for Ethernet)
    htype: int = HTYPE_ETHERNET
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""  # without trailing NULs
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    # -- header views --------------------------------------------------------
    @cached_property
    def mac(self) -> str:
        return self.chaddr.hex(":")

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    # -- option views ----------------------------------------------------------
    @property
    def message_type(self) -> int | None:
        v = self.options.get(o.MESSAGE_TYPE)
        return v[0] if v else None

    def _ip(self, code: int) -> IPv4Address | None:
        v = self.options.get(code)
        return _address(v) if v and len(v) == 4 else None

    @property
    def requested_ip(self) -> IPv4Address | None:
        return self._ip(o.REQUESTED_IP)

    @property
    def server_id(self) -> IPv4Address | None:
        return self._ip(o.SERVER_ID)

    @property
    def max_message_size(self) -> int:
        v = self.options.get(o.MAX_MESSAGE_SIZE)
        size = struct.unpack("!H", v)[0] if v and len(v) == 2 else DEFAULT_MAX_SIZE
        return max(size, DEFAULT_MAX_SIZE)

    @property
    def parameter_list(self) -> bytes:
        return self.options.get(o.PARAMETER_LIST, b"")

    @property
    def client_archs(self) -> tuple[int, ...]:
        return o.to_u16s(self.options.get(o.CLIENT_ARCH, b""))

    @property
    def client_arch(self) -> int | None:
        archs = self.client_archs
        return archs[0] if archs else None

    @property
    def vendor_class(self) -> bytes:
        return self.options.get(o.VENDOR_CLASS, b"")

    @property
    def is_pxe(self) -> bool:
        return self.vendor_class.startswith(b"PXEClient")

    @property
    def user_classes(self) -> tuple[bytes, ...]:
        v = self.options.get(o.USER_CLASS)
        return o.parse_user_class(v) if v else ()

    @property
    def ipxe_options(self) -> dict[int, bytes]:
        v = self.options.get(o.IPXE_ENCAP)
        return o.parse_tlv(v) if v else {}

    @property
    def is_ipxe(self) -> bool:
        """iPXE says so in option 77 (raw or RFC 3004) or by sending option 175."""
        return o.IPXE_ENCAP in self.options or b"iPXE" in self.user_classes

    @property
    def uuid(self) -> bytes | None:
        v = self.options.get(o.CLIENT_UUID)
        return o.to_uuid(v) if v else None

    @property
    def ndi(self) -> o.ClientNdi | None:
        v = self.options.get(o.CLIENT_NDI)
        return o.to_ndi(v) if v and len(v) == 3 else None

    @property
    def client_id(self) -> bytes | None:
        return self.options.get(o.CLIENT_ID)

    @property
    def hostname(self) -> str | None:
        v = self.options.get(o.HOST_NAME)
        return v.decode("ascii", "replace") if v else None

    @property
    def relay_agent(self) -> tuple[tuple[int, bytes], ...]:
        v = self.options.get(o.RELAY_AGENT_INFO)
        return o.parse_relay_agent(v) if v else ()


# -- decode --------------------------------------------------------------------

def decode(data: bytes) -> DhcpPacket:
    """Parse one BOOTP/DHCP datagram. Raises ``DhcpDecodeError`` for anything malformed."""
    if len(data) < HEADER_LEN:
        raise DhcpDecodeError(len(data), f"truncated: {len(data)} bytes, need {HEADER_LEN}",
                              "truncated")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
     sname, bootfile) = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise DhcpDecodeError(0, f"bad op {op}", "bad_op")
    if htype != HTYPE_ETHERNET or hlen != 6:
        raise DhcpDecodeError(1, f"not Ethernet: htype {htype} hlen {hlen}", "not_ethernet")
    options: dict[int, bytes] = {}
    if len(data) >= OPTIONS_START and data[HEADER_LEN:OPTIONS_START] == MAGIC_COOKIE:
        where: dict[int, int] = {}
        _parse_options(data, OPTIONS_START, len(data), options, where)
        overload = options.pop(o.OVERLOAD, None)
        if overload is not None:
            if len(overload) != 1 or overload[0] not in (1, 2, 3):
                raise DhcpDecodeError(where[o.OVERLOAD], "bad option 52", "bad_overload")
            if overload[0] & 1:  # RFC 2131 4.1: 'file' first, then 'sname'
                _parse_options(data, FILE_OFFSET, FILE_OFFSET + 128, options, where)
                bootfile = b""
            if overload[0] & 2:
                _parse_options(data, SNAME_OFFSET, SNAME_OFFSET + 64, options, where)
                sname = b""
            options.pop(o.OVERLOAD, None)
        _check_options(options, where)
    pkt = make_packet(
        op, xid, chaddr[:hlen], htype, hops, secs, flags, _address(ciaddr),
        _address(yiaddr), _address(siaddr), _address(giaddr), sname.rstrip(b"\0"),
        bootfile.rstrip(b"\0"), options,
    )
    # ``mac`` now: every request's is read, and Python 3.11's cached_property takes a
    # lock on its first read (a third of decode's time); the instance's own value
    # shadows the descriptor, so later reads are plain attribute reads.
    pkt.__dict__["mac"] = pkt.chaddr.hex(":")
    return pkt


def make_packet(op: int, xid: int, chaddr: bytes, htype: int = HTYPE_ETHERNET, hops: int = 0,
                secs: int = 0, flags: int = 0, ciaddr: IPv4Address = ZERO,
                yiaddr: IPv4Address = ZERO, siaddr: IPv4Address = ZERO,
                giaddr: IPv4Address = ZERO, sname: bytes = b"", file: bytes = b"",
                options: dict[int, bytes] | None = None) -> DhcpPacket:
    """``DhcpPacket(...)`` for the per-packet paths: the same object, made without
    the frozen dataclass's one ``object.__setattr__`` per field (a third of the time)."""
    pkt = object.__new__(DhcpPacket)
    pkt.__dict__.update(op=op, xid=xid, chaddr=chaddr, htype=htype, hops=hops, secs=secs,
                        flags=flags, ciaddr=ciaddr, yiaddr=yiaddr, siaddr=siaddr,
                        giaddr=giaddr, sname=sname, file=file,
                        options={} if options is None else options)
    return pkt


ADDRESSES_CACHED = 4096  # distinct header addresses remembered by the decoder


def _address(raw: bytes) -> IPv4Address:
    """The address of 4 header bytes: most are 0.0.0.0, and most others repeat (the relay's
    giaddr), so they are remembered (IPv4Address objects are immutable)."""
    if raw == ZERO_BYTES:
        return ZERO
    address = _ADDRESSES.get(raw)
    if address is None:
        if len(_ADDRESSES) >= ADDRESSES_CACHED:  # bounded: ciaddr of renewals varies
            _ADDRESSES.clear()
        address = _ADDRESSES[raw] = IPv4Address(raw)
    return address


_ADDRESSES: dict[bytes, IPv4Address] = {}


def _parse_options(
    data: bytes, start: int, end: int, out: dict[int, bytes], where: dict[int, int]
) -> None:
    i = start
    while i < end:
        code = data[i]
        if code == o.PAD:
            i += 1
            continue
        if code == o.END:
            return
        if i + 1 >= end:
            raise DhcpDecodeError(i, f"option {code} has no length byte", "option_overrun")
        length = data[i + 1]
        if i + 2 + length > end:
            raise DhcpDecodeError(i, f"option {code} (length {length}) overruns the packet",
                                  "option_overrun")
        value = data[i + 2 : i + 2 + length]
        if code in out:
            out[code] += value  # RFC 3396: repeated options concatenate
        else:
            out[code] = value
            where[code] = i
        i += 2 + length


def _check_options(options: dict[int, bytes], where: dict[int, int]) -> None:
    """Lengths of well-known options (after RFC 3396 concatenation), the message type,
    and options with inner structure the server reads or echoes."""
    shapes = o.SHAPES
    for code, value in options.items():
        shape = shapes.get(code)
        if shape is not None:  # o.check_shape, inline: it runs for every option received
            minimum, unit, exact = shape
            n = len(value)
            if n < minimum or n % unit or (exact and n != minimum):
                o.check_shape(code, value, where[code])  # raises, with the offset
    mt = options.get(o.MESSAGE_TYPE)
    if mt is not None and not o.DISCOVER <= mt[0] <= o.INFORM:
        raise DhcpDecodeError(where[o.MESSAGE_TYPE], f"unknown message type {mt[0]}",
                              "unknown_message_type")
    if o.RELAY_AGENT_INFO in options:
        o.parse_relay_agent(options[o.RELAY_AGENT_INFO], where[o.RELAY_AGENT_INFO] + 2)
    if o.IPXE_ENCAP in options:
        o.parse_tlv(options[o.IPXE_ENCAP], where[o.IPXE_ENCAP] + 2, "option 175 sub-option")


# -- encode --------------------------------------------------------------------

def encode(pkt: DhcpPacket, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Build the datagram. Options that do not fit in ``max_size`` (an IP datagram size,
    as option 57 counts it) overflow into 'file' then 'sname' (option 52) when those
    are empty; otherwise ``DhcpEncodeError``."""
    if len(pkt.chaddr) > 16 or len(pkt.sname) > 64 or len(pkt.file) > 128:
        raise DhcpEncodeError("chaddr, sname or file too long")
    if o.OVERLOAD in pkt.options:
        raise DhcpEncodeError("option 52 is chosen by the encoder")
    space = max(max_size, DEFAULT_MAX_SIZE) - IP_UDP_HEADERS - OPTIONS_START
    stream = _cached_stream(pkt.options)
    if len(stream) + 1 <= space:
        sname, bootfile = pkt.sname, pkt.file
    else:
        main, sname, bootfile = _overload(pkt, len(stream), space)
        stream = bytes(main)
    header = HEADER.pack(
        pkt.op, pkt.htype, len(pkt.chaddr), pkt.hops, pkt.xid, pkt.secs, pkt.flags,
        _packed(pkt.ciaddr), _packed(pkt.yiaddr), _packed(pkt.siaddr), _packed(pkt.giaddr),
        pkt.chaddr, sname, bootfile,
    )
    # One join, no intermediate copies: header, cookie, options, END, then zeros up to
    # MIN_PACKET (a slice of a constant; empty when the packet is long enough)
    pad = MIN_PACKET - OPTIONS_START - 1 - len(stream)
    return b"".join((header, MAGIC_COOKIE, stream, END_BYTE, PADDING[:pad] if pad > 0 else b""))


def _packed(address: IPv4Address) -> bytes:
    """``address.packed`` (ipaddress computes it anew each time); most are 0.0.0.0."""
    return ZERO_BYTES if address is ZERO else address.packed


STREAMS_CACHED = 4096  # distinct option sets whose encoding is remembered


def _cached_stream(options: dict[int, bytes]) -> bytes:
    """``_option_stream(options)``, remembered: a server sends the same few option sets
    (one per message type, network and boot file) over and over. The key is the
    options' items themselves, so a different set never gets another's bytes."""
    key = tuple(options.items())
    stream = _STREAMS.get(key)
    if stream is None:
        stream = _option_stream(options)
        if len(_STREAMS) >= STREAMS_CACHED:  # bounded: per-client values (82, 12) vary
            _STREAMS.clear()
        _STREAMS[key] = stream
    return stream


_STREAMS: dict[tuple[tuple[int, bytes], ...], bytes] = {}


def _overload(pkt: DhcpPacket, need: int, space: int) -> tuple[bytearray, bytes, bytes]:
    """The options over 'file' then 'sname' (option 52, RFC 2132 9.3) when they do not
    fit in ``space``: (the options field, sname, file)."""
    sname, bootfile = pkt.sname, pkt.file
    fields = []
    if not pkt.file:
        fields.append(128)
    if not pkt.sname:
        fields.append(64)
    if not fields:
        raise DhcpEncodeError(f"options need {need + 1} bytes, only {space} free")
    overload = 1 if fields[0] == 128 else 2
    if len(fields) == 2:
        overload = 3
    parts = _split(pkt.options, [space - 4] + [f - 1 for f in fields])
    main = bytearray(parts[0] + bytes((o.OVERLOAD, 1, overload)))
    overflow = [p + bytes((o.END,)) for p in parts[1:]]
    if fields[0] == 128:
        bootfile = overflow[0]
        if len(overflow) > 1:
            sname = overflow[1]
    else:
        sname = overflow[0]
    return main, sname, bootfile


def _ordered(options: dict[int, bytes]) -> list[tuple[int, bytes]]:
    """53 first (what clients look at first), 82 last (RFC 3046 2.1)."""
    items = [(c, v) for c, v in options.items() if c != o.MESSAGE_TYPE
             and c != o.RELAY_AGENT_INFO]
    if o.MESSAGE_TYPE in options:
        items.insert(0, (o.MESSAGE_TYPE, options[o.MESSAGE_TYPE]))
    if o.RELAY_AGENT_INFO in options:
        items.append((o.RELAY_AGENT_INFO, options[o.RELAY_AGENT_INFO]))
    for code, _ in items:
        if not 0 < code < 255:
            raise DhcpEncodeError(f"option code {code} is reserved")
    return items


def _option_stream(options: dict[int, bytes]) -> bytes:
    parts: list[bytes] = []
    for code, value in _ordered(options):
        n = len(value)
        if n <= 255:
            parts += (bytes((code, n)), value)
            continue
        for i in range(0, n, 255):  # RFC 3396: long options are split
            chunk = value[i : i + 255]
            parts += (bytes((code, len(chunk))), chunk)
    return b"".join(parts)


def _split(options: dict[int, bytes], capacities: list[int]) -> list[bytes]:
    """Fill fields of the given capacities in order, splitting options where needed
    (RFC 3396 allows an option to continue in the next field)."""
    parts = [bytearray() for _ in capacities]
    k = 0
    for code, value in _ordered(options):
        rest = value
        first = True
        while first or rest:
            while k < len(parts) and capacities[k] - len(parts[k]) < (3 if rest else 2):
                k += 1
            if k == len(parts):
                raise DhcpEncodeError("options do not fit even with option overload")
            room = capacities[k] - len(parts[k]) - 2
            chunk, rest = rest[: min(room, 255)], rest[min(room, 255) :]
            parts[k] += bytes((code, len(chunk))) + chunk
            first = False
    return [bytes(p) for p in parts]
