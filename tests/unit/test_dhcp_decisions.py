"""DHCP policy: every branch's whole decision (reply kind, drop reason, RFC 2131 state,
host, destination), as the service counts and logs it. The drop reason and the state
are metric labels and log fields: a wrong one is a wrong metric (issue 24)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from provision.policy.dhcp import (
    TO_BROADCAST,
    TO_SOURCE,
    Decision,
    Destination,
    DhcpPolicy,
    DhcpSettings,
    Link,
)
from provision.policy.leases import LeasePut, LeaseTable, Sighting
from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import BOOTREPLY, DhcpPacket
from tests.support.dhcp_policy_support import INV, LAN, T0, run
from tests.support.dhcp_support import IPXE_ROM, PXE_BIOS, SERVER, UNKNOWN_MAC, W1_MAC

OTHER = "52:54:00:00:ee:02"
TINY = Link("eth3", IPv4Address("198.18.2.6"), IPv4Network("198.18.2.0/29"))
UNICAST = Link("eth0", SERVER, LAN.network, unicast=True)
PXE_PORT = Link("eth0", SERVER, LAN.network, port=4011, unicast=True)


def pol(**kw: object) -> DhcpPolicy:
    return DhcpPolicy(INV, LeaseTable(), DhcpSettings(**kw))  # type: ignore[arg-type]


def summary(d: Decision) -> tuple[object, ...]:
    return (d.kind, d.drop, d.state, d.host)


def leased(p: DhcpPolicy, mac: str = UNKNOWN_MAC, link: Link = LAN) -> IPv4Address:
    offer = run(p, o.DISCOVER, mac, link=link)
    assert offer.reply is not None, offer
    ip = offer.reply.yiaddr
    ack = run(p, o.REQUEST, mac, link=link, requested=str(ip), server=link.address)
    assert ack.kind == "ACK", ack
    return ip


# -- DISCOVER ------------------------------------------------------------------------

def test_discover_decisions() -> None:
    assert summary(run(pol(), o.DISCOVER, W1_MAC)) == ("OFFER", None, "init", "w1")
    assert summary(run(pol(discovery=True), o.DISCOVER, UNKNOWN_MAC)) == (
        "OFFER", None, "init", "")
    # m01 has no address on 'far': a relayed DISCOVER from there is not answered
    d = run(pol(), o.DISCOVER, "52:54:00:00:00:01", giaddr="198.18.1.1")
    assert summary(d) == ("none", "host_not_on_network", "", "m01")


def test_discover_hint_is_offered_when_free() -> None:
    p = pol(discovery=True)
    d = run(p, o.DISCOVER, UNKNOWN_MAC, requested="198.18.0.77")
    assert d.reply is not None and d.reply.yiaddr == IPv4Address("198.18.0.77")


def test_exhausted_pool_still_records_the_sighting() -> None:
    p = pol(discovery=True)
    for i in range(4):
        leased(p, f"52:54:00:00:e5:{i:02x}", TINY)
    d = run(p, o.DISCOVER, OTHER, link=TINY)
    assert summary(d) == ("none", "pool_exhausted", "", "")
    assert [c.mac for c in d.lazy if isinstance(c, Sighting)] == [OTHER]


def test_a_freed_address_is_not_handed_out_again_while_fresh_ones_remain() -> None:
    p = pol(discovery=True, offer_hold=10)
    first = run(p, o.DISCOVER, UNKNOWN_MAC, link=TINY).reply
    second = run(p, o.DISCOVER, OTHER, T0 + 20, link=TINY).reply  # first's offer expired
    assert first is not None and second is not None and second.yiaddr != first.yiaddr


# -- REQUEST --------------------------------------------------------------------------

def test_request_decisions() -> None:
    p = pol(discovery=True)
    cases = [
        # (kwargs, link, expected summary)
        ({"requested": "198.18.0.11", "server": SERVER}, LAN, ("ACK", None, "selecting", "w1")),
        ({"requested": "198.18.0.11", "server": "198.18.0.2"}, LAN,
         ("none", "other_server", "selecting", "")),
        ({"requested": "198.18.0.11"}, LAN, ("ACK", None, "init-reboot", "w1")),
        ({"ciaddr": "198.18.0.11"}, UNICAST, ("ACK", None, "renewing", "w1")),
        ({"ciaddr": "198.18.0.11"}, LAN, ("ACK", None, "rebinding", "w1")),
        ({}, LAN, ("none", "request_without_address", "", "")),
        ({"server": SERVER}, LAN, ("none", "request_without_address", "selecting", "")),
        ({"requested": "198.18.0.12", "server": SERVER}, LAN, ("NAK", None, "selecting", "w1")),
    ]
    for kw, link, want in cases:
        assert summary(run(p, o.REQUEST, W1_MAC, link=link, **kw)) == want, kw
    assert summary(run(p, o.REQUEST, UNKNOWN_MAC, requested="198.18.3.3", server=SERVER)) == (
        "NAK", None, "selecting", "")
    assert summary(run(p, o.REQUEST, UNKNOWN_MAC, requested="198.18.0.80")) == (
        "none", "init_reboot_unknown", "init-reboot", "")
    assert summary(run(p, o.REQUEST, UNKNOWN_MAC, requested="198.18.0.1", server=SERVER)) == (
        "NAK", None, "selecting", "")


def test_selecting_request_without_option_50_uses_ciaddr() -> None:
    d = run(pol(), o.REQUEST, W1_MAC, server=SERVER, ciaddr="198.18.0.11")
    assert summary(d) == ("ACK", None, "selecting", "w1")
    assert d.reply is not None and d.reply.yiaddr == IPv4Address("198.18.0.11")


def test_choosing_another_server_frees_our_offer_at_once() -> None:
    p = pol(discovery=True, offer_hold=60)
    for i in range(3):
        leased(p, f"52:54:00:00:e6:{i:02x}", TINY)
    offer = run(p, o.DISCOVER, UNKNOWN_MAC, link=TINY).reply
    assert offer is not None
    gone = run(p, o.REQUEST, UNKNOWN_MAC, link=TINY, requested=str(offer.yiaddr),
               server="198.18.2.1")
    assert gone.drop == "other_server"
    late = run(p, o.DISCOVER, OTHER, T0 + 2, link=TINY).reply  # the hold did not keep it
    assert late is not None and late.yiaddr == offer.yiaddr


def test_ack_lease_times_names_and_sightings() -> None:
    p = pol(discovery=True, lease_time=3600, pool_lease_time=600)
    known = run(p, o.REQUEST, W1_MAC, requested="198.18.0.11", server=SERVER)
    assert known.reply is not None and known.reply.options[o.LEASE_TIME] == o.u32(3600)
    puts = [c.lease for c in known.durable if isinstance(c, LeasePut)]
    assert [(x.hostname, x.expires) for x in puts] == [("w1", T0 + 3600)]
    assert not [c for c in known.lazy if isinstance(c, Sighting)]  # known: not 'discovered'
    ip = run(p, o.DISCOVER, UNKNOWN_MAC).reply.yiaddr  # type: ignore[union-attr]
    pool = run(p, o.REQUEST, UNKNOWN_MAC, requested=str(ip), server=SERVER)
    assert pool.reply is not None and pool.reply.options[o.LEASE_TIME] == o.u32(600)
    puts = [c.lease for c in pool.durable if isinstance(c, LeasePut)]
    assert [(x.hostname, x.expires) for x in puts] == [("", T0 + 600)]


def test_nak_names_the_host_and_says_why() -> None:
    d = run(pol(), o.REQUEST, W1_MAC, requested="198.18.0.12", server=SERVER)
    assert d.host == "w1" and d.note.startswith("NAK: ") and "198.18.0.12" in d.note
    assert d.reply is not None and d.reply.options[o.MESSAGE] == b"198.18.0.12 is not w1's"
    assert d.to == TO_BROADCAST


# -- INFORM, DECLINE, RELEASE ---------------------------------------------------------

def test_inform_decision_names_the_host() -> None:
    d = run(pol(), o.INFORM, W1_MAC, ciaddr="198.18.0.11")
    assert summary(d) == ("ACK", None, "inform", "w1")
    assert d.reply is not None and d.reply.options[o.HOST_NAME] == b"w1"


def test_decline_decisions() -> None:
    p = pol(discovery=True)
    ip = leased(p)
    assert summary(run(p, o.DECLINE, UNKNOWN_MAC, requested=str(ip),
                       server="198.18.0.2")) == ("none", "other_server", "decline", "")
    assert summary(run(p, o.DECLINE, UNKNOWN_MAC, server=SERVER)) == (
        "none", "other_server", "decline", "")
    assert summary(run(p, o.DECLINE, OTHER, requested=str(ip), server=SERVER)) == (
        "none", "decline_not_leased", "decline", "")
    known = run(p, o.DECLINE, W1_MAC, requested="198.18.0.11", server=SERVER)
    assert summary(known) == ("none", None, "decline", "w1") and not known.lazy
    assert "conflict" in known.note and "w1" in known.note
    ok = run(p, o.DECLINE, UNKNOWN_MAC, requested=str(ip), server=SERVER)
    assert summary(ok) == ("none", None, "decline", "") and ok.lazy
    assert [c.lease.network for c in ok.lazy if isinstance(c, LeasePut)] == ["lan"]


def test_release_decisions() -> None:
    p = pol(discovery=True)
    ip = leased(p)
    assert summary(run(p, o.RELEASE, UNKNOWN_MAC, ciaddr=str(ip), server="198.18.0.2")) == (
        "none", "other_server", "release", "")
    assert summary(run(p, o.RELEASE, OTHER, ciaddr=str(ip), server=SERVER)) == (
        "none", "release_not_leased", "release", "")
    ok = run(p, o.RELEASE, UNKNOWN_MAC, T0 + 7, ciaddr=str(ip))  # no option 54: accepted
    assert summary(ok) == ("none", None, "release", "")
    assert [(c.lease.state, c.lease.expires) for c in ok.lazy if isinstance(c, LeasePut)] == [
        ("released", T0 + 7)]
    run(p, o.REQUEST, W1_MAC, requested="198.18.0.11", server=SERVER)
    w1 = run(p, o.RELEASE, W1_MAC, ciaddr="198.18.0.11", server=SERVER)
    assert summary(w1) == ("none", None, "release", "w1")


# -- ProxyDHCP ------------------------------------------------------------------------

def test_proxy_decisions() -> None:
    p = pol(proxy=True)
    d = run(p, o.DISCOVER, W1_MAC, extra=PXE_BIOS)
    assert summary(d) == ("OFFER", None, "proxy", "w1") and d.to == TO_BROADCAST
    unknown_pxe = pol(proxy=True, discovery=True)
    u = run(unknown_pxe, o.DISCOVER, UNKNOWN_MAC, extra=IPXE_ROM)
    assert summary(u) == ("OFFER", None, "proxy", "")
    assert run(p, o.DISCOVER, W1_MAC, link=PXE_PORT, extra=PXE_BIOS).drop == "proxy_not_request"
    assert run(p, o.INFORM, W1_MAC, link=PXE_PORT, extra=PXE_BIOS,
               ciaddr="198.18.0.50").to == TO_SOURCE
    arm_only = pol(proxy=True, loaders=frozenset())
    arm = {**PXE_BIOS, o.CLIENT_ARCH: o.u16(11)}
    assert run(arm_only, o.DISCOVER, W1_MAC, extra=arm).drop == "no_boot_file"
    relayed = run(p, o.DISCOVER, W1_MAC, extra=PXE_BIOS, giaddr="198.18.1.1")
    assert relayed.to == Destination(IPv4Address("198.18.1.1"), 67)



def test_requests_through_alternating_relays_get_each_relays_network_and_destination() -> None:
    """The policy remembers the last relay (its network and destination): requests that
    alternate between relays, direct clients and an unknown relay each get their own."""
    p = pol(discovery=True, new_mac_rate=0)
    ways = [("198.18.1.1", "198.18.1.0/24"), ("198.18.2.1", "198.18.2.0/29"),
            ("198.18.1.1", "198.18.1.0/24"), (None, "198.18.0.0/24"),
            ("198.18.9.9", None), ("198.18.2.1", "198.18.2.0/29"), (None, "198.18.0.0/24")]
    for i, (giaddr, cidr) in enumerate(ways * 2):
        mac = f"02:00:00:00:07:{i:02x}"
        kw = {"giaddr": giaddr} if giaddr else {}
        d = run(p, o.DISCOVER, mac, **kw)
        if cidr is None:
            assert d.drop == "unknown_network", (i, giaddr)
            continue
        assert d.reply is not None and d.reply.yiaddr in IPv4Network(cidr), (i, giaddr, d)
        want = Destination(IPv4Address(giaddr), 67) if giaddr else TO_BROADCAST
        assert d.to == want, (i, giaddr)
        assert d.to is not None and d.to.sockaddr == (
            (giaddr, 67) if giaddr else ("255.255.255.255", 68))

# -- details ----------------------------------------------------------------------------

@pytest.mark.parametrize("n, kept", [(127, True), (128, False)])
def test_boot_file_name_in_the_file_field_only_when_it_fits_with_its_nul(n: int,
                                                                         kept: bool) -> None:
    base = DhcpPacket(op=BOOTREPLY, xid=1, chaddr=bytes(6), options={})
    r = DhcpPolicy._boot_into(base, "x" * n, LAN)
    assert r.file == (b"x" * n if kept else b"")
    assert r.options[o.BOOTFILE_NAME] == b"x" * n + b"\0"  # option 67 always
    assert r.options[o.TFTP_SERVER] == b"198.18.0.1" and r.siaddr == SERVER


def test_sighting_text_fields_survive_odd_bytes() -> None:
    p = pol(discovery=True)
    d = run(p, o.DISCOVER, UNKNOWN_MAC,
            extra={o.VENDOR_CLASS: b"PXE\xffClient", o.USER_CLASS: b"\x03abc\x04iPXE"})
    s = [c for c in d.lazy if isinstance(c, Sighting)][0]
    assert s.vendor_class == "PXE\ufffdClient" and s.user_class == "abc,iPXE"
    assert s.uuid == "" and s.arch is None and s.interface == "eth0" and s.network == "lan"
    assert s.when == T0 and s.mac == UNKNOWN_MAC
    odd = run(pol(discovery=True), o.DISCOVER, OTHER, extra={o.USER_CLASS: b"\x02\xfe\xfd"})
    assert [c.user_class for c in odd.lazy if isinstance(c, Sighting)] == ["\ufffd\ufffd"]


def test_each_network_has_its_own_pool() -> None:
    p = pol(discovery=True)
    lan = run(p, o.DISCOVER, UNKNOWN_MAC).reply
    tiny = run(p, o.DISCOVER, OTHER, link=TINY).reply
    assert lan is not None and lan.yiaddr in LAN.network
    assert tiny is not None and tiny.yiaddr in TINY.network
    # A second server address on the same network excludes its own address too.
    second = Link("eth0", IPv4Address("198.18.0.3"), LAN.network)
    offers = {run(p, o.DISCOVER, f"52:54:00:00:e7:{i:02x}", link=second).reply.yiaddr  # type: ignore[union-attr]
              for i in range(3)}
    assert IPv4Address("198.18.0.3") not in offers


def test_reply_header_answers_the_request() -> None:
    from provision.protocol.dhcp import BOOTREPLY, decode, encode
    from tests.support.dhcp_support import client_packet

    req = client_packet(o.DISCOVER, W1_MAC, xid=0x1234ABCD, broadcast=True)
    for p, link in ((pol(), LAN), (pol(proxy=True), LAN)):
        if p.settings.proxy:
            req = client_packet(o.DISCOVER, W1_MAC, xid=0x1234ABCD, broadcast=True,
                                extra=PXE_BIOS)
        d = p.handle(decode(encode(req)), link, T0)
        r = d.reply
        assert r is not None
        assert (r.op, r.xid, r.chaddr, r.htype, r.flags) == (
            BOOTREPLY, 0x1234ABCD, req.chaddr, 1, 0x8000)
    nak = pol().handle(decode(encode(client_packet(o.REQUEST, W1_MAC, xid=7,
                                                   requested="198.18.0.99", server=SERVER))),
                       LAN, T0)
    assert nak.reply is not None and (nak.reply.op, nak.reply.xid) == (BOOTREPLY, 7)


def test_a_broadcast_request_is_judged_by_the_interface_not_by_ciaddr() -> None:
    # REBINDING: broadcast, ciaddr set. On lan, ciaddr 198.18.1.11 (w1's far address)
    # is not w1's address here: NAK. Only a unicast (RENEWING) request may come from
    # behind a router and be judged by ciaddr.
    d = run(pol(), o.REQUEST, W1_MAC, ciaddr="198.18.1.11")
    assert summary(d) == ("NAK", None, "rebinding", "w1")


def test_ack_of_a_renewal_leaves_ciaddr_zero_only_inform_echoes_it() -> None:
    d = run(pol(), o.REQUEST, W1_MAC, link=UNICAST, ciaddr="198.18.0.11")
    assert d.reply is not None and d.reply.ciaddr == IPv4Address(0)
    i = run(pol(), o.INFORM, W1_MAC, ciaddr="198.18.0.11")
    assert i.reply is not None and i.reply.ciaddr == IPv4Address("198.18.0.11")
