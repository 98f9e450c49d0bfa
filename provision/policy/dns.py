"""DNS policy: the cluster's zones, built from the inventory, and answers to questions.

Pure: no sockets, no clocks, no logging. ``records(inv)`` lists what the cluster
publishes; ``Zone`` holds it indexed for lookups and answers a parsed dnslib
request with ``resolve``. The wire-level handling (bytes in, bytes out, EDNS0
sizes, truncation, caching) is in ``provision.policy.dns_wire``.

This is the one DNS model: the server answers from it, and ``dsas dns zone`` and
``dsas render --what zone`` both print it (``render.render_zone``). For cluster
domain D it holds:

- SOA and NS at D and at every reverse zone; NS names are the masters
  (``m01.D``); with no master host in the inventory, ``ns.D`` -> master_address.
- every host address: ``w101.D`` on the host's first network, ``w101.NET.D`` on
  every network (A and AAAA), and the PTR of each address to the first of those;
- ``ROLE.D`` and ``masters.D`` (A of each member), ``SERVICE.D`` (A of the VIP)
  and one PTR per VIP (the first service named on it).
- TTLs: host names and PTRs ``DEFAULT_TTL``; role, service and ``masters`` names
  ``DYNAMIC_TTL`` (they change when a host is assigned to another role).

Reverse zones are on octet boundaries (RFC 1035 in-addr.arpa). A network whose
prefix is not a multiple of 8 is served as the octet-boundary zones it covers
exactly when its prefix is 8..24 (a /22 becomes its four /24 zones, so we never
claim addresses outside the network), and as the covering /24 when it is longer
than /24 (a /26 is served inside its /24; RFC 2317 delegation is the parent's
business). A prefix shorter than /8 is split into its /8 zones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSHeader, DNSLabel, DNSRecord

from ..inventory.model import Inventory, IPv4Address, IPv4Network, IPv6Address, IPv6Network

DEFAULT_TTL = 300  # host names and PTRs: change only when the inventory does
DYNAMIC_TTL = 30  # role and service names: change on every `dsas assign`
NEGATIVE_TTL = 60  # SOA minimum: how long NXDOMAIN/NODATA are cached (RFC 2308)
SOA_TIMERS = (3600, 600, 86400)  # refresh, retry, expire (RFC 1912 section 2.2)
SERVER_UDP_SIZE = 1232  # our EDNS0 UDP payload size (DNS flag day 2020)

CLASS_IN = 1
CLASS_ANY = 255  # RFC 1035 section 3.2.5
OPCODE_QUERY = 0
EDNS_DO = 1 << 15  # RFC 3225: DNSSEC OK, copied into the reply
EDNS_BADVERS = 16  # RFC 6891 section 6.1.3, an extended RCODE
TYPE_ANY = QTYPE.ANY
ZONE_TRANSFER = (QTYPE.AXFR, QTYPE.IXFR)

Key = tuple[bytes, ...]  # a name as lower-cased labels, most specific first


@dataclass(frozen=True)
class Record:
    """One resource record, zone-file style: ``name ttl IN rtype rdata``."""

    name: str  # absolute, lower case, without the trailing dot
    rtype: str  # A | AAAA | PTR | NS | SOA
    rdata: str  # zone-file form; names end with a dot
    ttl: int

    def line(self) -> str:
        return f"{self.name}.\t{self.ttl}\tIN\t{self.rtype}\t{self.rdata}"


def key_of(name: str | DNSLabel) -> Key:
    label = name if isinstance(name, DNSLabel) else DNSLabel(name)
    return tuple(part.lower() for part in label.label)


# -- the records ---------------------------------------------------------------


def reverse_zones(networks: Iterable[IPv4Network]) -> list[str]:
    """The in-addr.arpa zones for these networks, on octet boundaries, deduplicated."""
    zones: dict[str, None] = {}
    for net in networks:
        for sub in _octet_blocks(net):
            octets = str(sub.network_address).split(".")[: sub.prefixlen // 8]
            zones[".".join(reversed(octets)) + ".in-addr.arpa"] = None
    return list(zones)


def reverse_zones6(prefixes: Iterable[IPv6Network]) -> list[str]:
    """The ip6.arpa zones for these prefixes (RFC 3596 2.5), on nibble boundaries: a
    prefix that is not a multiple of 4 becomes the (at most 8) nibble zones it covers."""
    zones: dict[str, None] = {}
    for net in prefixes:
        boundary = max(4, -(-net.prefixlen // 4) * 4)
        for sub in net.subnets(new_prefix=boundary):
            nibbles = sub.network_address.exploded.replace(":", "")[: boundary // 4]
            zones[".".join(reversed(nibbles)) + ".ip6.arpa"] = None
    return list(zones)


def _octet_blocks(net: IPv4Network) -> list[IPv4Network]:
    if net.prefixlen > 24:
        return [net.supernet(new_prefix=24)]
    boundary = max(8, -(-net.prefixlen // 8) * 8)  # round up to 8, 16 or 24
    return list(net.subnets(new_prefix=boundary))


def ptr_name(address: IPv4Address | IPv6Address) -> str:
    """The PTR owner of an address: in-addr.arpa (RFC 1035) or ip6.arpa (RFC 3596)."""
    return address.reverse_pointer


def host_fqdn(inv: Inventory, host: str, network: str | None = None) -> str:
    """w101.<domain> on a host's first network, w101.<network>.<domain> on others."""
    d = inv.cluster.domain
    return f"{host}.{network}.{d}" if network else f"{host}.{d}"


def name_servers(inv: Inventory) -> list[tuple[str, IPv4Address]]:
    """(name, address) of the zone's name servers: the masters, or ns.<domain>."""
    domain = inv.cluster.domain
    found = [(f"{h.name}.{domain}", h.primary_interface.address) for h in inv.masters]
    return found or [(f"ns.{domain}", inv.cluster.master_address)]


def records(
    inv: Inventory, serial: int = 1, ttl: int = DEFAULT_TTL, dynamic_ttl: int = DYNAMIC_TTL
) -> list[Record]:
    """Every record of the cluster's zones: SOA and NS of each zone, then the names."""
    domain = inv.cluster.domain
    servers = name_servers(inv)
    out: list[Record] = []
    v6 = [n.ipv6 for n in inv.networks.values() if n.ipv6 is not None]
    for apex in [domain, *reverse_zones(n.cidr for n in inv.networks.values()),
                 *reverse_zones6(v6)]:
        out += _apex(apex, servers, domain, serial, ttl)
    if servers[0][0] == f"ns.{domain}":
        out.append(Record(f"ns.{domain}", "A", str(servers[0][1]), ttl))
    seen: set[Record] = set()
    for r in [*_host_records(inv, ttl), *_group_records(inv, ttl, dynamic_ttl)]:
        if r not in seen:  # a name on two networks of one host, a VIP of two services
            seen.add(r)
            out.append(r)
    return out


def _host_records(inv: Inventory, ttl: int) -> list[Record]:
    """Each address of each host: its names (A, AAAA) and its PTR."""
    out: list[Record] = []
    for h in inv.hosts.values():
        for i, itf in enumerate(h.interfaces):
            qualified = host_fqdn(inv, h.name, itf.network.name)
            fqdn = host_fqdn(inv, h.name) if i == 0 else qualified
            names = [fqdn, qualified] if i == 0 else [fqdn]  # w101.inside works too
            for rtype, address in (("A", itf.address), ("AAAA", itf.address6)):
                if address is None:
                    continue
                out += [Record(n, rtype, str(address), ttl) for n in names]
                out.append(Record(ptr_name(address), "PTR", fqdn + ".", ttl))
    return out


def _group_records(inv: Inventory, ttl: int, dynamic_ttl: int) -> list[Record]:
    """Role, ``masters`` and service names (dynamic TTL) and one PTR per VIP."""
    d = inv.cluster.domain
    out = [Record(f"{role}.{d}", "A", str(h.primary_interface.address), dynamic_ttl)
           for role in inv.roles for h in inv.hosts_of_role(role)]
    out += [Record(f"masters.{d}", "A", str(m.primary_interface.address), dynamic_ttl)
            for m in inv.masters]
    vip_ptr: set[str] = set()
    for vs in inv.virtual_services.values():
        out.append(Record(f"{vs.name}.{d}", "A", str(vs.vip), dynamic_ttl))
        if str(vs.vip) not in vip_ptr:  # one PTR per VIP: the first service named on it
            vip_ptr.add(str(vs.vip))
            out.append(Record(ptr_name(vs.vip), "PTR", f"{vs.name}.{d}.", ttl))
    return out


def _apex(apex: str, servers: list[tuple[str, IPv4Address]], domain: str, serial: int,
          ttl: int) -> list[Record]:
    refresh, retry, expire = SOA_TIMERS
    soa = (f"{servers[0][0]}. hostmaster.{domain}. {serial} {refresh} {retry} {expire} "
           f"{NEGATIVE_TTL}")
    return [Record(apex, "SOA", soa, ttl), *(Record(apex, "NS", n + ".", ttl) for n, _ in servers)]


# -- the zone ------------------------------------------------------------------


@dataclass(frozen=True)
class _Apex:
    key: Key
    soa: RR
    ns: tuple[RR, ...]


class Zone:
    """The cluster's zones, indexed for answering. Immutable once built."""

    def __init__(self, inv: Inventory, serial: int, forwarding: bool = False,
                 max_udp: int = SERVER_UDP_SIZE):
        self.serial = serial
        self.forwarding = forwarding
        self.max_udp = max_udp
        self.records = tuple(records(inv, serial))
        self._rrsets: dict[Key, dict[int, list[RR]]] = {}
        self._names: set[Key] = set()  # owners and empty non-terminals
        for rec in self.records:
            rr = RR.fromZone(rec.line())[0]
            key = key_of(rec.name)
            self._rrsets.setdefault(key, {}).setdefault(rr.rtype, []).append(rr)
        apexes = [k for k, sets in self._rrsets.items() if QTYPE.SOA in sets]
        self._apexes = sorted(
            (_Apex(k, self._rrsets[k][QTYPE.SOA][0], tuple(self._rrsets[k][QTYPE.NS]))
             for k in apexes),
            key=lambda a: -len(a.key),
        )
        for key in self._rrsets:
            apex = self.apex_of(key)
            for i in range(len(key) - (len(apex.key) if apex else len(key)) + 1):
                self._names.add(key[i:])

    def apex_of(self, key: Key) -> _Apex | None:
        for apex in self._apexes:
            n = len(apex.key)
            if len(key) >= n and key[len(key) - n:] == apex.key:
                return apex
        return None

    def resolve(self, request: DNSRecord) -> DNSRecord | None:
        """The reply to a parsed request; None when it is not ours and should be forwarded.

        The request must be a query (QR=0); the wire layer drops responses before this.
        """
        reply = _skeleton(request, ra=self.forwarding)
        edns, bad = _edns(request)
        if bad is not None:
            return _with_edns(reply, edns, self.max_udp, bad)
        if request.header.opcode != OPCODE_QUERY:
            return _with_edns(reply, edns, self.max_udp, RCODE.NOTIMP)
        if len(request.questions) != 1:
            return _with_edns(reply, edns, self.max_udp, RCODE.FORMERR)
        q = request.questions[0]
        reply.add_question(q)
        if q.qclass not in (CLASS_IN, CLASS_ANY):
            return _with_edns(reply, edns, self.max_udp, RCODE.REFUSED)
        key = key_of(q.qname)
        apex = self.apex_of(key)
        if apex is None:
            if self.forwarding:
                return None
            return _with_edns(reply, edns, self.max_udp, RCODE.REFUSED)
        if q.qtype in ZONE_TRANSFER:
            return _with_edns(reply, edns, self.max_udp, RCODE.REFUSED)
        reply.header.aa = 1
        self._answer(reply, q.qname, q.qtype, key, apex)
        return _with_edns(reply, edns, self.max_udp, reply.header.rcode)

    def _answer(self, reply: DNSRecord, qname: DNSLabel, qtype: int, key: Key,
                apex: _Apex) -> None:
        if key not in self._names:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(_negative_soa(apex.soa))
            return
        sets = self._rrsets.get(key, {})
        chosen = list(sets.values()) if qtype == TYPE_ANY else [sets.get(qtype, [])]
        for rrset in chosen:
            for rr in rrset:
                reply.add_answer(RR(qname, rr.rtype, rr.rclass, rr.ttl, rr.rdata))
        if not reply.rr:
            reply.add_auth(_negative_soa(apex.soa))
        elif qtype == QTYPE.NS:
            for rr in sets[QTYPE.NS]:
                for glue in self._rrsets.get(key_of(rr.rdata.label), {}).get(QTYPE.A, []):
                    reply.add_ar(glue)

    def lookup(self, name: str, qtype: str = "A") -> DNSRecord:
        """Answer one question, as ``dsas dns query`` does; always a reply."""
        request = DNSRecord.question(name, qtype)
        request.header.id = 0
        reply = self.resolve(request)
        if reply is None:  # not ours, and forwarding is configured
            reply = _skeleton(request, ra=True)
            reply.add_question(request.questions[0])
            reply.header.rcode = RCODE.REFUSED
        return reply


def _skeleton(request: DNSRecord, ra: bool) -> DNSRecord:
    h = request.header
    header = DNSHeader(id=h.id, qr=1, opcode=h.opcode, rd=h.rd, cd=h.cd, ra=int(ra))
    return DNSRecord(header)


def _edns(request: DNSRecord) -> tuple[RR | None, int | None]:
    """The request's OPT record (or None) and an error rcode if it is unacceptable."""
    opts = [rr for rr in request.ar if rr.rtype == QTYPE.OPT]
    if len(opts) > 1:  # RFC 6891 section 6.1.1
        return None, RCODE.FORMERR
    if not opts:
        return None, None
    opt = opts[0]
    if (opt.ttl >> 16) & 0xFF != 0:
        return opt, EDNS_BADVERS
    return opt, None


def udp_limit(request_opt: RR | None, server_max: int) -> int:
    """How large a UDP reply may be: the client's EDNS0 size, at least 512, at most ours."""
    if request_opt is None:
        return 512  # RFC 1035 section 4.2.1
    return max(512, min(int(request_opt.rclass), server_max))


def _with_edns(reply: DNSRecord, opt: RR | None, server_max: int, rcode: int) -> DNSRecord:
    reply.header.rcode = rcode & 0xF
    if opt is not None:
        flags = "do" if opt.ttl & EDNS_DO else ""
        reply.add_ar(EDNS0(udp_len=server_max, ext_rcode=rcode >> 4, flags=flags))
    return reply


def _negative_soa(soa: RR) -> RR:
    """The SOA for a negative answer: TTL is min(SOA TTL, SOA minimum), RFC 2308 section 5."""
    return RR(soa.rname, QTYPE.SOA, soa.rclass, min(soa.ttl, soa.rdata.times[-1]), soa.rdata)

