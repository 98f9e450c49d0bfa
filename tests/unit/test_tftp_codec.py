"""The TFTP codec and option negotiation, provision/protocol/tftp.py (pure unit).

Every limit is checked on both sides of its edge, and every encoder against the
bytes RFC 1350 / 2347 spell out, so a changed bound or byte shows.
"""

from __future__ import annotations

import struct

import pytest

from provision.protocol import tftp
from provision.protocol.tftp import (
    MAX_BLKSIZE,
    MAX_REQUEST,
    OP_ACK,
    OP_ERROR,
    OP_RRQ,
    OP_WRQ,
    Negotiated,
    Request,
    TftpDecodeError,
    decode_ack_or_error,
    decode_request,
    encode_error,
    encode_oack,
    negotiate,
    netascii_encode,
)


def rrq(*fields: bytes, opcode: int = OP_RRQ) -> bytes:
    return struct.pack("!H", opcode) + b"".join(f + b"\x00" for f in fields)


def test_the_constants_are_the_rfcs() -> None:
    assert (tftp.OP_RRQ, tftp.OP_WRQ, tftp.OP_DATA, tftp.OP_ACK, tftp.OP_ERROR,
            tftp.OP_OACK) == (1, 2, 3, 4, 5, 6)
    assert [tftp.ERR_UNDEFINED, tftp.ERR_FILE_NOT_FOUND, tftp.ERR_ACCESS_VIOLATION,
            tftp.ERR_DISK_FULL, tftp.ERR_ILLEGAL_OPERATION, tftp.ERR_UNKNOWN_TID,
            tftp.ERR_FILE_EXISTS, tftp.ERR_NO_SUCH_USER,
            tftp.ERR_OPTION_REFUSED] == list(range(9))
    assert (tftp.DEFAULT_BLKSIZE, tftp.MIN_BLKSIZE, tftp.MAX_BLKSIZE) == (512, 8, 65464)
    assert (tftp.MIN_TIMEOUT, tftp.MAX_TIMEOUT) == (1, 255)
    assert (tftp.MIN_WINDOW, tftp.MAX_WINDOW) == (1, 65535)
    assert tftp.MAX_REQUEST == 1500
    assert tftp.MODES == ("octet", "netascii")
    assert tftp.HEADER.format == "!HH"


def test_a_request_decodes_with_lower_case_mode_and_option_names() -> None:
    r = decode_request(rrq(b"pxe/Boot.0", b"OcTeT", b"BlkSize", b"1468", b"tsize", b"0"))
    assert r == Request(OP_RRQ, "pxe/Boot.0", "octet", {"blksize": "1468", "tsize": "0"})
    w = decode_request(rrq(b"f", b"netascii", opcode=OP_WRQ))
    assert w == Request(OP_WRQ, "f", "netascii", {})


def test_a_request_is_latin1_and_the_first_repeated_option_wins() -> None:
    r = decode_request(rrq(b"caf\xe9", b"octet", b"A", b"\xff1", b"a", b"2", b"b", b"3"))
    assert r.filename == "caf\xe9"
    assert r.options == {"a": "\xff1", "b": "3"}


def test_request_size_limit_is_one_frame() -> None:
    name = b"x" * (MAX_REQUEST - 2 - 1 - len(b"octet\x00"))
    ok = rrq(name, b"octet")
    assert len(ok) == MAX_REQUEST
    assert decode_request(ok).filename == name.decode()
    with pytest.raises(TftpDecodeError) as e:
        decode_request(rrq(name + b"x", b"octet"))
    assert e.value.offset == MAX_REQUEST


def test_short_requests_are_refused_at_their_length() -> None:
    assert decode_request(b"\x00\x01\x00\x00") == Request(OP_RRQ, "", "", {})
    for data in (b"", b"\x00", b"\x00\x01\x00"):
        with pytest.raises(TftpDecodeError) as e:
            decode_request(data)
        assert e.value.offset == len(data)


@pytest.mark.parametrize("opcode", [0, 3, 4, 5, 6, 0x0101])
def test_a_non_request_opcode_is_refused_at_byte_0(opcode: int) -> None:
    with pytest.raises(TftpDecodeError) as e:
        decode_request(rrq(b"f", b"octet", opcode=opcode))
    assert e.value.offset == 0


def test_an_unterminated_request_is_refused_at_its_end() -> None:
    data = rrq(b"f", b"octet")[:-1]
    with pytest.raises(TftpDecodeError) as e:
        decode_request(data)
    assert e.value.offset == len(data)


@pytest.mark.parametrize("fields", [(b"f",), (b"f", b"octet", b"blksize")])
def test_odd_fields_are_refused_at_byte_2(fields: tuple[bytes, ...]) -> None:
    with pytest.raises(TftpDecodeError) as e:
        decode_request(rrq(*fields))
    assert e.value.offset == 2


def test_decode_error_keeps_the_offset_and_says_where() -> None:
    e = TftpDecodeError("bad", 7)
    assert e.offset == 7 and str(e) == "bad (at byte 7)"
    assert TftpDecodeError("bad").offset == 0
    assert isinstance(e, ValueError)


def test_ack_and_error_decode() -> None:
    assert decode_ack_or_error(struct.pack("!HH", OP_ACK, 65535)) == (OP_ACK, 65535, "")
    assert decode_ack_or_error(memoryview(struct.pack("!HH", OP_ACK, 1) + b"xx")) == (
        OP_ACK, 1, "")
    err = struct.pack("!HH", OP_ERROR, 2) + b"no\xff way\x00trailing\x00"
    assert decode_ack_or_error(bytearray(err)) == (OP_ERROR, 2, "no\xff way")
    assert decode_ack_or_error(struct.pack("!HH", OP_ERROR, 0)) == (OP_ERROR, 0, "")


def test_short_or_other_packets_are_not_acks() -> None:
    for data in (b"", b"\x00\x04\x00"):
        with pytest.raises(TftpDecodeError) as e:
            decode_ack_or_error(data)
        assert e.value.offset == len(data)
    with pytest.raises(TftpDecodeError) as e:
        decode_ack_or_error(struct.pack("!HH", 3, 1) + b"data")
    assert e.value.offset == 0


def test_encoders_write_the_rfc_bytes() -> None:
    assert encode_error(1, "File not found") == b"\x00\x05\x00\x01File not found\x00"
    assert encode_error(0, "\u20ac") == b"\x00\x05\x00\x00?\x00"
    assert encode_oack({}) == b"\x00\x06"
    assert encode_oack({"blksize": "1468", "tsize": "9"}) == (
        b"\x00\x06blksize\x001468\x00tsize\x009\x00")


def test_no_options_negotiate_the_defaults() -> None:
    assert negotiate({}, lambda: 0) == Negotiated({}, 512, None, 1)
    assert Negotiated({}) == Negotiated({}, 512, None, 1)


def test_blksize_bounds() -> None:
    assert negotiate({"blksize": "8"}, lambda: 0) == Negotiated({"blksize": "8"}, 8)
    assert negotiate({"blksize": "7"}, lambda: 0) == Negotiated({}, 512)
    assert negotiate({"blksize": "70000"}, lambda: 0).blksize == MAX_BLKSIZE
    n = negotiate({"blksize": "1468"}, lambda: 0, max_blksize=1400)
    assert n == Negotiated({"blksize": "1400"}, 1400)
    n = negotiate({"blksize": "70000"}, lambda: 0, max_blksize=70000)
    assert n.oack == {"blksize": str(MAX_BLKSIZE)}


def test_the_default_blksize_limit_is_the_rfcs() -> None:
    assert negotiate({"blksize": "65464"}, lambda: 0).blksize == 65464
    assert negotiate({"blksize": "65465"}, lambda: 0).blksize == 65464


def test_timeout_bounds() -> None:
    assert negotiate({"timeout": "1"}, lambda: 0) == Negotiated({"timeout": "1"}, 512, 1.0)
    assert negotiate({"timeout": "255"}, lambda: 0) == Negotiated(
        {"timeout": "255"}, 512, 255.0)
    for bad in ("0", "256", "-1", "x"):
        assert negotiate({"timeout": bad}, lambda: 0) == Negotiated({}, 512, None)
    assert negotiate({"timeout": "5"}, lambda: 0, max_timeout=5).timeout == 5.0
    assert negotiate({"timeout": "6"}, lambda: 0, max_timeout=5) == Negotiated({})
    assert negotiate({"timeout": "255"}, lambda: 0, max_timeout=300).timeout == 255.0
    assert negotiate({"timeout": "256"}, lambda: 0, max_timeout=300).timeout is None
    assert isinstance(negotiate({"timeout": "3"}, lambda: 0).timeout, float)


def test_tsize_is_asked_only_when_requested() -> None:
    calls: list[int] = []

    def size() -> int:
        calls.append(1)
        return 4242

    assert negotiate({"tsize": "0"}, size) == Negotiated({"tsize": "4242"})
    assert negotiate({"tsize": "17"}, size).oack == {"tsize": "4242"}
    assert negotiate({"tsize": "-1"}, size).oack == {}
    assert negotiate({"blksize": "512"}, size).oack == {"blksize": "512"}
    assert len(calls) == 2


def test_windowsize_bounds() -> None:
    assert negotiate({"windowsize": "1"}, lambda: 0) == Negotiated({"windowsize": "1"})
    assert negotiate({"windowsize": "0"}, lambda: 0) == Negotiated({})
    assert negotiate({"windowsize": "16"}, lambda: 0) == Negotiated(
        {"windowsize": "16"}, 512, None, 16)
    assert negotiate({"windowsize": "100"}, lambda: 0).windowsize == 64
    assert negotiate({"windowsize": "16"}, lambda: 0, max_window=1) == Negotiated({})
    assert negotiate({"windowsize": "16"}, lambda: 0, max_window=2).windowsize == 2
    big = negotiate({"windowsize": "70000"}, lambda: 0, max_window=100000)
    assert big.windowsize == 65535 and big.oack == {"windowsize": "65535"}
    assert negotiate({"windowsize": "65535"}, lambda: 0, max_window=100000).windowsize == 65535


def test_the_oack_keeps_the_clients_order_and_drops_the_unknown() -> None:
    n = negotiate({"tsize": "0", "foo": "1", "windowsize": "4", "blksize": "1024",
                   "timeout": "2"}, lambda: 10)
    assert list(n.oack) == ["tsize", "windowsize", "blksize", "timeout"]
    assert n == Negotiated({"tsize": "10", "windowsize": "4", "blksize": "1024",
                            "timeout": "2"}, 1024, 2.0, 4)


@pytest.mark.parametrize("value,num", [
    ("12", 12), (" 12 ", 12), ("\t7\n", 7), ("0", 0), ("9999999999", 9999999999),
    ("10000000000", None), ("", None), ("1.5", None), ("-3", None), ("+3", None),
    ("x1", None),
])
def test_integer_values(value: str, num: int | None) -> None:
    assert tftp._int(value) == num


def test_netascii_is_cr_nul_and_cr_lf() -> None:
    assert netascii_encode(b"a\nb\rc\r\n") == b"a\r\nb\r\x00c\r\x00\r\n"
    assert netascii_encode(b"") == b""


def test_the_opcode_errors_name_the_opcode_as_sent() -> None:
    with pytest.raises(TftpDecodeError, match="opcode 65535 is not a request"):
        decode_request(rrq(b"f", b"octet", opcode=0xFFFF))
    with pytest.raises(TftpDecodeError, match="unexpected opcode 3"):
        decode_ack_or_error(struct.pack("!HH", 3, 1))


def test_error_codes_are_unsigned_16_bit() -> None:
    assert encode_error(0xFFFF, "") == b"\x00\x05\xff\xff\x00"
