"""The DHCPv6 codec, provision/protocol/dhcp6.py (pure unit): every length check on
both sides of its edge, the option bodies byte for byte, DUIDs and EUI-64."""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

import pytest

from provision.protocol import dhcp6
from provision.protocol.dhcp6 import (
    Dhcp6Error,
    Dhcp6Message,
    IaNa,
    decode,
    decode_ia_na,
    decode_options,
    duid_ll,
    duid_mac,
    encode,
    encode_options,
    eui64_mac,
    ia_na,
    iaaddr,
    opaque_list,
    status,
    u16s,
)


def test_the_constants_are_the_rfcs() -> None:
    assert (dhcp6.SOLICIT, dhcp6.ADVERTISE, dhcp6.REQUEST, dhcp6.CONFIRM, dhcp6.RENEW,
            dhcp6.REBIND, dhcp6.REPLY, dhcp6.RELEASE, dhcp6.DECLINE) == tuple(range(1, 10))
    assert (dhcp6.INFORMATION_REQUEST, dhcp6.RELAY_FORW, dhcp6.RELAY_REPL) == (11, 12, 13)
    assert dhcp6.MESSAGE_NAMES[11] == "INFORMATION-REQUEST"
    assert dhcp6.MESSAGE_NAMES[dhcp6.SOLICIT] == "SOLICIT"
    assert (dhcp6.CLIENTID, dhcp6.SERVERID, dhcp6.IA_NA, dhcp6.IAADDR, dhcp6.ORO,
            dhcp6.ELAPSED_TIME, dhcp6.STATUS_CODE, dhcp6.RAPID_COMMIT, dhcp6.USER_CLASS,
            dhcp6.VENDOR_CLASS, dhcp6.DNS_SERVERS, dhcp6.DOMAIN_LIST, dhcp6.BOOTFILE_URL,
            dhcp6.CLIENT_ARCH_TYPE, dhcp6.CLIENT_NII) == (
        1, 2, 3, 5, 6, 8, 13, 14, 15, 16, 23, 24, 59, 61, 62)
    assert (dhcp6.STATUS_SUCCESS, dhcp6.STATUS_NO_ADDRS_AVAIL, dhcp6.STATUS_NOT_ON_LINK) == (
        0, 2, 4)
    assert (dhcp6.DUID_LLT, dhcp6.DUID_EN, dhcp6.DUID_LL, dhcp6.DUID_UUID,
            dhcp6.HWTYPE_ETHERNET, dhcp6.MAX_MESSAGE) == (1, 2, 3, 4, 1, 65535)


def test_get_and_all_keep_wire_order() -> None:
    m = Dhcp6Message(1, b"abc", [(3, b"x"), (1, b"c"), (3, b"y")])
    assert m.get(3) == b"x" and m.get(9) is None
    assert m.all(3) == [b"x", b"y"] and m.all(9) == []
    assert Dhcp6Message(1, b"abc").options == []


def test_options_decode_to_the_end_exactly() -> None:
    data = b"\x00\x01\x00\x02hi\x00\x03\x00\x00"
    assert decode_options(data) == [(1, b"hi"), (3, b"")]
    assert decode_options(b"") == []
    for bad in (b"\x00\x01\x00", b"\x00\x01\x00\x03hi", data + b"\x00"):
        with pytest.raises(Dhcp6Error):
            decode_options(bad)
    assert encode_options([(1, b"hi"), (3, b"")]) == data


def test_a_message_round_trips() -> None:
    wire = b"\x01xyz" + b"\x00\x08\x00\x02\x00\x00"
    m = decode(wire)
    assert (m.msg_type, m.xid, m.options) == (1, b"xyz", [(8, b"\x00\x00")])
    assert encode(m) == wire
    assert decode(b"\x0bxyz").options == []


def test_message_size_limits_and_relays() -> None:
    for bad in (b"", b"\x01xy"):
        with pytest.raises(Dhcp6Error):
            decode(bad)
    big = b"\x01xyz" + struct.pack("!HH", 99, 65531 - 4) + b"\x00" * (65531 - 4)
    assert len(big) == 65535 and decode(big).options[0][0] == 99
    with pytest.raises(Dhcp6Error):
        decode(big + b"\x00")
    for relay in (12, 13):
        with pytest.raises(Dhcp6Error):
            decode(bytes([relay]) + b"xyz")
    assert decode(bytes([14]) + b"xyz").msg_type == 14


def test_ia_na_body() -> None:
    body = ia_na(b"IAID", 100, 200, [(5, b"a")])
    assert body == b"IAID" + struct.pack("!II", 100, 200) + b"\x00\x05\x00\x01a"
    assert decode_ia_na(body) == IaNa(b"IAID", 100, 200, [(5, b"a")])
    assert decode_ia_na(body[:12]) == IaNa(b"IAID", 100, 200, [])
    with pytest.raises(Dhcp6Error):
        decode_ia_na(body[:11])


def test_iaaddr_and_status_bodies() -> None:
    a = IPv6Address("2001:db8::11")
    assert iaaddr(a, 300, 600) == a.packed + struct.pack("!II", 300, 600)
    assert status(2, "none left") == b"\x00\x02none left"
    assert status(0, "\u00e9" * 150) == b"\x00\x00" + ("\u00e9" * 100).encode()
    assert len(status(0, "x" * 300)) == 202


def test_duids() -> None:
    mac = "52:54:00:0a:0b:0c"
    ll = duid_ll(mac)
    assert ll == b"\x00\x03\x00\x01" + bytes.fromhex("5254000a0b0c")
    assert duid_mac(ll) == mac
    llt = b"\x00\x01\x00\x01" + b"TIME" + bytes.fromhex("5254000a0b0c")
    assert duid_mac(llt) == mac
    assert duid_mac(b"\x00\x02\x00\x01" + bytes.fromhex("5254000a0b0c")) is None  # DUID-EN
    assert duid_mac(b"\x00\x03\x00\x06" + bytes.fromhex("5254000a0b0c")) is None  # not Ethernet
    assert duid_mac(ll + b"\x00") is None and duid_mac(ll[:-1]) is None
    assert duid_mac(b"\x00\x03\x00") is None
    assert duid_mac(b"\x00\x03\x00\x01") is None


def test_eui64_mac() -> None:
    assert eui64_mac(IPv6Address("fe80::5054:ff:fe0a:b0c")) == "52:54:00:0a:0b:0c"
    assert eui64_mac(IPv6Address("fe80::5054:ff:fd0a:b0c")) is None
    assert eui64_mac(IPv6Address("fe80::5054:fe:fe0a:b0c")) is None
    assert eui64_mac(IPv6Address("2001:db8::5054:ff:fe0a:b0c")) is None


def test_u16s_and_opaque_lists() -> None:
    assert u16s(b"\x00\x17\x00\x18\x01") == (23, 24)
    assert u16s(b"") == ()
    assert opaque_list(b"\x00\x02ab\x00\x00\x00\x01c") == [b"ab", b"", b"c"]
    assert opaque_list(b"\x00\x05ab") == [b"ab"]
    assert opaque_list(b"\x00") == []
    assert opaque_list(b"\x00\x01a\x00") == [b"a"]


def test_lifetimes_and_codes_are_unsigned() -> None:
    inf = 0xFFFFFFFF  # RFC 8415 7.7: infinity
    body = ia_na(b"IAID", inf, inf, [])
    assert body == b"IAID" + b"\xff" * 8
    assert decode_ia_na(body) == IaNa(b"IAID", inf, inf, [])
    assert iaaddr(IPv6Address("::1"), inf, inf)[16:] == b"\xff" * 8
    assert status(0xFFFF, "") == b"\xff\xff"
    big = encode_options([(0xFFFF, b"\x00" * 40000)])
    assert big[:4] == b"\xff\xff\x9c\x40"


def test_an_empty_item_ends_an_opaque_list() -> None:
    assert opaque_list(b"\x00\x01a\x00\x00") == [b"a", b""]
