"""The option value codecs of protocol/dhcp_options.py, edge by edge (issue 24)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from provision.protocol import dhcp_options as o
from provision.protocol.dhcp_options import DhcpDecodeError, DhcpEncodeError


def test_decode_error_carries_offset_reason_and_kind() -> None:
    e = DhcpDecodeError(17, "bad thing", "bad_option_length")
    assert (e.offset, e.reason, e.kind) == (17, "bad thing", "bad_option_length")
    assert str(e) == "bad thing (at offset 17)"
    assert DhcpDecodeError(0, "x").kind == "malformed"


@pytest.mark.parametrize("code, good, bad", [
    (o.SUBNET_MASK, [4], [0, 3, 5, 8]),
    (o.ROUTER, [4, 8, 12], [0, 3, 5, 6]),
    (o.DNS_SERVERS, [4, 8], [2, 7]),
    (o.MESSAGE_TYPE, [1], [0, 2]),
    (o.MAX_MESSAGE_SIZE, [2], [1, 3, 4]),
    (o.CLIENT_ARCH, [2, 4, 6], [0, 1, 3]),
    (o.CLIENT_ID, [2, 3, 7], [0, 1]),
    (o.CLIENT_NDI, [3], [2, 4]),
    (o.CLIENT_UUID, [1, 17], [0]),
    (o.LEASE_TIME, [4], [3, 8]),
    (o.OVERLOAD, [1], [0, 2]),
    (12, [0, 1, 255], []),  # not shaped: anything goes
])
def test_option_shapes(code: int, good: list[int], bad: list[int]) -> None:
    for n in good:
        o.check_shape(code, bytes(n), 5)
    for n in bad:
        with pytest.raises(DhcpDecodeError) as err:
            o.check_shape(code, bytes(n), 5)
        assert err.value.offset == 5 and err.value.kind == "bad_option_length"
        assert f"option {code} has bad length {n}" == err.value.reason


def test_value_codecs() -> None:
    assert o.ip("198.18.0.1") == bytes((198, 18, 0, 1))
    assert o.ips(["198.18.0.1", IPv4Address("198.18.0.2")]) == bytes((198, 18, 0, 1,
                                                                       198, 18, 0, 2))
    assert o.u8(255) == b"\xff" and o.u16(0x1234) == b"\x12\x34"
    assert o.u32(0x01020304) == b"\x01\x02\x03\x04" and o.text("abc") == b"abc"
    assert o.to_ip(bytes((198, 18, 0, 9, 7))) == IPv4Address("198.18.0.9")
    assert o.to_ips(bytes(range(1, 9)) + b"\x09\x0a\x0b") == (IPv4Address("1.2.3.4"),
                                                             IPv4Address("5.6.7.8"))
    assert o.to_ips(bytes(3)) == () and o.to_ips(bytes(4)) == (IPv4Address(0),)
    assert o.to_u16s(b"\x00\x07\x00\x09\x01") == (7, 9) and o.to_u16s(b"") == ()


def test_parse_tlv_pads_end_repeats_and_errors() -> None:
    v = b"\x00\x01\x02ab\x00\x01\x01c\x02\x00\xff\x05\x01z"
    assert o.parse_tlv(v) == {1: b"abc", 2: b""}
    assert o.parse_tlv(b"") == {} and o.parse_tlv(b"\x00\x00") == {}
    assert o.parse_tlv(b"\x01\x02ab") == {1: b"ab"}  # ends exactly at the end
    with pytest.raises(DhcpDecodeError) as err:
        o.parse_tlv(b"\x01\x02ab\x07", base=100, what="option 175 sub-option")
    assert err.value.offset == 104 and err.value.kind == "bad_suboption"
    assert err.value.reason == "option 175 sub-option 7 has no length"
    with pytest.raises(DhcpDecodeError) as err:
        o.parse_tlv(b"\x00\x01\x03ab", base=10)
    assert err.value.offset == 11 and err.value.reason == "sub-option 1 overruns its container"


def test_build_tlv_bounds() -> None:
    assert o.build_tlv({1: b"a", 254: b""}) == b"\x01\x01a\xfe\x00"
    assert o.build_tlv({6: b"\x08"}, end=True) == b"\x06\x01\x08\xff"
    assert o.build_tlv({}) == b"" and o.build_tlv({}, end=True) == b"\xff"
    assert o.build_tlv({1: bytes(255)})[:2] == b"\x01\xff"
    for bad in ({0: b""}, {255: b""}, {1: bytes(256)}):
        with pytest.raises(DhcpEncodeError):
            o.build_tlv(bad)


def test_parse_relay_agent() -> None:
    assert o.parse_relay_agent(b"\x01\x02ab\x02\x00\x00\x01z") == (
        (1, b"ab"), (2, b""), (0, b"z"))  # in order; 0 is a code here, not a PAD
    assert o.parse_relay_agent(b"") == ()
    for bad, at in ((b"\x01", 0), (b"\x01\x03ab", 0), (b"\x01\x00\x02", 2)):
        with pytest.raises(DhcpDecodeError) as err:
            o.parse_relay_agent(bad, base=50)
        assert err.value.offset == 50 + at and err.value.kind == "bad_suboption"


def test_user_class_forms() -> None:
    assert o.parse_user_class(b"iPXE") == (b"iPXE",)  # bare: 'i' (105) overruns
    assert o.parse_user_class(b"\x04iPXE") == (b"iPXE",)
    assert o.parse_user_class(b"\x01a\x02bc") == (b"a", b"bc")
    assert o.parse_user_class(b"\x01a\x00") == (b"\x01a\x00",)  # a zero length: raw
    assert o.parse_user_class(b"\x01a\x03bc") == (b"\x01a\x03bc",)  # overrun: raw
    assert o.parse_user_class(b"\x02ab") == (b"ab",)  # ends exactly
    assert o.build_user_class([b"a", b"bc"]) == b"\x01a\x02bc"
    assert o.build_user_class([bytes(255)])[0] == 255
    for bad in ([b""], [bytes(256)]):
        with pytest.raises(DhcpEncodeError):
            o.build_user_class(bad)


def test_ndi_and_uuid() -> None:
    assert o.to_ndi(b"\x01\x02\x01") == o.ClientNdi(1, 2, 1)
    u = bytes(range(16))
    assert o.to_uuid(b"\x00" + u) == u
    assert o.to_uuid(b"\x01" + u) is None and o.to_uuid(u) is None
    assert o.to_uuid(b"\x00" + u + b"\x00") is None


def test_names_of_message_types() -> None:
    assert [o.MESSAGE_TYPE_NAMES[t] for t in range(1, 9)] == [
        "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"]


def test_unsigned_integers_to_their_top_and_the_empty_user_class() -> None:
    assert o.u16(65535) == b"\xff\xff" and o.u32(0xFFFFFFFF) == b"\xff" * 4
    assert o.u8(0) == b"\x00"
    assert o.parse_user_class(b"") == (b"",)
