"""DHCPv6: the codec and the policy (units); ISC dhclient -6 against `dsas serve
--only dhcp6` is in tests/lab/test_dhcp6_lab.py."""

from __future__ import annotations

import random
from ipaddress import IPv6Address

import pytest

from provision.policy.dhcp6 import Dhcp6Policy, Link6
from provision.protocol import dhcp6 as d6
from tests.support.dhcp6_support import (
    INV,
    LINK,
    SEEDS,
    SERVER_DUID,
    W1_LL,
    W1_MAC,
    W2_MAC,
    message,
    mutated,
)

OTHER_LL = IPv6Address("fe80::1234:5678:9abc:def0")  # stable-privacy style: no MAC inside
UUID_DUID = bytes((0, 4)) + bytes(16)  # DUID-UUID of a VM: all zeros


def ia_address(reply: d6.Dhcp6Message) -> IPv6Address | None:
    raw = reply.get(d6.IA_NA)
    assert raw is not None
    ia = d6.decode_ia_na(raw)
    assert ia.iaid == b"\x00\x00\x00\x07"
    for code, data in ia.options:
        if code == d6.IAADDR:
            return IPv6Address(data[:16])
    return None


def test_codec_round_trip_and_bad_lengths() -> None:
    m = message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.ELAPSED_TIME, b"\x00\x00"))
    assert m.msg_type == d6.SOLICIT and m.xid == b"\x12\x34\x56"
    assert d6.duid_mac(m.get(d6.CLIENTID) or b"") == W1_MAC
    llt = bytes((0, 1, 0, 1, 1, 2, 3, 4)) + bytes.fromhex("525400000101")  # DUID-LLT
    assert d6.duid_mac(llt) == W1_MAC and d6.duid_mac(llt[:-1]) is None
    assert d6.duid_mac(UUID_DUID) is None
    assert d6.eui64_mac(W1_LL) == W1_MAC and d6.eui64_mac(OTHER_LL) is None
    for bad in (b"\x01\x00", b"\x01abc\x00\x01\x00\x09xx", b"\x0cabc", b"\x01abc\x00"):
        with pytest.raises(d6.Dhcp6Error):
            d6.decode(bad)


def test_solicit_gets_the_hosts_address_by_duid_mac_and_eui64_source() -> None:
    p = Dhcp6Policy(INV)
    for duid, source in ((d6.duid_ll(W1_MAC), OTHER_LL), (UUID_DUID, W1_LL)):
        d = p.handle(message(d6.SOLICIT, duid), LINK, source)
        assert d.reply is not None and d.reply.msg_type == d6.ADVERTISE, d.drop
        assert d.host == "w1" and ia_address(d.reply) == IPv6Address("2001:db8:18::11")
        assert d.reply.get(d6.SERVERID) == SERVER_DUID and d.reply.get(d6.CLIENTID) == duid
        assert d.reply.xid == b"\x12\x34\x56"
    rapid = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.RAPID_COMMIT, b"")), LINK,
                     W1_LL)
    assert rapid.reply is not None and rapid.reply.msg_type == d6.REPLY
    req = p.handle(message(d6.REQUEST, d6.duid_ll(W1_MAC), (d6.SERVERID, SERVER_DUID)),
                   LINK, W1_LL)
    assert req.reply is not None and req.reply.msg_type == d6.REPLY
    assert ia_address(req.reply) == IPv6Address("2001:db8:18::11")


def test_who_is_not_answered() -> None:
    p = Dhcp6Policy(INV)
    cases = [
        (message(d6.SOLICIT, UUID_DUID), OTHER_LL, "no_mac"),  # no MAC anywhere
        (message(d6.SOLICIT, d6.duid_ll("52:54:00:00:ee:01")), W1_LL, "unknown_mac"),
        (message(d6.SOLICIT, None), W1_LL, "no_client_id"),
        (message(d6.REQUEST, d6.duid_ll(W1_MAC), (d6.SERVERID, b"other")), W1_LL,
         "other_server"),
        (message(d6.REQUEST, d6.duid_ll(W1_MAC)), W1_LL, "other_server"),
        (message(d6.ADVERTISE, d6.duid_ll(W1_MAC)), W1_LL, "server_message"),
    ]
    for msg, source, why in cases:
        d = p.handle(msg, source=source, link=LINK)
        assert d.reply is None and d.drop == why, (why, d.drop)
    no_v6 = Link6("br0", INV.networks["far"], None, SERVER_DUID)
    assert p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC)), no_v6, W1_LL).drop == \
        "no_ipv6_on_link"
    w2 = p.handle(message(d6.SOLICIT, d6.duid_ll(W2_MAC)), LINK, W1_LL)  # no addresses6
    assert w2.reply is not None and ia_address(w2.reply) is None
    assert b"\x00\x02" in (d6.decode_ia_na(w2.reply.get(d6.IA_NA) or b"").options[0][1][:2])


def test_boot_file_url_option_59_by_client_kind() -> None:
    p = Dhcp6Policy(INV)
    arch = (d6.CLIENT_ARCH_TYPE, b"\x00\x07")

    def boot(*extra: tuple[int, bytes]) -> bytes | None:
        d = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC), *extra), LINK, W1_LL)
        assert d.reply is not None
        return d.reply.get(d6.BOOTFILE_URL)

    assert boot(arch) == b"tftp://[2001:db8:18::1]/ipxe.efi"
    assert boot(arch, (d6.USER_CLASS, b"\x00\x04iPXE")) == \
        b"http://[2001:db8:18::1]/hosts/w1/boot.ipxe"
    assert boot((d6.CLIENT_ARCH_TYPE, b"\x00\x10"),
                (d6.VENDOR_CLASS, b"\x00\x00\x01\x57\x00\x0aHTTPClient")) == \
        b"http://[2001:db8:18::1]/ipxe.efi"
    assert boot() is None  # Linux's DHCPv6 client: no boot file


def test_mutated_messages_through_the_policy_never_raise() -> None:
    rng = random.Random(22)
    p = Dhcp6Policy(INV)
    answered = 0
    for _ in range(2000):
        try:
            msg = d6.decode(mutated(rng, SEEDS))
        except d6.Dhcp6Error:
            continue
        d = p.handle(msg, LINK, rng.choice([W1_LL, OTHER_LL]))
        assert (d.reply is None) != (d.drop is None)
        answered += d.reply is not None
    assert answered > 0


