"""DHCPv6 decisions, provision/policy/dhcp6.py (pure unit): CONFIRM, RELEASE and
DECLINE answers byte for byte, the lifetimes, what a decision records, the drops."""

from __future__ import annotations

from ipaddress import IPv6Address

from provision.policy.dhcp6 import Dhcp6Policy, Link6
from provision.protocol import dhcp6 as d6
from tests.support.dhcp6_support import INV, LINK, SERVER_DUID, W1_LL, W1_MAC, W2_MAC, message

W1_IP = IPv6Address("2001:db8:18::11")
IAID = b"\x00\x00\x00\x07"


def ia_with(*addresses: IPv6Address, code: int = d6.IAADDR, extra: bytes = b"") -> bytes:
    return d6.ia_na(IAID, 0, 0, [(code, d6.iaaddr(a, 0, 0) + extra) for a in addresses])


def confirm(*ias: bytes) -> d6.Dhcp6Message:
    return message(d6.CONFIRM, d6.duid_ll(W1_MAC), *((d6.IA_NA, ia) for ia in ias), ia=False)


def status_of(reply: d6.Dhcp6Message | None) -> bytes | None:
    assert reply is not None
    return reply.get(d6.STATUS_CODE)


ON = b"\x00\x00on link"
OFF = b"\x00\x04not on link"


def test_confirm_says_whether_the_addresses_are_on_this_link() -> None:
    p = Dhcp6Policy(INV)
    d = p.handle(confirm(ia_with(W1_IP)), LINK, W1_LL)
    assert d.reply is not None and d.reply.msg_type == d6.REPLY
    assert status_of(d.reply) == ON and (d.host, d.mac) == ("w1", W1_MAC)
    assert d.reply.xid == b"\x12\x34\x56" and d.reply.get(d6.SERVERID) == SERVER_DUID
    far = IPv6Address("2001:db8:99::1")
    assert status_of(p.handle(confirm(ia_with(far)), LINK, W1_LL).reply) == OFF
    assert status_of(p.handle(confirm(ia_with(W1_IP), ia_with(far)), LINK, W1_LL).reply) == OFF
    assert status_of(p.handle(confirm(ia_with(far), ia_with(W1_IP)), LINK, W1_LL).reply) == OFF
    assert status_of(p.handle(confirm(b"bad", ia_with(far)), LINK, W1_LL).reply) == OFF


def test_confirm_reads_only_whole_iaaddr_options() -> None:
    p = Dhcp6Policy(INV)
    far = IPv6Address("2001:db8:99::1")
    other_code = ia_with(far, code=99)
    assert status_of(p.handle(confirm(other_code), LINK, W1_LL).reply) == ON
    short = d6.ia_na(IAID, 0, 0, [(d6.IAADDR, far.packed + b"\x00" * 7)])
    assert status_of(p.handle(confirm(short), LINK, W1_LL).reply) == ON
    exact = d6.ia_na(IAID, 0, 0, [(d6.IAADDR, far.packed + b"\x00" * 8)])
    assert status_of(p.handle(confirm(exact), LINK, W1_LL).reply) == OFF
    longer = ia_with(far, extra=b"\x00\x0d\x00\x00")
    assert status_of(p.handle(confirm(longer), LINK, W1_LL).reply) == OFF


def test_release_and_decline_are_acknowledged() -> None:
    p = Dhcp6Policy(INV)
    for mt in (d6.RELEASE, d6.DECLINE):
        d = p.handle(message(mt, d6.duid_ll(W1_MAC), (d6.SERVERID, SERVER_DUID)), LINK, W1_LL)
        assert d.reply is not None and d.reply.msg_type == d6.REPLY
        assert d.reply.xid == b"\x12\x34\x56"
        assert d.reply.options == [(d6.SERVERID, SERVER_DUID), (d6.CLIENTID, d6.duid_ll(W1_MAC)),
                                   (d6.STATUS_CODE, b"\x00\x00nothing to release")]
        assert (d.host, d.mac) == ("w1", W1_MAC)


def test_lifetimes_of_an_address_and_of_none() -> None:
    p = Dhcp6Policy(INV)
    d = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC)), LINK, W1_LL)
    assert d.reply is not None
    ia = d6.decode_ia_na(d.reply.get(d6.IA_NA) or b"")
    assert (ia.t1, ia.t2) == (1800, 2880)
    assert ia.options == [(d6.IAADDR, d6.iaaddr(W1_IP, 3600, 7200))]
    d = p.handle(message(d6.SOLICIT, d6.duid_ll(W2_MAC)), LINK, W1_LL)
    assert d.reply is not None
    ia = d6.decode_ia_na(d.reply.get(d6.IA_NA) or b"")
    assert (ia.t1, ia.t2) == (0, 0)


def test_a_decision_records_host_mac_address_and_boot() -> None:
    p = Dhcp6Policy(INV)
    d = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.CLIENT_ARCH_TYPE, b"\x00\x07")),
                 LINK, W1_LL)
    assert (d.host, d.mac, d.address, d.boot) == (
        "w1", W1_MAC, W1_IP, "tftp://[2001:db8:18::1]/ipxe.efi")
    assert d.reply is not None
    assert d.reply.get(d6.DOMAIN_LIST) == b"\x03lab\x07example\x00"
    plain = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC)), LINK, W1_LL)
    assert plain.boot == "" and plain.reply is not None
    assert plain.reply.get(d6.BOOTFILE_URL) is None


def test_rapid_commit_is_echoed_empty() -> None:
    d = Dhcp6Policy(INV).handle(
        message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.RAPID_COMMIT, b"")), LINK, W1_LL)
    assert d.reply is not None and d.reply.options[2] == (d6.RAPID_COMMIT, b"")


def test_drops_record_what_is_known() -> None:
    p = Dhcp6Policy(INV)
    bad_ia = message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.IA_NA, b"short"), ia=False)
    d = p.handle(bad_ia, LINK, W1_LL)
    assert (d.reply, d.drop, d.host, d.mac) == (None, "malformed_ia_na", "w1", W1_MAC)
    unknown = p.handle(message(d6.SOLICIT, d6.duid_ll("52:54:00:00:ee:01")), LINK, W1_LL)
    assert (unknown.drop, unknown.mac) == ("unknown_mac", "52:54:00:00:ee:01")
    no_v6 = Link6("br0", INV.networks["far"], None, SERVER_DUID)
    d = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC)), no_v6, W1_LL)
    assert (d.drop, d.host, d.mac) == ("no_ipv6_on_link", "w1", W1_MAC)
    d = p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC), (d6.SERVERID, SERVER_DUID)), LINK,
                 W1_LL)
    assert d.drop == "server_id_not_allowed"
    d = p.handle(message(d6.INFORMATION_REQUEST, d6.duid_ll(W1_MAC), (d6.SERVERID, b"x"),
                         ia=False), LINK, W1_LL)
    assert d.drop == "other_server"


def test_boot_urls_name_the_http_port_and_need_both_http_signs() -> None:
    p = Dhcp6Policy(INV, http_port=8080)

    def boot(*extra: tuple[int, bytes]) -> str:
        return p.handle(message(d6.SOLICIT, d6.duid_ll(W1_MAC), *extra), LINK, W1_LL).boot

    assert boot((d6.CLIENT_ARCH_TYPE, b"\x00\x07"), (d6.USER_CLASS, b"\x00\x04iPXE")) == (
        "http://[2001:db8:18::1]:8080/hosts/w1/boot.ipxe")
    assert boot((d6.CLIENT_ARCH_TYPE, b"\x00\x07"),
                (d6.VENDOR_CLASS, b"\x00\x00\x01\x57\x00\x0aHTTPClient")) == (
        "tftp://[2001:db8:18::1]/ipxe.efi")
