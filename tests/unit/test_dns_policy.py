"""The DNS policy and wire responder: pure units, no sockets."""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import replace

import pytest
from click.testing import CliRunner
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provision.cli.main import cli
from provision.policy.dns import (
    DYNAMIC_TTL,
    NEGATIVE_TTL,
    Zone,
    records,
    reverse_zones,
)
from provision.policy.dns_wire import (
    ANSWER,
    DROP_OVERSIZED,
    DROP_RESPONSE,
    DROP_SHORT,
    ERROR,
    FORWARD,
    MALFORMED,
    MAX_QUERY,
    Responder,
    matches,
    servfail,
)
from provision.render import render_zone
from tests.support.dns_helpers import DOMAIN, inventory, inventory_text, query, raw_header
from tests.support.paths import FIXTURES

SERIAL = 2024010101


@pytest.fixture(scope="module")
def zone() -> Zone:
    return Zone(inventory(3), SERIAL)


@pytest.fixture(scope="module")
def big() -> Responder:
    return Responder(Zone(inventory(120), SERIAL))


def ask(zone: Zone, name: str, qtype: str = "A", **kw: object) -> DNSRecord:
    reply = zone.resolve(query(name, qtype, **kw))  # type: ignore[arg-type]
    assert reply is not None
    return DNSRecord.parse(reply.pack())  # what goes on the wire, read back


def answers(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


# -- the records -------------------------------------------------------------


def net(cidr: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(cidr)


@pytest.mark.parametrize("cidr, zones", [
    ("198.18.0.0/24", ["0.18.198.in-addr.arpa"]),
    ("198.18.0.0/22", [f"{i}.18.198.in-addr.arpa" for i in range(4)]),
    ("198.18.9.64/26", ["9.18.198.in-addr.arpa"]),
    ("198.18.0.0/16", ["18.198.in-addr.arpa"]),
    ("198.18.0.0/15", ["18.198.in-addr.arpa", "19.198.in-addr.arpa"]),
    ("198.0.0.0/8", ["198.in-addr.arpa"]),
])
def test_reverse_zones_are_on_octet_boundaries(cidr: str, zones: list[str]) -> None:
    assert reverse_zones([net(cidr)]) == zones


def test_reverse_zones_are_deduplicated() -> None:
    assert reverse_zones([net("198.18.9.0/26"), net("198.18.9.64/26")]) == [
        "9.18.198.in-addr.arpa"]


def test_every_zone_has_soa_and_both_masters_as_ns() -> None:
    recs = records(inventory(3), serial=SERIAL)
    apexes = [r.name for r in recs if r.rtype == "SOA"]
    assert apexes == [DOMAIN, "0.18.198.in-addr.arpa", "1.18.198.in-addr.arpa",
                      "2.18.198.in-addr.arpa", "3.18.198.in-addr.arpa",
                      "0.19.198.in-addr.arpa", "9.18.198.in-addr.arpa"]
    for apex in apexes:
        ns = sorted(r.rdata for r in recs if r.name == apex and r.rtype == "NS")
        assert ns == [f"m1.{DOMAIN}.", f"m2.{DOMAIN}."]
    soa = next(r for r in recs if r.rtype == "SOA")
    assert soa.rdata == f"m1.{DOMAIN}. hostmaster.{DOMAIN}. {SERIAL} 3600 600 86400 60"


def test_without_master_hosts_the_name_server_is_ns_with_master_address() -> None:
    inv = inventory(1)  # the loader insists on master hosts; build one without
    inv = replace(inv, cluster=replace(inv.cluster, primary_master="gone",
                                       secondary_master=None))
    z = Zone(inv, 1)
    assert answers(ask(z, DOMAIN, "NS")) == [f"ns.{DOMAIN}."]
    assert answers(ask(z, f"ns.{DOMAIN}")) == ["198.18.0.1"]


def test_the_zone_text_lists_every_record_with_ttls() -> None:
    text = render_zone(inventory(3), serial=7)
    assert f"w101.{DOMAIN}.\t300\tIN\tA\t198.18.1.1" in text
    assert f"web.{DOMAIN}.\t{DYNAMIC_TTL}\tIN\tA\t198.18.1.3" in text
    assert f"1.1.18.198.in-addr.arpa.\t300\tIN\tPTR\tw101.{DOMAIN}." in text
    assert " 7 3600 600 86400 60" in text


# -- answers -------------------------------------------------------------------


def test_host_on_its_first_network_and_qualified_on_others(zone: Zone) -> None:
    r = ask(zone, f"lvs1.{DOMAIN}")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1 and r.header.qr == 1
    assert answers(r) == ["198.18.0.11"]
    assert r.rr[0].ttl == 300
    assert answers(ask(zone, f"lvs1.outside.{DOMAIN}")) == ["198.19.0.11"]
    assert answers(ask(zone, f"lvs1.inside.{DOMAIN}")) == ["198.18.0.11"]
    assert answers(ask(zone, f"db1.mgmt.{DOMAIN}")) == ["198.18.9.70"]


def test_ptr_for_every_address(zone: Zone) -> None:
    assert answers(ask(zone, "11.0.18.198.in-addr.arpa", "PTR")) == [f"lvs1.{DOMAIN}."]
    assert answers(ask(zone, "11.0.19.198.in-addr.arpa", "PTR")) == [f"lvs1.outside.{DOMAIN}."]
    assert answers(ask(zone, "70.9.18.198.in-addr.arpa", "PTR")) == [f"db1.mgmt.{DOMAIN}."]


def test_role_masters_and_service_names(zone: Zone) -> None:
    web = ask(zone, f"web.{DOMAIN}")
    assert answers(web) == ["198.18.1.1", "198.18.1.2", "198.18.1.3"]
    assert {rr.ttl for rr in web.rr} == {DYNAMIC_TTL}
    assert answers(ask(zone, f"masters.{DOMAIN}")) == ["198.18.0.1", "198.18.0.2"]
    assert answers(ask(zone, f"www.{DOMAIN}")) == ["198.19.0.10"]
    assert answers(ask(zone, f"db-read.{DOMAIN}")) == ["198.18.3.30"]


def test_names_are_case_insensitive_and_the_question_case_is_kept(zone: Zone) -> None:
    r = ask(zone, "W101.Lab.TEST")
    assert answers(r) == ["198.18.1.1"]
    assert str(r.q.qname) == "W101.Lab.TEST."
    assert str(r.rr[0].rname) == "W101.Lab.TEST."


def test_nxdomain_has_the_soa_with_the_negative_ttl(zone: Zone) -> None:
    r = ask(zone, f"nope.{DOMAIN}")
    assert r.header.rcode == RCODE.NXDOMAIN and r.header.aa == 1
    assert r.rr == [] and len(r.auth) == 1
    soa = r.auth[0]
    assert soa.rtype == QTYPE.SOA and str(soa.rname) == f"{DOMAIN}."
    assert soa.ttl == NEGATIVE_TTL and soa.rdata.times[0] == SERIAL
    r = ask(zone, "99.0.18.198.in-addr.arpa", "PTR")
    assert r.header.rcode == RCODE.NXDOMAIN
    assert str(r.auth[0].rname) == "0.18.198.in-addr.arpa."


@pytest.mark.parametrize("name, qtype", [
    (f"w101.{DOMAIN}", "MX"),  # the name exists with other data
    (f"w101.{DOMAIN}", "AAAA"),
    (f"inside.{DOMAIN}", "A"),  # an empty non-terminal: w101.inside exists below it
    (DOMAIN, "A"),
])
def test_nodata_is_noerror_with_the_soa(zone: Zone, name: str, qtype: str) -> None:
    r = ask(zone, name, qtype)
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1
    assert r.rr == [] and [a.rtype for a in r.auth] == [QTYPE.SOA]


def test_ns_query_carries_glue(zone: Zone) -> None:
    r = ask(zone, DOMAIN, "NS")
    assert answers(r) == [f"m1.{DOMAIN}.", f"m2.{DOMAIN}."]
    assert sorted(str(a.rdata) for a in r.ar) == ["198.18.0.1", "198.18.0.2"]


def test_soa_and_any_at_the_apex(zone: Zone) -> None:
    r = ask(zone, "1.18.198.in-addr.arpa", "SOA")
    assert r.rr[0].rdata.times[0] == SERIAL
    types = sorted(QTYPE[rr.rtype] for rr in ask(zone, DOMAIN, "ANY").rr)
    assert types == ["NS", "NS", "SOA"]


def test_outside_the_zones_is_refused_without_aa(zone: Zone) -> None:
    for name in ("example.org", "lab.test.example.org", "5.5.18.198.in-addr.arpa"):
        r = ask(zone, name)
        assert r.header.rcode == RCODE.REFUSED and r.header.aa == 0, name
        assert r.rr == [] and r.auth == []


def test_outside_the_zones_is_forwarded_when_forwarding_is_on() -> None:
    z = Zone(inventory(1), 1, forwarding=True)
    assert z.resolve(query("example.org")) is None
    reply = z.resolve(query(f"w101.{DOMAIN}"))
    assert reply is not None and reply.header.ra == 1 and reply.header.aa == 1


def test_zone_transfers_and_other_classes_are_refused(zone: Zone) -> None:
    assert ask(zone, DOMAIN, "AXFR").header.rcode == RCODE.REFUSED
    q = query(f"w101.{DOMAIN}")
    q.q.qclass = 3  # CHAOS
    reply = zone.resolve(q)
    assert reply is not None and reply.header.rcode == RCODE.REFUSED


@pytest.mark.parametrize("opcode", [1, 2, 4, 5])  # IQUERY, STATUS, NOTIFY, UPDATE
def test_other_opcodes_are_not_implemented(zone: Zone, opcode: int) -> None:
    q = query(f"w101.{DOMAIN}")
    q.header.opcode = opcode
    reply = zone.resolve(q)
    assert reply is not None
    assert reply.header.rcode == RCODE.NOTIMP and reply.header.opcode == opcode
    assert reply.rr == []


@pytest.mark.parametrize("count", [0, 2])
def test_not_exactly_one_question_is_formerr(zone: Zone, count: int) -> None:
    q = query(f"w101.{DOMAIN}")
    q.questions = q.questions * count
    reply = zone.resolve(q)
    assert reply is not None and reply.header.rcode == RCODE.FORMERR and reply.rr == []


def test_edns_is_echoed_with_our_size_and_the_do_bit(zone: Zone) -> None:
    r = ask(zone, f"w101.{DOMAIN}", edns=4096, do=True)
    opts = [a for a in r.ar if a.rtype == QTYPE.OPT]
    assert len(opts) == 1
    assert opts[0].rclass == 1232 and opts[0].ttl & 0x8000  # DO copied (RFC 3225)
    plain = ask(zone, f"w101.{DOMAIN}")
    assert [a for a in plain.ar if a.rtype == QTYPE.OPT] == []


def test_edns_version_1_is_badvers_and_two_opts_formerr(zone: Zone) -> None:
    q = query(f"w101.{DOMAIN}")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    r = zone.resolve(q)
    assert r is not None and r.rr == []
    opt = next(a for a in r.ar if a.rtype == QTYPE.OPT)
    assert (opt.ttl >> 24) << 4 | r.header.rcode == 16  # BADVERS, RFC 6891 6.1.3
    q = query(f"w101.{DOMAIN}", edns=1232)
    q.add_ar(EDNS0(udp_len=1232))
    r = zone.resolve(q)
    assert r is not None and r.header.rcode == RCODE.FORMERR


def test_lookup_for_the_cli_refuses_foreign_names_even_when_forwarding() -> None:
    z = Zone(inventory(1), 1, forwarding=True)
    assert z.lookup("example.org").header.rcode == RCODE.REFUSED


# -- the wire ----------------------------------------------------------------


def handle(r: Responder, q: DNSRecord | bytes, udp: bool = True) -> tuple[str, DNSRecord | None]:
    out = r.handle(q if isinstance(q, bytes) else bytes(q.pack()), udp)
    return out.kind, DNSRecord.parse(out.reply) if out.reply else None


def test_a_large_rrset_is_truncated_over_udp_and_whole_over_tcp(big: Responder) -> None:
    kind, r = handle(big, query(f"web.{DOMAIN}"))
    assert kind == ANSWER and r is not None
    assert r.header.tc == 1 and r.rr == [] and str(r.q.qname) == f"web.{DOMAIN}."
    kind, r = handle(big, query(f"web.{DOMAIN}", edns=4096))
    assert r is not None and r.header.tc == 1
    assert [a.rtype for a in r.ar] == [QTYPE.OPT]  # the OPT stays, RFC 6891 section 7
    kind, r = handle(big, query(f"web.{DOMAIN}"), udp=False)
    assert r is not None and r.header.tc == 0 and len(r.rr) == 120


def test_the_udp_limit_follows_the_clients_edns_size() -> None:
    resp = Responder(Zone(inventory(40), SERIAL))  # 40 A records: ~700 bytes
    _, r = handle(resp, query(f"web.{DOMAIN}"))
    assert r is not None and r.header.tc == 1  # no EDNS: 512
    _, r = handle(resp, query(f"web.{DOMAIN}", edns=1232))
    assert r is not None and r.header.tc == 0 and len(r.rr) == 40
    _, r = handle(resp, query(f"web.{DOMAIN}", edns=600))
    assert r is not None and r.header.tc == 1


def test_cached_answers_carry_each_requests_id(big: Responder) -> None:
    for ident in (1, 2, 65535):
        q = query(f"w101.{DOMAIN}", ident=ident, edns=1232)
        _, r = handle(big, q)
        assert r is not None and r.header.id == ident and answers(r) == ["198.18.1.1"]
    assert bytes(q.pack())[2:] in big.udp_hits


def test_a_new_responder_is_warmed_with_the_old_ones_questions() -> None:
    old = Responder(Zone(inventory(3), 1))
    for ident, name in ((1, f"db-read.{DOMAIN}"), (2, f"W101.{DOMAIN}"), (3, f"gone.{DOMAIN}")):
        old.handle(bytes(query(name, ident=ident, edns=1232).pack()))
    old.handle(bytes(query(f"web.{DOMAIN}").pack()), udp=False)
    new = Responder(Zone(inventory(3, db_ip="198.18.3.31"), 2))
    assert new.warm(old) == 4
    assert set(new.udp_hits) == set(old.udp_hits) and set(new.tcp_hits) == set(old.tcp_hits)
    _, r = handle(new, query(f"db-read.{DOMAIN}", ident=9, edns=1232))
    assert r is not None and answers(r) == ["198.18.3.31"] and r.header.id == 9


def test_nothing_is_sent_for_short_oversized_or_response_packets(big: Responder) -> None:
    assert big.handle(b"\x01\x02\x03").kind == DROP_SHORT
    q = bytes(query(f"w101.{DOMAIN}").pack())
    assert big.handle(q + b"\0" * MAX_QUERY).kind == DROP_OVERSIZED
    resp = big.handle(q).reply
    assert resp is not None
    out = big.handle(resp)
    assert out.kind == DROP_RESPONSE and out.reply is None


@pytest.mark.parametrize("data", [
    raw_header(ident=7) + b"\x05abc",  # question cut short
    raw_header(ident=7) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer to itself
    raw_header(ident=7) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # label of 64
    raw_header(ident=7) + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01",  # name > 255
])
def test_malformed_queries_get_formerr_with_their_id(big: Responder, data: bytes) -> None:
    out = big.handle(data)
    assert out.kind == MALFORMED and out.reply is not None
    ident, flags, qd, an, ns, ar = struct.unpack("!6H", out.reply)
    assert ident == 7 and flags & 0x8000 and flags & 0xF == RCODE.FORMERR
    assert (qd, an, ns, ar) == (0, 0, 0, 0)


def test_a_malformed_update_gets_notimp(big: Responder) -> None:
    out = big.handle(raw_header(ident=9, flags=5 << 11) + b"\x05abc")
    assert out.reply is not None and out.reply[3] & 0xF == RCODE.NOTIMP


def test_forward_outcome_and_servfail() -> None:
    resp = Responder(Zone(inventory(1), 1, forwarding=True))
    q = query("example.org", ident=77)
    assert resp.handle(bytes(q.pack())).kind == FORWARD
    r = DNSRecord.parse(servfail(bytes(q.pack())))
    assert r.header.id == 77 and r.header.rcode == RCODE.SERVFAIL and r.header.qr == 1
    assert str(r.q.qname) == "example.org."


def test_matches_checks_id_qr_and_question() -> None:
    q = bytes(query("example.org", ident=5).pack())
    good = bytes(DNSRecord.parse(q).reply().pack())
    assert matches(q, good)
    assert not matches(q, b"\x00\x06" + good[2:])  # other ID
    assert not matches(q, q)  # not a response
    other = query("example.net", ident=5)
    assert not matches(q, bytes(other.reply().pack()))
    upper = bytes(query("EXAMPLE.org", ident=5).reply().pack())
    assert matches(q, upper)


# -- fuzz: the responder never raises, and what it sends parses ---------------


def _check(r: Responder, data: bytes) -> None:
    out = r.handle(data, True)
    assert out.kind != ERROR, data  # an internal error: the responder missed a bad input
    if out.reply is None:
        return
    reply = DNSRecord.parse(out.reply)
    assert reply.header.qr == 1
    assert out.reply[:2] == data[:2]
    assert len(out.reply) <= max(512, 1232)


VALID = [bytes(query(n, t, edns=e).pack()) for n, t, e in [
    (f"w101.{DOMAIN}", "A", None), (f"web.{DOMAIN}", "A", 1232),
    ("1.1.18.198.in-addr.arpa", "PTR", None), (DOMAIN, "NS", 4096), ("example.org", "A", None),
]]


_FUZZ = Responder(Zone(inventory(30), 1))
_FUZZ_FWD = Responder(Zone(inventory(30), 1, forwarding=True))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    _check(_FUZZ, data)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 0xFFFF), st.integers(0, 0x7FFF), st.tuples(*[st.integers(0, 3)] * 4),
       st.binary(max_size=200))
def test_fuzz_query_headers_with_random_bodies(ident: int, flags: int,
                                               counts: tuple[int, int, int, int],
                                               body: bytes) -> None:
    _check(_FUZZ, raw_header(ident, flags, *counts) + body)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(1, 100), max_size=8), st.integers(0, 0xFFFF), st.booleans())
def test_fuzz_question_names(lengths: list[int], qtype: int, edns: bool) -> None:
    name = b"".join(bytes([n]) + b"aW-0"[n % 4:n % 4 + 1] * n for n in lengths) + b"\0"
    opt = b"\0\0\x29\x04\xd0\0\0\0\0\0\0" if edns else b""
    data = raw_header(3, 0x0100, 1, 0, 0, int(edns)) + name + struct.pack("!HH", qtype, 1) + opt
    for resp in (_FUZZ, _FUZZ_FWD):
        _check(resp, data)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                        max_size=6), st.integers(0, 60))
def test_fuzz_mutated_queries(base: bytes, flips: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    blob = bytes(data[: len(data) - cut] if cut < len(data) else data)
    for resp in (_FUZZ, _FUZZ_FWD):
        _check(resp, blob)


# -- the CLI -------------------------------------------------------------------


def test_cli_query_answers_from_the_inventory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "cluster.yaml"
    path.write_text(inventory_text(3))
    run = CliRunner().invoke
    res = run(cli, ["dns", "query", "-i", str(path), f"W102.{DOMAIN}"])
    assert res.exit_code == 0, res.output
    assert "status: NOERROR" in res.output and "198.18.1.2" in res.output
    assert "flags: qr aa" in res.output
    res = run(cli, ["dns", "query", "-i", str(path), "198.18.0.11"])
    assert res.exit_code == 0 and f"lvs1.{DOMAIN}." in res.output
    res = run(cli, ["dns", "query", "-i", str(path), f"nope.{DOMAIN}", "a"])
    assert res.exit_code == 1 and "NXDOMAIN" in res.output and "SOA" in res.output
    res = run(cli, ["dns", "query", "-i", str(path), "x", "BOGUS"])
    assert res.exit_code == 2
    res = run(cli, ["dns", "zone", "-i", str(path)])
    assert res.exit_code == 0 and f"masters.{DOMAIN}.\t30\tIN\tA\t198.18.0.2" in res.output


def test_cli_query_takes_an_ipv6_address_as_its_ptr() -> None:
    fixture = FIXTURES / "dns-ipv6.yaml"
    res = CliRunner().invoke(cli, ["dns", "query", "-i", str(fixture), "2001:db8:18::11"])
    assert res.exit_code == 0, res.output
    assert "8.b.d.0.1.0.0.2.ip6.arpa." in res.output
    assert re.search(r"\bPTR\s+lb1\.six\.example\.", res.output)
