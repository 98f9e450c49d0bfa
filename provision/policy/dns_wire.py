"""DNS on the wire: request bytes -> reply bytes, for one zone. Pure, no sockets.

``Responder.handle`` is what the UDP and TCP loops call: it drops what must not be
answered (too short, too long, responses), answers malformed queries with FORMERR,
asks the ``Zone`` for everything else, applies the EDNS0 size limit (TC=1 over UDP
when the reply does not fit, RFC 2181 section 9 / RFC 6891 section 7) and tells the
caller when a query is to be forwarded.

Answers are cached per exact request (minus its ID): the reply to the same bytes is
always the same for one zone, so a hit costs a dict lookup and the ID is patched in.
The cache belongs to the zone's responder; a reload makes a new responder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dnslib import QTYPE, RCODE, DNSHeader, DNSRecord

from .dns import OPCODE_QUERY, Zone, udp_limit

HEADER_LEN = 12  # RFC 1035 section 4.1.1
MAX_QUERY = 1024  # a query is a header, one question and an OPT: anything longer is abuse
TCP_MAX = 65535  # RFC 1035 section 4.2.2: two-byte length prefix
MAX_LABEL = 63  # RFC 1035 section 2.3.4
MAX_NAME = 255
QR_BIT = 0x8000
CACHE_ENTRIES = 20000

# Outcome kinds, used as metric labels and log words.
ANSWER = "answer"
FORWARD = "forward"
DROP_SHORT = "short"
DROP_OVERSIZED = "oversized"
DROP_RESPONSE = "response"
MALFORMED = "malformed"
ERROR = "error"


@dataclass(frozen=True)
class Outcome:
    """What became of one DNS request: its kind, the reply and its rcode."""

    kind: str
    reply: bytes | None = None  # bytes to send back; None: send nothing (yet)
    rcode: int = 0
    truncated: bool = False


class Responder:
    """Request bytes -> Outcome for one zone. Thread-safe: the cache is a plain dict."""

    def __init__(self, zone: Zone, cache_entries: int = CACHE_ENTRIES):
        self.zone = zone
        self.cache_entries = cache_entries
        # request minus ID -> reply minus ID; the UDP loop looks here before calling handle()
        self.udp_hits: dict[bytes, bytes] = {}
        self.tcp_hits: dict[bytes, bytes] = {}

    def handle(self, data: bytes, udp: bool = True) -> Outcome:
        cache = self.udp_hits if udp else self.tcp_hits
        hit = cache.get(data[2:])
        if hit is not None:
            return Outcome(ANSWER, data[:2] + hit, hit[1] & 0xF, bool(hit[0] & 0x02))
        out = self._handle(data, udp)
        if out.kind == ANSWER and out.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN) and out.reply:
            if len(cache) >= self.cache_entries:
                cache.clear()
            cache[data[2:]] = out.reply[2:]
        return out

    def warm(self, previous: Responder) -> int:
        """Answer the questions ``previous`` has cached, with this zone, into this cache.

        A reload then starts with a warm cache: a busy server does not fall to the
        slow path for every name at once. Returns how many were answered.
        """
        n = 0
        for udp, cache in ((True, previous.udp_hits), (False, previous.tcp_hits)):
            for key in list(cache):  # a copy: the old responder is still serving
                self.handle(b"\0\0" + key, udp)
                n += 1
        return n

    def _handle(self, data: bytes, udp: bool) -> Outcome:
        if len(data) < HEADER_LEN:
            return Outcome(DROP_SHORT)
        if len(data) > MAX_QUERY:
            return Outcome(DROP_OVERSIZED)
        ident, flags = struct.unpack_from("!HH", data)
        if flags & QR_BIT:
            return Outcome(DROP_RESPONSE)  # never answer answers: no loops, no reflection
        try:
            request = DNSRecord.parse(data)
        except Exception:  # dnslib raises DNSError, but also others on hostile input
            return _error(ident, flags, RCODE.FORMERR, MALFORMED)
        if not _names_ok(request):
            return _error(ident, flags, RCODE.FORMERR, MALFORMED)
        reply = self.zone.resolve(request)
        if reply is None:
            return Outcome(FORWARD)
        try:
            return self._pack(request, reply, udp)
        except Exception:
            return _error(ident, flags, RCODE.SERVFAIL, ERROR)

    def _pack(self, request: DNSRecord, reply: DNSRecord, udp: bool) -> Outcome:
        wire = bytes(reply.pack())
        opt = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        limit = udp_limit(opt, self.zone.max_udp) if udp else TCP_MAX
        if len(wire) <= limit:
            return Outcome(ANSWER, wire, reply.header.rcode)
        short = DNSRecord(DNSHeader(id=reply.header.id, bitmap=reply.header.bitmap, tc=1),
                          questions=list(reply.questions))
        short.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]  # RFC 6891 section 7
        return Outcome(ANSWER, bytes(short.pack()), reply.header.rcode, truncated=True)


def _names_ok(request: DNSRecord) -> bool:
    """dnslib reads labels of 64..191 bytes and names over 255; we refuse to echo them."""
    for q in request.questions:
        labels = q.qname.label
        if any(len(x) > MAX_LABEL for x in labels) or sum(len(x) + 1 for x in labels) >= MAX_NAME:
            return False
    return True


def _error(ident: int, flags: int, rcode: int, kind: str) -> Outcome:
    """A header-only error reply: same ID, opcode and RD, QR set, no sections."""
    opcode = (flags >> 11) & 0xF
    if opcode != OPCODE_QUERY and kind == MALFORMED:
        rcode = RCODE.NOTIMP
    reply_flags = QR_BIT | (flags & 0x7900) | rcode  # keep opcode and RD
    return Outcome(kind, struct.pack("!HHHHHH", ident, reply_flags, 0, 0, 0, 0), rcode)


def servfail(query: bytes) -> bytes:
    """SERVFAIL for a query we failed to forward: its ID, flags and question, RA set."""
    request = DNSRecord.parse(query)
    h = request.header
    reply = DNSRecord(DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, ra=1,
                                rcode=RCODE.SERVFAIL), q=request.q)
    return bytes(reply.pack())


def matches(query: bytes, response: bytes) -> bool:
    """Is this upstream response the answer to this query (same ID, QR set, same question)?"""
    if len(response) < HEADER_LEN or response[:2] != query[:2]:
        return False
    if not response[2] & 0x80:
        return False
    qend = _question_end(query)
    return qend is not None and response[4:6] == query[4:6] and \
        response[HEADER_LEN:qend].lower() == query[HEADER_LEN:qend].lower()


def _question_end(data: bytes) -> int | None:
    """Offset just after the first question (uncompressed name + type + class)."""
    i = HEADER_LEN
    while i < len(data):
        n = data[i]
        if n == 0:
            end = i + 1 + 4
            return end if end <= len(data) else None
        if n > MAX_LABEL:
            return None
        i += 1 + n
    return None
