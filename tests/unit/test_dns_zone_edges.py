"""The DNS zone's edges, provision/policy/dns.py (pure unit): reverse zones at each
prefix boundary, IPv6 nibble zones, header bits copied into replies, EDNS on every
error path, empty non-terminals and nested zones."""

from __future__ import annotations

import ipaddress

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from provision.policy.dns import (
    Zone,
    _octet_blocks,
    key_of,
    ptr_name,
    records,
    reverse_zones,
    reverse_zones6,
    udp_limit,
)
from provision.render import render_zone
from tests.support.dns_helpers import DOMAIN, inventory, query

MAX_UDP = 1400


@pytest.fixture(scope="module")
def zone() -> Zone:
    return Zone(inventory(3), 77, max_udp=MAX_UDP)


def wire(reply: DNSRecord | None) -> DNSRecord:
    assert reply is not None
    return DNSRecord.parse(reply.pack())


def opt_of(reply: DNSRecord):  # type: ignore[no-untyped-def]
    opts = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    assert len(opts) == 1, reply
    return opts[0]


@pytest.mark.parametrize("cidr, zones", [
    ("198.18.0.0/17", [f"{i}.18.198.in-addr.arpa" for i in range(128)]),
    ("198.18.9.128/25", ["9.18.198.in-addr.arpa"]),
    ("198.18.9.0/24", ["9.18.198.in-addr.arpa"]),
    ("198.18.9.7/32", ["9.18.198.in-addr.arpa"]),
    ("198.0.0.0/7", ["198.in-addr.arpa", "199.in-addr.arpa"]),
])
def test_reverse_zones_at_the_prefix_edges(cidr: str, zones: list[str]) -> None:
    assert reverse_zones([ipaddress.IPv4Network(cidr)]) == zones


def test_octet_blocks_of_a_long_prefix_is_its_24() -> None:
    assert _octet_blocks(ipaddress.IPv4Network("198.18.9.128/25")) == [
        ipaddress.IPv4Network("198.18.9.0/24")]


@pytest.mark.parametrize("cidr, zones", [
    ("2001:db8::/32", ["8.b.d.0.1.0.0.2.ip6.arpa"]),
    ("2001:db8:1::/48", ["1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"]),
    ("2001:db8::/31", ["8.b.d.0.1.0.0.2.ip6.arpa", "9.b.d.0.1.0.0.2.ip6.arpa"]),
    ("2001:db8::/30", [f"{c}.b.d.0.1.0.0.2.ip6.arpa" for c in "89ab"]),
    ("2001:db8::/33", ["0.8.b.d.0.1.0.0.2.ip6.arpa", "1.8.b.d.0.1.0.0.2.ip6.arpa",
                       "2.8.b.d.0.1.0.0.2.ip6.arpa", "3.8.b.d.0.1.0.0.2.ip6.arpa",
                       "4.8.b.d.0.1.0.0.2.ip6.arpa", "5.8.b.d.0.1.0.0.2.ip6.arpa",
                       "6.8.b.d.0.1.0.0.2.ip6.arpa", "7.8.b.d.0.1.0.0.2.ip6.arpa"]),
    ("2000::/3", ["2.ip6.arpa", "3.ip6.arpa"]),
])
def test_reverse_zones6_on_nibble_boundaries(cidr: str, zones: list[str]) -> None:
    assert reverse_zones6([ipaddress.IPv6Network(cidr)]) == zones


def test_reverse_zones6_are_deduplicated() -> None:
    nets = [ipaddress.IPv6Network("2001:db8::/32"), ipaddress.IPv6Network("2001:db8::/32")]
    assert reverse_zones6(nets) == ["8.b.d.0.1.0.0.2.ip6.arpa"]


def test_ptr_name_and_key_of() -> None:
    assert ptr_name(ipaddress.IPv4Address("198.18.0.5")) == "5.0.18.198.in-addr.arpa"
    assert key_of("Web1.LAB.test") == (b"web1", b"lab", b"test")


def test_udp_limit_floor_is_512() -> None:
    assert udp_limit(None, 4096) == 512
    q = query("x", edns=100)
    assert udp_limit(q.ar[0], 4096) == 512
    q = query("x", edns=513)
    assert udp_limit(q.ar[0], 4096) == 513


def test_only_ptr_rdata_gets_a_trailing_dot() -> None:
    recs = records(inventory(3))
    a = next(r for r in recs if r.name == f"m1.{DOMAIN}" and r.rtype == "A")
    assert a.rdata == "198.18.0.1"
    ptr = next(r for r in recs if r.name == "1.0.18.198.in-addr.arpa")
    assert ptr.rdata == f"m1.{DOMAIN}."


def test_the_zone_text_has_the_header_line_then_one_line_per_record() -> None:
    inv = inventory(3)
    text = render_zone(inv, serial=9)
    lines = text.split("\n")
    assert lines[0] == f"; zones of cluster t ({DOMAIN}), serial 9"
    assert lines[1:-1] == [r.line() for r in records(inv, 9)]
    assert text.endswith("\n") and lines[-1] == ""


def test_the_zone_keeps_its_serial_in_the_soa(zone: Zone) -> None:
    assert zone.serial == 77
    soa = wire(zone.resolve(query(DOMAIN, "SOA"))).rr[0]
    assert soa.rdata.times[0] == 77


def test_rd_and_cd_are_copied_and_ra_follows_forwarding(zone: Zone) -> None:
    for rd in (0, 1):
        q = query(f"m1.{DOMAIN}", rd=bool(rd))
        q.header.cd = 1 - rd
        r = wire(zone.resolve(q))
        assert (r.header.rd, r.header.cd, r.header.ra) == (rd, 1 - rd, 0)
    fwd = Zone(inventory(3), 1, forwarding=True)
    assert wire(fwd.resolve(query(f"m1.{DOMAIN}"))).header.ra == 1


def test_the_do_bit_is_echoed_only_when_set(zone: Zone) -> None:
    plain = opt_of(wire(zone.resolve(query(f"m1.{DOMAIN}", edns=1232))))
    assert plain.ttl & (1 << 15) == 0
    do = opt_of(wire(zone.resolve(query(f"m1.{DOMAIN}", edns=1232, do=True))))
    assert do.ttl & (1 << 15)


def _edns_error(zone: Zone, q: DNSRecord, rcode: int) -> None:
    r = wire(zone.resolve(q))
    assert r.header.rcode == rcode
    assert opt_of(r).rclass == MAX_UDP


def test_every_error_answer_carries_our_edns(zone: Zone) -> None:
    q = query(f"m1.{DOMAIN}", edns=1232)
    q.header.opcode = 2
    _edns_error(zone, q, RCODE.NOTIMP)
    q = query(f"m1.{DOMAIN}", edns=1232)
    q.add_question(query(f"m2.{DOMAIN}").q)
    _edns_error(zone, q, RCODE.FORMERR)
    q = query(f"m1.{DOMAIN}", edns=1232)
    q.q.qclass = 3  # CHAOS
    _edns_error(zone, q, RCODE.REFUSED)
    _edns_error(zone, query("example.org", edns=1232), RCODE.REFUSED)
    _edns_error(zone, query(DOMAIN, "AXFR", edns=1232), RCODE.REFUSED)


def test_an_empty_non_terminal_is_nodata_not_nxdomain() -> None:
    zone = Zone(inventory(3), 1)  # its own: mutmut ties __init__ to the test that builds it
    r = wire(zone.resolve(query(f"inside.{DOMAIN}")))
    assert r.header.rcode == RCODE.NOERROR and not r.rr
    assert [str(a.rname) for a in r.auth] == [f"{DOMAIN}."]


def test_the_most_specific_zone_answers_in_nested_zones() -> None:
    nested = Zone(inventory(3, domain="in-addr.arpa"), 1)
    r = wire(nested.resolve(query("99.0.18.198.in-addr.arpa", "PTR")))
    assert r.header.rcode == RCODE.NXDOMAIN
    assert [str(a.rname) for a in r.auth] == ["0.18.198.in-addr.arpa."]
    r = wire(nested.resolve(query("0.18.198.in-addr.arpa", "SOA")))
    assert [str(a.rname) for a in r.rr] == ["0.18.198.in-addr.arpa."]


def test_lookup_of_a_foreign_name_when_forwarding_is_a_refusal_with_the_question() -> None:
    fwd = Zone(inventory(3), 1, forwarding=True)
    r = fwd.lookup("example.org", "A")
    assert r.header.rcode == RCODE.REFUSED and r.header.ra == 1 and r.header.id == 0
    assert str(r.q.qname) == "example.org."
    assert Zone(inventory(3), 1).lookup(f"m1.{DOMAIN}").header.id == 0
