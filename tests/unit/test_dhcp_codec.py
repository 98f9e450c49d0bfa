"""DHCP codec: round trips, real-client packet shapes, overload, malformed input."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    FILE_OFFSET,
    SNAME_OFFSET,
    DhcpDecodeError,
    DhcpEncodeError,
    DhcpPacket,
    decode,
    encode,
)
from tests.support.dhcp_support import IPXE_175, IPXE_DISCOVER, MAC, opt, raw_packet


def test_decode_ipxe_rom_discover() -> None:
    p = decode(IPXE_DISCOVER)
    assert p.op == BOOTREQUEST and p.xid == 0x34B07138 and p.secs == 4
    assert p.mac == "52:54:00:00:00:01"
    assert p.message_type == o.DISCOVER
    assert p.client_arch == o.ARCH_X86_BIOS
    assert p.is_pxe and p.is_ipxe
    assert p.user_classes == (b"iPXE",)
    assert p.ipxe_options[235] == b"\x01\x00\x00"
    assert p.ndi == o.ClientNdi(1, 2, 1)
    assert p.uuid == bytes(16)
    assert p.max_message_size == 1472
    assert p.client_id == b"\x01" + MAC
    assert not p.broadcast


def test_ovmf_discover_is_pxe_but_not_ipxe() -> None:
    p = decode(raw_packet(opt(53, b"\x01") + opt(93, b"\x00\x07")
                          + opt(60, b"PXEClient:Arch:00007:UNDI:003000") + b"\xff"))
    assert p.client_arch == o.ARCH_EFI_X64 and p.is_pxe and not p.is_ipxe


def test_ipxe_detected_by_175_alone_and_by_rfc3004_user_class() -> None:
    assert decode(raw_packet(opt(53, b"\x01") + opt(175, IPXE_175) + b"\xff")).is_ipxe
    rfc = decode(raw_packet(opt(53, b"\x01") + opt(77, b"\x03abc\x04iPXE") + b"\xff"))
    assert rfc.user_classes == (b"abc", b"iPXE") and rfc.is_ipxe
    assert not decode(raw_packet(opt(53, b"\x01") + opt(77, b"\x03abc") + b"\xff")).is_ipxe


def test_relay_agent_info_parsed_and_echoable() -> None:
    value = opt(1, b"port7") + opt(2, b"sw1")
    p = decode(raw_packet(opt(53, b"\x03") + opt(82, value) + b"\xff"))
    assert p.relay_agent == ((1, b"port7"), (2, b"sw1"))
    reply = DhcpPacket(op=BOOTREPLY, xid=p.xid, chaddr=p.chaddr,
                       options={o.MESSAGE_TYPE: b"\x05", o.RELAY_AGENT_INFO: value,
                                o.SERVER_ID: o.ip("198.18.0.1")})
    wire = encode(reply)
    assert wire.index(bytes((82, len(value))) + value) > wire.index(bytes((54, 4)))
    assert decode(wire).options[82] == value


def test_repeated_options_concatenate_rfc3396() -> None:
    p = decode(raw_packet(opt(53, b"\x02") + opt(6, o.ip("198.18.0.1")) + opt(6, o.ip("198.18.0.2"))
                          + b"\xff"))
    assert o.to_ips(p.options[6]) == (IPv4Address("198.18.0.1"), IPv4Address("198.18.0.2"))


def test_overload_decode_reads_file_then_sname() -> None:
    file = opt(12, b"fromfile") + opt(43, b"F") + b"\xff"
    sname = opt(15, b"fromsname") + opt(43, b"S") + b"\xff"
    p = decode(raw_packet(opt(53, b"\x05") + opt(43, b"M") + opt(52, b"\x03") + b"\xff",
                          sname=sname, file=file))
    assert p.options[12] == b"fromfile" and p.options[15] == b"fromsname"
    assert p.options[43] == b"MFS"  # RFC 2131 4.1 order: options, then file, then sname
    assert p.file == b"" and p.sname == b"" and 52 not in p.options
    only_sname = decode(raw_packet(opt(52, b"\x02") + b"\xff", sname=sname, file=b"boot.0"))
    assert only_sname.file == b"boot.0" and only_sname.options[15] == b"fromsname"


def test_encode_overflows_into_file_and_sname_when_needed() -> None:
    big = {o.MESSAGE_TYPE: b"\x05", 43: bytes(range(200)), 77: b"x" * 150, 12: b"h" * 60,
           15: b"d" * 60}  # 3 + 202 + 152 + 62 + 62 + 1 bytes: more than 308 + 127
    p = DhcpPacket(op=BOOTREPLY, xid=1, chaddr=MAC, options=big)
    wire = encode(p)
    assert len(wire) <= 576 - 28
    assert wire[240:243] == b"\x35\x01\x05"  # 53 first
    assert b"\x34\x01\x03\xff" in wire[240:]  # overload into file and sname
    file, sname = wire[FILE_OFFSET:FILE_OFFSET + 128], wire[SNAME_OFFSET:SNAME_OFFSET + 64]
    assert file[0] not in (0, 255) and sname[0] not in (0, 255)  # both carry options
    assert b"d" * 20 in sname  # option 15 went to sname, after 'file' was full
    assert decode(wire) == p
    # With a larger client limit no overload is needed.
    roomy = encode(p, max_size=1472)
    assert b"\x34\x01\x03\xff" not in roomy and decode(roomy) == p


def test_encode_refuses_what_cannot_fit() -> None:
    p = DhcpPacket(op=BOOTREPLY, xid=1, chaddr=MAC, file=b"x", sname=b"y",
                   options={43: bytes(400)})
    with pytest.raises(DhcpEncodeError):
        encode(p)
    with pytest.raises(DhcpEncodeError):
        encode(DhcpPacket(op=BOOTREPLY, xid=1, chaddr=MAC, options={52: b"\x01"}))


def test_long_option_split_in_255_chunks() -> None:
    p = DhcpPacket(op=BOOTREPLY, xid=1, chaddr=MAC, options={43: bytes(600)})
    wire = encode(p, max_size=1500)
    assert wire.count(bytes((43, 255))) == 2
    assert decode(wire) == p


def test_encode_pads_to_bootp_minimum() -> None:
    assert len(encode(DhcpPacket(op=BOOTREPLY, xid=1, chaddr=MAC))) == 300


def test_plain_bootp_without_cookie_has_no_options() -> None:
    p = decode(raw_packet(bytes(60), cookie=bytes(4)))
    assert p.options == {} and p.message_type is None


# -- malformed input: each case must raise DhcpDecodeError at the right place ---------

MALFORMED = {
    "truncated header": (IPXE_DISCOVER[:200], 200),
    "bad op": (raw_packet(b"\xff", op=3), 0),
    "hlen 16": (raw_packet(b"\xff", hlen=16), 1),
    "htype 6": (raw_packet(b"\xff", htype=6), 1),
    "no length byte": (raw_packet(opt(53, b"\x01") + b"\x0c"), 243),
    "option overruns": (raw_packet(opt(53, b"\x01") + b"\x0c\x10abc"), 243),
    "message type 0": (raw_packet(opt(53, b"\x00") + b"\xff"), 240),
    "message type 9": (raw_packet(opt(53, b"\x09") + b"\xff"), 240),
    "message type 2 bytes": (raw_packet(opt(53, b"\x01\x01") + b"\xff"), 240),
    "requested ip 3 bytes": (raw_packet(opt(53, b"\x03") + opt(50, b"\x01\x02\x03") + b"\xff"),
                             243),
    "two requested ips": (raw_packet(opt(53, b"\x03") + opt(50, bytes(4)) + opt(50, bytes(4))
                                     + b"\xff"), 243),
    "arch odd length": (raw_packet(opt(93, b"\x00") + b"\xff"), 240),
    "bad overload value": (raw_packet(opt(52, b"\x07") + b"\xff"), 240),
    "overload overruns file": (raw_packet(opt(52, b"\x01") + b"\xff",
                                          file=b"\x0c\x7f" + bytes(126)), FILE_OFFSET),
    "overload sname overruns": (raw_packet(opt(52, b"\x02") + b"\xff",
                                           sname=b"\x0c\x50"), SNAME_OFFSET),
    "bad option 82": (raw_packet(opt(82, b"\x01\x09abc") + b"\xff"), 242),
    "bad option 175": (raw_packet(opt(175, b"\xb1\x09abc") + b"\xff"), 242),
}


KINDS = {"truncated", "bad_op", "not_ethernet", "option_overrun", "bad_option_length",
         "unknown_message_type", "bad_overload", "bad_suboption"}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_input_raises_codec_error(name: str) -> None:
    data, offset = MALFORMED[name]
    with pytest.raises(DhcpDecodeError) as err:
        decode(data)
    assert err.value.offset == offset, err.value
    assert err.value.kind in KINDS  # a fixed label for the drop counters


# -- properties ------------------------------------------------------------------

addresses = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
STRUCTURED = (o.OVERLOAD, o.MESSAGE_TYPE, o.RELAY_AGENT_INFO, o.IPXE_ENCAP)
option_codes = st.integers(1, 254).filter(lambda c: c not in STRUCTURED and c not in o._SHAPES)
sub_options = st.dictionaries(st.integers(1, 254), st.binary(max_size=20), max_size=4)
packets = st.builds(
    DhcpPacket,
    op=st.sampled_from([BOOTREQUEST, BOOTREPLY]),
    xid=st.integers(0, 2**32 - 1),
    chaddr=st.binary(min_size=6, max_size=6),
    secs=st.integers(0, 65535),
    flags=st.sampled_from([0, 0x8000]),
    ciaddr=addresses, yiaddr=addresses, siaddr=addresses, giaddr=addresses,
    sname=st.binary(max_size=64).map(lambda b: b.rstrip(b"\0")),
    file=st.binary(max_size=128).map(lambda b: b.rstrip(b"\0")),
    options=st.tuples(
        st.dictionaries(option_codes, st.binary(max_size=300), max_size=8),
        st.sampled_from(range(o.DISCOVER, o.INFORM + 1)),
        st.one_of(st.none(), sub_options), st.one_of(st.none(), sub_options),
    ).map(lambda t: {o.MESSAGE_TYPE: bytes((t[1],)), **t[0],
                     **({} if t[2] is None else {o.IPXE_ENCAP: o.build_tlv(t[2])}),
                     **({} if t[3] is None else {o.RELAY_AGENT_INFO: o.build_tlv(t[3])})}),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(packets)
def test_encode_then_decode_round_trips(p: DhcpPacket) -> None:
    try:
        wire = encode(p, max_size=1500)
    except DhcpEncodeError:
        return  # options too big for one datagram: refused, not mangled
    assert decode(wire) == p
    assert encode(decode(wire), max_size=1500) == wire


@settings(max_examples=500)
@given(st.binary(max_size=700))
def test_random_bytes_only_raise_codec_error(data: bytes) -> None:
    try:
        decode(data)
    except DhcpDecodeError:
        pass


@settings(max_examples=500)
@given(st.lists(st.tuples(st.integers(0, len(IPXE_DISCOVER) - 1), st.integers(0, 255)),
                min_size=1, max_size=8), st.integers(0, len(IPXE_DISCOVER)))
def test_mutated_real_packet_only_raises_codec_error(flips: list[tuple[int, int]],
                                                     cut: int) -> None:
    data = bytearray(IPXE_DISCOVER)
    for i, b in flips:
        data[i] = b
    try:
        p = decode(bytes(data[: max(cut, 236)]))
    except DhcpDecodeError:
        return
    # Whatever parses must re-encode and parse to the same packet (views must not raise).
    _ = (p.user_classes, p.ipxe_options, p.relay_agent, p.client_archs, p.uuid, p.ndi,
         p.requested_ip, p.server_id, p.max_message_size, p.hostname, p.is_ipxe)
    try:
        assert decode(encode(p, max_size=1500)) == p
    except DhcpEncodeError:
        pass
