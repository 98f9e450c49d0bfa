"""DHCP codec: PAD bytes, a property test built on a valid option stream, and option
overload at the 576-byte minimum (issue 24 items 4 and 5)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import (
    BOOTREPLY,
    FILE_OFFSET,
    HEADER_LEN,
    IP_UDP_HEADERS,
    OPTIONS_START,
    SNAME_OFFSET,
    DhcpDecodeError,
    DhcpEncodeError,
    DhcpPacket,
    decode,
    encode,
)
from tests.support.dhcp_support import MAC, opt, raw_packet

WIRE_576 = 576 - IP_UDP_HEADERS  # the UDP payload of a 576-byte IP datagram


# -- 4. PAD bytes -------------------------------------------------------------------------

@pytest.mark.timeout(20)  # the mutant `i -= 1` loops forever: fail, do not hang
def test_pad_bytes_between_and_before_options_are_skipped() -> None:
    data = raw_packet(b"\x00" + opt(53, b"\x01") + b"\x00\x00\x00" + opt(12, b"node")
                      + b"\x00" + opt(61, b"\x01" + MAC) + b"\x00\xff")
    p = decode(data)
    assert p.options == {53: b"\x01", 12: b"node", 61: b"\x01" + MAC}


@pytest.mark.timeout(20)
def test_pad_only_option_area_and_pads_in_overloaded_fields() -> None:
    assert decode(raw_packet(bytes(60))).options == {}
    file = b"\x00\x00" + opt(12, b"inside") + b"\x00\xff"
    sname = b"\x00" + opt(15, b"dom") + b"\xff"
    p = decode(raw_packet(opt(53, b"\x05") + b"\x00" + opt(52, b"\x03") + b"\xff",
                          sname=sname, file=file))
    assert p.options == {53: b"\x05", 12: b"inside", 15: b"dom"}
    assert p.file == b"" and p.sname == b""


def test_options_after_end_are_ignored_and_a_pad_needs_no_length() -> None:
    p = decode(raw_packet(opt(53, b"\x01") + b"\xff" + opt(12, b"after")))
    assert p.options == {53: b"\x01"}
    # A PAD in the last byte is fine; any other code there lacks its length byte.
    assert decode(raw_packet(opt(53, b"\x01") + b"\x00")).options == {53: b"\x01"}
    with pytest.raises(DhcpDecodeError) as err:
        decode(raw_packet(opt(53, b"\x01") + b"\x0c"))
    assert err.value.kind == "option_overrun" and err.value.offset == OPTIONS_START + 3


def test_option_ending_exactly_at_the_end_of_the_packet_is_read() -> None:
    p = decode(raw_packet(opt(53, b"\x01") + opt(12, b"abc")))
    assert p.options[12] == b"abc"
    with pytest.raises(DhcpDecodeError):
        decode(raw_packet(opt(53, b"\x01") + opt(12, b"abc")[:-1]))


# -- property: a valid cookie and option stream, then damage ------------------------------

FREE_CODES = st.integers(1, 254).filter(
    lambda c: c not in o._SHAPES and c not in (o.OVERLOAD, o.MESSAGE_TYPE,
                                              o.RELAY_AGENT_INFO, o.IPXE_ENCAP))
ITEM = st.one_of(
    st.tuples(FREE_CODES, st.binary(max_size=40)),  # an option
    st.just((0, b"")),  # a PAD
)


def stream_of(items: list[tuple[int, bytes]]) -> tuple[bytes, dict[int, bytes]]:
    """The wire bytes of the items, and the options a correct decoder must return."""
    out, want = bytearray(opt(53, b"\x01")), {53: b"\x01"}
    for code, value in items:
        if code == 0:
            out.append(0)
            continue
        out += opt(code, value)
        want[code] = want.get(code, b"") + value  # RFC 3396 concatenation
    return bytes(out) + b"\xff", want


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(ITEM, max_size=25), st.integers(0, 100))
def test_valid_option_streams_decode_to_exactly_their_options(
        items: list[tuple[int, bytes]], trailer: int) -> None:
    stream, want = stream_of(items)
    p = decode(raw_packet(stream + bytes(trailer)))
    assert p.options == want


@pytest.mark.timeout(120)
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(ITEM, max_size=25),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       st.integers(0, 10_000))
def test_damaged_option_streams_only_raise_codec_errors(
        items: list[tuple[int, bytes]], flips: list[tuple[int, int]], cut: int) -> None:
    """Random bytes almost never hold the magic cookie: here every case has it, and the
    damage (flipped bytes, a cut) falls in the option area, where the parser works."""
    stream, _ = stream_of(items)
    data = bytearray(raw_packet(stream))
    for at, value in flips:
        data[OPTIONS_START + at % (len(data) - OPTIONS_START)] = value
    data = data[: OPTIONS_START + cut % (len(data) - OPTIONS_START + 1)]
    try:
        p = decode(bytes(data))
    except DhcpDecodeError as e:
        assert 0 <= e.offset <= len(data) and e.kind
        return
    try:
        again = encode(p, max_size=1500)
    except DhcpEncodeError:
        return
    assert decode(again) == p


# -- 5. option overload into 'file' and 'sname' at 576 bytes ------------------------------

def reply(options: dict[int, bytes], file: bytes = b"", sname: bytes = b"") -> DhcpPacket:
    return DhcpPacket(op=BOOTREPLY, xid=7, chaddr=MAC, file=file, sname=sname,
                      options={o.MESSAGE_TYPE: b"\x05", **options})


def test_overload_into_sname_only_keeps_the_boot_file_name() -> None:
    boot = b"http://198.18.0.1/hosts/w1/boot.ipxe"
    p = reply({43: bytes(range(250)), 77: b"x" * 100}, file=boot)  # 50 bytes too many
    wire = encode(p)
    assert len(wire) <= WIRE_576
    assert wire[FILE_OFFSET:FILE_OFFSET + len(boot)] == boot  # not overwritten
    assert b"\x34\x01\x02" in wire[OPTIONS_START:]  # overload = sname only
    assert wire[SNAME_OFFSET] != 0  # options are in sname
    back = decode(wire)
    assert back == p and back.file == boot


def test_overload_into_file_only_keeps_the_server_name() -> None:
    p = reply({43: bytes(range(250)), 77: b"x" * 100}, sname=b"master")
    wire = encode(p)
    assert len(wire) <= WIRE_576
    assert wire[SNAME_OFFSET:SNAME_OFFSET + 6] == b"master"
    assert b"\x34\x01\x01" in wire[OPTIONS_START:]
    assert wire[FILE_OFFSET] != 0
    assert decode(wire) == p


def test_overload_uses_file_first_and_sname_only_when_file_is_full() -> None:
    fits_file = reply({43: bytes(250), 77: b"y" * 80})  # over the main area by < 128
    wire = encode(fits_file)
    assert wire[FILE_OFFSET] == 77  # the option that did not fit went to 'file'
    assert wire[SNAME_OFFSET:SNAME_OFFSET + 2] == b"\xff\x00"  # sname: nothing but END
    assert len(wire) <= WIRE_576
    assert decode(wire) == fits_file
    both = reply({43: bytes(250), 77: b"y" * 150, 12: b"h" * 40})
    wire = encode(both)
    assert b"\x34\x01\x03" in wire[OPTIONS_START:]
    assert wire[SNAME_OFFSET] != 0 and wire[FILE_OFFSET] != 0
    assert len(wire) <= WIRE_576 and decode(wire) == both


def test_options_that_just_fit_are_not_overloaded() -> None:
    space = WIRE_576 - OPTIONS_START
    # 53 (3 bytes) + 43 (2 + 250) + 12 (2 + n) + END = space exactly
    n = space - 3 - 252 - 2 - 1
    p = reply({43: bytes(250), 12: bytes(n)})
    wire = encode(p)
    assert len(wire) == WIRE_576 and wire[-1] == o.END
    assert b"\x34\x01" not in wire[OPTIONS_START:OPTIONS_START + 3]
    assert wire[FILE_OFFSET] == 0 and decode(wire) == p
    over = reply({43: bytes(250), 12: bytes(n + 1)})
    wire = encode(over)
    assert len(wire) <= WIRE_576 and decode(wire) == over
    assert wire[FILE_OFFSET] != 0  # one byte more: into 'file'


def test_max_size_below_576_is_raised_to_576_and_above_is_used() -> None:
    p = reply({43: bytes(400)})
    assert encode(p, max_size=300) == encode(p)
    assert len(encode(p, max_size=1000)) == OPTIONS_START + 3 + 2 + 255 + 2 + 145 + 1
    assert b"\x34\x01" not in encode(p, max_size=1000)[OPTIONS_START:]


FIELD = st.one_of(st.just(b""), st.binary(min_size=1, max_size=40).map(
    lambda b: b.replace(b"\0", b"a")))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(FREE_CODES, st.binary(max_size=260), max_size=6), FIELD, FIELD)
def test_round_trip_at_576_bytes_with_file_and_sname_empty_or_filled(
        options: dict[int, bytes], file: bytes, sname: bytes) -> None:
    p = reply(options, file=file, sname=sname)
    try:
        wire = encode(p)
    except DhcpEncodeError:
        # Refused only when it cannot fit: the options need more than the free fields.
        need = len(b"".join(bytes((c, 255)) for c in options)) + sum(
            len(v) + 2 * (len(v) // 255) for v in options.values())
        room = WIRE_576 - OPTIONS_START + (0 if file else 128) + (0 if sname else 64)
        assert need + 3 > room - 6, (need, room)
        return
    assert HEADER_LEN < len(wire) <= WIRE_576
    back = decode(wire)
    assert back == p and back.file == file and back.sname == sname
    assert struct.unpack_from("!I", wire, 4)[0] == 7


# -- edges of the header, the cookie and the option codes ---------------------------------

def test_a_header_without_cookie_or_options_decodes() -> None:
    header_only = raw_packet(b"")[:HEADER_LEN]
    p = decode(header_only)
    assert p.options == {} and p.xid == 0x34B07138
    with pytest.raises(DhcpDecodeError) as err:
        decode(header_only[:-1])
    assert err.value.kind == "truncated" and err.value.offset == HEADER_LEN - 1


def test_without_the_magic_cookie_option_bytes_are_not_options() -> None:
    p = decode(raw_packet(opt(53, b"\x01") + b"\xff", cookie=b"\x63\x82\x53\x64"))
    assert p.options == {} and p.message_type is None
    short = raw_packet(b"")[:HEADER_LEN + 3]  # a cut cookie
    assert decode(short).options == {}


def test_header_fields_are_kept() -> None:
    data = bytearray(raw_packet(opt(53, b"\x01") + b"\xff"))
    data[3] = 3  # hops
    data[10:12] = b"\x80\x00"  # flags: broadcast
    data[12:16] = bytes((198, 18, 0, 9))  # ciaddr
    p = decode(bytes(data))
    assert p.hops == 3 and p.broadcast and str(p.ciaddr) == "198.18.0.9" and p.secs == 4


def test_overload_sname_full_to_the_last_byte_without_end() -> None:
    sname = opt(12, b"s" * 62)  # exactly 64 bytes, no END: the field ends the options
    p = decode(raw_packet(opt(53, b"\x05") + opt(52, b"\x02") + b"\xff", sname=sname,
                          file=b"boot.efi"))
    assert p.options[12] == b"s" * 62 and p.file == b"boot.efi"
    file = opt(15, b"f" * 126)  # exactly 128 bytes
    q = decode(raw_packet(opt(52, b"\x01") + b"\xff", file=file, sname=b"srv"))
    assert q.options[15] == b"f" * 126 and q.sname == b"srv"


def test_option_52_inside_an_overloaded_field_is_dropped_too() -> None:
    file = opt(52, b"\x01") + opt(12, b"x") + b"\xff"
    p = decode(raw_packet(opt(53, b"\x05") + opt(52, b"\x01") + b"\xff", file=file))
    assert 52 not in p.options and p.options[12] == b"x"


def test_zero_length_option_in_the_last_two_bytes() -> None:
    p = decode(raw_packet(opt(53, b"\x01") + opt(200, b"")))
    assert p.options[200] == b""


def test_encode_field_length_limits() -> None:
    ok = DhcpPacket(op=BOOTREPLY, xid=1, chaddr=bytes(16), sname=b"s" * 64, file=b"f" * 128)
    wire = encode(ok)
    assert wire[SNAME_OFFSET:SNAME_OFFSET + 64] == b"s" * 64
    assert wire[FILE_OFFSET:FILE_OFFSET + 128] == b"f" * 128
    for bad in ({"chaddr": bytes(17)}, {"sname": b"s" * 65}, {"file": b"f" * 129}):
        with pytest.raises(DhcpEncodeError):
            encode(DhcpPacket(**{"op": BOOTREPLY, "xid": 1, "chaddr": MAC, **bad}))


@pytest.mark.parametrize("code", [1, 2, 254])
def test_every_option_code_but_pad_and_end_is_encoded(code: int) -> None:
    p = reply({code: b"\x01\x02\x03\x04"})
    assert decode(encode(p)).options[code] == b"\x01\x02\x03\x04"


@pytest.mark.parametrize("code", [0, 255, 256, -1])
def test_pad_end_and_out_of_range_codes_are_refused(code: int) -> None:
    with pytest.raises(DhcpEncodeError):
        encode(reply({code: b"x"}))


@pytest.mark.parametrize("n", [254, 255, 256, 510, 511])
def test_long_options_split_at_255_without_overload(n: int) -> None:
    p = reply({43: bytes(range(256)) * 2}) if n > 510 else reply({43: bytes(n)})
    wire = encode(p, max_size=1500)
    assert b"\x34\x01" not in wire[OPTIONS_START:OPTIONS_START + 3]
    assert 52 not in decode(wire).options and decode(wire) == p
    value = p.options[43]
    assert wire.count(bytes((43, 255))) == len(value) // 255  # the full chunks
    assert len(wire) == max(300, OPTIONS_START + 3 + len(value) + 2 * -(-len(value) // 255) + 1)


def test_all_three_areas_filled_to_the_byte() -> None:
    # main: 308 - 3 (52) - 1 (END) = 304; file 127 + END; sname 63 + END.
    # 53 takes 3 of main; then options of 2 + 255 and 2 + 42 fill it.
    p = reply({43: bytes(255), 44: bytes(42), 12: bytes(125), 15: bytes(61)})
    wire = encode(p)
    assert len(wire) == WIRE_576
    assert wire[FILE_OFFSET + 127] == 255 and wire[SNAME_OFFSET + 63] == 255  # END last
    assert decode(wire) == p
    with pytest.raises(DhcpEncodeError):
        encode(reply({43: bytes(255), 44: bytes(42), 12: bytes(125), 15: bytes(62)}))


def test_overload_split_of_a_long_option_loses_no_byte() -> None:
    p = reply({43: bytes(range(256)) + bytes(range(44)), 77: b"u" * 30})  # 300 + 30
    wire = encode(p)
    assert b"\x34\x01" in wire[OPTIONS_START:] and decode(wire) == p


def test_overload_keeps_zero_length_options() -> None:
    p = reply({43: bytes(255), 44: bytes(60), 200: b"", 12: b"h" * 10})
    wire = encode(p)
    assert b"\x34\x01" in wire[OPTIONS_START:]
    assert decode(wire).options[200] == b"" and decode(wire) == p


def test_overload_uses_the_last_three_bytes_of_a_field_for_a_split_option() -> None:
    # main: 304 usable = 53 (3) + 43 (257) + 44 (41) + 3 left: option 12 starts there
    # with one byte; file (127) then sname (63) are filled exactly by the rest.
    opts = {43: bytes(255), 44: bytes(39), 12: bytes(range(10)), 15: bytes(114),
            16: bytes(61)}
    p = reply(opts)
    wire = encode(p)
    assert len(wire) == WIRE_576
    assert wire[OPTIONS_START + 301:OPTIONS_START + 304] == b"\x0c\x01\x00"  # 12, 1 byte
    assert decode(wire) == p


def test_overload_fills_a_two_byte_room_with_a_zero_length_option() -> None:
    # As above, but sname ends with a zero-length option in its last two bytes.
    opts = {43: bytes(255), 44: bytes(39), 12: bytes(range(10)), 15: bytes(114),
            16: bytes(59), 200: b""}
    p = reply(opts)
    wire = encode(p)
    assert wire[SNAME_OFFSET + 61:SNAME_OFFSET + 64] == b"\xc8\x00\xff"
    assert decode(wire) == p


def test_overload_writes_no_empty_fragment_into_a_two_byte_room() -> None:
    # main: 53 (3) + 43 (257) + 44 (42) leaves 2 bytes: too few for a piece of option 12,
    # which goes whole to 'file'; the main area ends with option 52 and END.
    p = reply({43: bytes(255), 44: bytes(40), 12: bytes(range(10)), 15: b"x" * 70})
    wire = encode(p)
    assert wire[OPTIONS_START + 302:OPTIONS_START + 306] == b"\x34\x01\x03\xff"
    assert wire[FILE_OFFSET:FILE_OFFSET + 2] == b"\x0c\x0a" and decode(wire) == p


def test_a_bad_option_175_is_named_in_the_error() -> None:
    with pytest.raises(DhcpDecodeError) as err:
        decode(raw_packet(opt(53, b"\x01") + opt(175, b"\xb1\x09abc") + b"\xff"))
    assert err.value.reason == "option 175 sub-option 177 overruns its container"
    assert err.value.offset == OPTIONS_START + 3 + 2 and err.value.kind == "bad_suboption"
