"""DHCP leases: the in-memory table and the discovery pool (pure: no I/O).

``LeaseTable`` and ``Pool`` take no clock and do no I/O: callers pass ``now``. Every
change the table makes is also returned as a ``Change`` so the service can make it
durable: bound leases, releases and declines go to a ``LeaseStore`` (the state store's
``provision.state.leases.LeaseJournal``), and the service commits them (one fsync'd
transaction per batch) *before* it sends the ACKs that depend on them. Offers are never
written: RFC 2131 4.3.1 lets a server forget an offer, and a client that REQUESTs a
forgotten offer is NAKed or re-offered.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from typing import Protocol

OFFERED = "offered"
BOUND = "bound"
RELEASED = "released"
DECLINED = "declined"


@dataclass(slots=True)
class Lease:
    """One lease of the lease table."""

    ip: int
    mac: str
    network: str
    state: str
    expires: float
    hostname: str = ""

    @property
    def address(self) -> IPv4Address:
        return IPv4Address(self.ip)

    def live(self, now: float) -> bool:
        """Does this lease still keep the address from other clients?"""
        return self.state != RELEASED and self.expires > now


@dataclass(frozen=True, slots=True)
class LeasePut:
    """A lease change: write this lease."""

    lease: Lease  # a snapshot


@dataclass(frozen=True, slots=True)
class LeaseDel:
    """A lease change: delete the lease of this address."""

    ip: int


@dataclass(frozen=True, slots=True)
class Sighting:
    """An unknown machine asked for an address (recorded for `dsas discovered`)."""

    mac: str
    when: float
    arch: int | None
    vendor_class: str
    user_class: str
    uuid: str
    interface: str
    network: str


Change = LeasePut | LeaseDel | Sighting


class LeaseTable:
    """Who holds which address. At most one lease per address and per (network, MAC)."""

    def __init__(self, leases: Iterable[Lease] = ()) -> None:
        self.by_ip: dict[int, Lease] = {}
        self.by_mac: dict[str, dict[str, Lease]] = {}  # network -> MAC -> lease
        for lease in leases:
            self._put(lease)

    def __len__(self) -> int:
        return len(self.by_ip)

    def of(self, network: str, mac: str) -> Lease | None:
        macs = self.by_mac.get(network)
        return macs.get(mac) if macs is not None else None

    def at(self, ip: int) -> Lease | None:
        return self.by_ip.get(ip)

    def free_for(self, ip: int, mac: str, now: float) -> bool:
        """May ``mac`` take ``ip``: nobody else holds it, or their lease ended."""
        lease = self.by_ip.get(ip)
        if lease is None or not lease.live(now):
            return True
        return lease.mac == mac and lease.state != DECLINED

    def _put(self, lease: Lease) -> list[Change]:
        changes: list[Change] = []
        old_at_ip = self.by_ip.get(lease.ip)
        if old_at_ip is not None and old_at_ip.mac:
            self.by_mac[old_at_ip.network].pop(old_at_ip.mac, None)
        if lease.mac:
            macs = self.by_mac.setdefault(lease.network, {})
            old_of_mac = macs.get(lease.mac)
            if old_of_mac is not None and old_of_mac.ip != lease.ip:
                del self.by_ip[old_of_mac.ip]
                if old_of_mac.state != OFFERED:
                    changes.append(LeaseDel(old_of_mac.ip))
            macs[lease.mac] = lease
        self.by_ip[lease.ip] = lease
        return changes

    def offer(self, network: str, mac: str, ip: int, until: float) -> list[Change]:
        """Hold ``ip`` for ``mac`` until ``until`` (the offer itself is not durable). A
        client's live bound lease on the same address is kept as it is."""
        cur = self.by_ip.get(ip)
        if cur is not None and cur.mac == mac and cur.state == BOUND and cur.expires >= until:
            return []
        return self._put(Lease(ip, mac, network, OFFERED, until))

    def bind(self, network: str, mac: str, ip: int, expires: float,
             hostname: str = "") -> list[Change]:
        changes = self._put(Lease(ip, mac, network, BOUND, expires, hostname))
        changes.append(LeasePut(Lease(ip, mac, network, BOUND, expires, hostname)))
        return changes

    def release(self, lease: Lease, now: float) -> list[Change]:
        lease.state = RELEASED
        lease.expires = now
        return [LeasePut(replace(lease))]

    def decline(self, network: str, ip: int, until: float) -> list[Change]:
        """Quarantine an address a client found in use (RFC 2131 4.3.3)."""
        lease = Lease(ip, "", network, DECLINED, until)
        changes = self._put(lease)
        changes.append(LeasePut(replace(lease)))
        return changes

    def drop(self, ip: int, mac: str) -> list[Change]:
        """Forget ``mac``'s lease of ``ip`` (a binding the peer never confirmed)."""
        lease = self.by_ip.get(ip)
        if lease is None or lease.mac != mac:
            return []
        del self.by_ip[ip]
        macs = self.by_mac.get(lease.network)
        if macs is not None and macs.get(mac) is lease:
            del macs[mac]
        return [LeaseDel(ip)]

    def forget_offer(self, network: str, mac: str) -> None:
        lease = self.of(network, mac)
        if lease is not None and lease.state == OFFERED:
            del self.by_mac[network][mac]
            del self.by_ip[lease.ip]


class Pool:
    """The discovery pool of one network: addresses ``first..last`` minus ``excluded``
    (inventory addresses, gateway, DNS servers, the master's own addresses)."""

    def __init__(self, network: str, first: int, last: int, excluded: set[int]) -> None:
        self.network = network
        self.first = first
        self.last = last
        self.excluded = excluded
        self._cursor = first
        self._full_until = -1.0
        # (k, n): one of n DHCP worker processes gives out only the addresses with
        # ip % n == k (each machine's requests reach one worker: dhcp_steer), so two
        # workers never give one address; None: the whole pool
        self.share: tuple[int, int] | None = None

    def __contains__(self, ip: int) -> bool:
        share = self.share
        return self.first <= ip <= self.last and ip not in self.excluded and (
            share is None or ip % share[1] == share[0])

    @property
    def size(self) -> int:
        return self.last - self.first + 1 - sum(1 for x in self.excluded
                                                 if self.first <= x <= self.last)

    def half(self, side: str) -> tuple[int, int]:
        """The share of the free pool one master of a pair may give out alone (while it
        cannot reach its peer): the primary the lower half ``first..mid``, the secondary
        the upper half ``mid+1..last``. Fixed by the pool's bounds, so the two sides agree
        without talking, and disjoint, so they never give one address to two machines."""
        mid = self.first + (self.last - self.first) // 2
        return (self.first, mid) if side == "primary" else (mid + 1, self.last)

    def allocate(self, table: LeaseTable, mac: str, now: float,
                 hint: int | None = None, side: str | None = None,
                 hold: float = 0.0, prefer: str | None = None) -> int | None:
        """An address for ``mac``: the one it had, the one it asks for, or the next free
        one. None when the pool is exhausted (then no rescan for a second).

        ``side`` (a master of a pair that cannot reach its peer): a new address only
        from that side's ``half``; the address ``mac`` holds is kept wherever it is.
        ``hold``: an address another machine held stays out of use for this long after
        its lease ended (the peer may have extended it by up to that much: MCLT).
        ``prefer``: a pair in sync scans that side's half first, then the whole pool."""
        mine = table.of(self.network, mac)
        if mine is not None and mine.ip in self and table.free_for(mine.ip, mac, now):
            if side is None or mine.live(now) or self._in(mine.ip, side):
                return mine.ip
        lo, hi = (self.first, self.last) if side is None else self.half(side)
        if hint is not None and hint in self and lo <= hint <= hi \
                and self._free(table, hint, mac, now, hold):
            return hint
        if now < self._full_until:
            return None
        if prefer is not None and side is None:  # a pair in sync: the active's half first
            plo, phi = self.half(prefer)
            got = self._scan(table, mac, now, hold, plo, phi)
            if got is None:
                got = self._scan(table, mac, now, hold, lo, hi)
        else:
            got = self._scan(table, mac, now, hold, lo, hi)
        if got is None:
            self._full_until = now + 1.0
        return got

    def _scan(self, table: LeaseTable, mac: str, now: float, hold: float, lo: int,
              hi: int) -> int | None:
        if hi < lo:
            return None
        span = hi - lo + 1
        ip = self._cursor if lo <= self._cursor <= hi else lo
        share = self.share
        for _ in range(span):
            if ip not in self.excluded and (share is None or ip % share[1] == share[0]) \
                    and self._free(table, ip, mac, now, hold):
                self._cursor = ip + 1 if ip < hi else lo
                return ip
            ip = ip + 1 if ip < hi else lo
        return None

    def _in(self, ip: int, side: str) -> bool:
        lo, hi = self.half(side)
        return lo <= ip <= hi

    @staticmethod
    def _free(table: LeaseTable, ip: int, mac: str, now: float, hold: float) -> bool:
        if not table.free_for(ip, mac, now):
            return False
        if hold <= 0:
            return True
        lease = table.at(ip)
        return lease is None or lease.mac == mac or lease.expires + hold <= now


class LeaseStore(Protocol):
    """Where leases are kept across restarts (``provision.state.leases.LeaseJournal``)."""

    def load(self) -> Iterator[Lease]:
        """Every stored lease."""
        ...

    def commit(self, changes: list[Change], now: float) -> None:
        """Make ``changes`` durable, in order, all or none; return only once on disk."""
        ...
