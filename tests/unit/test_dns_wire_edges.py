"""The DNS wire responder's edges, provision/policy/dns_wire.py (pure unit): the
answer cache, the size limits on both sides, error headers bit by bit, SERVFAIL
on a reply that cannot be packed, and upstream response matching."""

from __future__ import annotations

import struct

import pytest
from dnslib import RCODE, DNSRecord

from provision.policy.dns import Zone
from provision.policy.dns_wire import (
    ANSWER,
    DROP_OVERSIZED,
    DROP_SHORT,
    ERROR,
    HEADER_LEN,
    MALFORMED,
    MAX_QUERY,
    Responder,
    matches,
    servfail,
)
from tests.support.dns_helpers import DOMAIN, inventory, query, raw_header

ZONE = Zone(inventory(3), 1)


class Counting:
    """A zone that counts the questions it is asked."""

    def __init__(self, zone: Zone):
        self.zone, self.max_udp, self.asked = zone, zone.max_udp, 0

    def resolve(self, request: DNSRecord) -> DNSRecord | None:
        self.asked += 1
        return self.zone.resolve(request)


class Unpackable:
    max_udp = 1232

    def resolve(self, request: DNSRecord) -> object:
        class Reply:
            def pack(self) -> bytes:
                raise ValueError("cannot pack")
        return Reply()


def packed(name: str, qtype: str = "A", ident: int = 4242, **kw: object) -> bytes:
    return bytes(query(name, qtype, ident=ident, **kw).pack())  # type: ignore[arg-type]


def name_wire(*lengths: int) -> bytes:
    return b"".join(bytes([n]) + b"a" * n for n in lengths) + b"\x00"


def test_a_repeated_question_is_answered_from_the_cache() -> None:
    zone = Counting(ZONE)
    r = Responder(zone)  # type: ignore[arg-type]
    first = r.handle(packed(f"nope.{DOMAIN}", ident=1))
    again = r.handle(packed(f"nope.{DOMAIN}", ident=2))
    assert zone.asked == 1
    assert (first.kind, first.rcode, first.truncated) == (ANSWER, RCODE.NXDOMAIN, False)
    assert (again.kind, again.rcode, again.truncated) == (ANSWER, RCODE.NXDOMAIN, False)
    assert again.reply is not None and first.reply is not None
    assert again.reply[:2] == b"\x00\x02" and again.reply[2:] == first.reply[2:]


def test_a_truncated_answer_stays_truncated_from_the_cache() -> None:
    r = Responder(Zone(inventory(120), 1))
    first = r.handle(packed(f"web.{DOMAIN}", ident=1))
    again = r.handle(packed(f"web.{DOMAIN}", ident=2))
    assert first.truncated is True and again.truncated is True
    assert first.rcode == again.rcode == RCODE.NOERROR
    assert len(r.udp_hits) == 1
    assert first.reply is not None
    h = DNSRecord.parse(first.reply).header
    assert (h.id, h.qr, h.aa, h.rd, h.tc, h.opcode, h.rcode) == (1, 1, 1, 1, 1, 0, 0)


def test_only_positive_and_nxdomain_answers_are_cached() -> None:
    zone = Counting(ZONE)
    r = Responder(zone)  # type: ignore[arg-type]
    bad = raw_header(ident=9, qd=2) + name_wire(1) + b"\x00\x01\x00\x01"
    for _ in range(2):
        assert r.handle(packed("example.org")).rcode == RCODE.REFUSED
        assert r.handle(bad).kind == MALFORMED
    assert zone.asked == 2
    assert r.udp_hits == {}


def test_the_cache_is_cleared_when_full() -> None:
    r = Responder(ZONE, cache_entries=2)
    for i in range(3):
        r.handle(packed(f"m{i}.{DOMAIN}"))
    assert len(r.udp_hits) == 1


def test_a_bare_header_is_parsed_not_dropped() -> None:
    out = Responder(ZONE).handle(raw_header(qd=0))
    assert out.kind == ANSWER and out.rcode == RCODE.FORMERR


def test_a_query_of_exactly_max_query_bytes_is_read() -> None:
    data = packed(f"m1.{DOMAIN}")
    data += b"\x00" * (MAX_QUERY - len(data))
    assert Responder(ZONE).handle(data).kind != DROP_OVERSIZED
    assert Responder(ZONE).handle(data + b"\x00").kind == DROP_OVERSIZED
    assert Responder(ZONE).handle(b"\x00" * (HEADER_LEN - 1)).kind == DROP_SHORT


def test_a_reply_that_cannot_be_packed_is_servfail() -> None:
    r = Responder(Unpackable())  # type: ignore[arg-type]
    out = r.handle(raw_header(ident=7, flags=0x0101) + name_wire(1) + b"\x00\x01\x00\x01")
    assert (out.kind, out.rcode) == (ERROR, RCODE.SERVFAIL)
    assert out.reply == struct.pack("!HHHHHH", 7, 0x8102, 0, 0, 0, 0)


def test_error_headers_keep_opcode_and_rd_only() -> None:
    r = Responder(ZONE)
    out = r.handle(raw_header(ident=5, flags=0x0100, qd=2) + name_wire(1))
    assert (out.kind, out.rcode) == (MALFORMED, RCODE.FORMERR)
    assert out.reply == struct.pack("!HHHHHH", 5, 0x8101, 0, 0, 0, 0)
    out = r.handle(raw_header(ident=6, flags=0x2801, qd=2) + name_wire(1))
    assert out.reply == struct.pack("!HHHHHH", 6, 0xA804, 0, 0, 0, 0)
    assert out.rcode == RCODE.NOTIMP


def test_a_malformed_inverse_query_is_notimp() -> None:
    out = Responder(ZONE).handle(raw_header(ident=3, flags=0x0800, qd=2) + name_wire(1))
    assert out.rcode == RCODE.NOTIMP


def test_udp_replies_up_to_the_limit_are_whole() -> None:
    zone = Zone(inventory(120), 1, max_udp=65535)
    size = len(Responder(zone).handle(packed(f"web.{DOMAIN}", edns=4096), udp=False).reply
               or b"")
    assert size > 512
    whole = Responder(zone).handle(packed(f"web.{DOMAIN}", edns=size))
    assert whole.truncated is False and whole.reply is not None and len(whole.reply) == size
    short = Responder(zone).handle(packed(f"web.{DOMAIN}", edns=size - 1))
    assert short.truncated is True


@pytest.mark.parametrize("lengths, ok", [
    ((63, 5), True), ((64,), False),
    ((63, 63, 63, 61), True), ((63, 63, 63, 62), False),
])
def test_label_and_name_length_limits(lengths: tuple[int, ...], ok: bool) -> None:
    data = raw_header(ident=1) + name_wire(*lengths) + b"\x00\x01\x00\x01"
    out = Responder(ZONE).handle(data)
    assert (out.kind != MALFORMED) == ok, out


def test_servfail_keeps_id_opcode_rd_and_question() -> None:
    q = packed(f"m1.{DOMAIN}", ident=77, rd=True)
    r = servfail(q)
    assert r[:4] == b"\x00\x4d\x81\x82"
    assert DNSRecord.parse(r).q == DNSRecord.parse(q).q
    q = packed(f"m1.{DOMAIN}", ident=77, rd=False)
    assert servfail(q)[2:4] == b"\x80\x82"
    iq = raw_header(ident=1, flags=0x0900) + name_wire(1) + b"\x00\x01\x00\x01"
    assert servfail(iq)[2:4] == b"\x89\x82"


def response_to(q: bytes, flags: int = 0x8180) -> bytes:
    return q[:2] + struct.pack("!H", flags) + q[4:]


def test_matches_needs_qr_not_ra() -> None:
    q = packed(f"m1.{DOMAIN}")
    assert matches(q, response_to(q, 0x8100))
    assert not matches(q, response_to(q, 0x0180))


def test_matches_compares_the_whole_question() -> None:
    q = packed(f"m1.{DOMAIN}")
    other_class = response_to(q)[:-2] + b"\x00\x03"
    assert not matches(q, other_class)
    assert matches(q, response_to(q)[:-2] + b"\x00\x01")


def test_matches_needs_a_complete_question() -> None:
    cut = raw_header(ident=1) + b"\x03abc"
    assert not matches(cut, response_to(cut))
    no_type = raw_header(ident=1) + name_wire(3)
    assert not matches(no_type, response_to(no_type))


def test_matches_reads_a_63_byte_label() -> None:
    q = raw_header(ident=1) + name_wire(63) + b"\x00\x01\x00\x01"
    assert matches(q, response_to(q))
    bad = raw_header(ident=1) + name_wire(64) + b"\x00\x01\x00\x01"
    assert not matches(bad, response_to(bad))
