"""Answer IPv6 router solicitations so iPXE stops waiting for an IPv6 router.

iPXE configures IPv4 (DHCP) and IPv6 (router discovery) at once and waits for
both: on a network without an IPv6 router that costs about 13 s per iPXE stage
(PXE-CLIENTS.md section 6). A Router Advertisement with no prefix, no M/O
flags and a router lifetime of 0 tells it "no IPv6 router here" at once
(RFC 4861 section 4.2: lifetime 0 = not a default router), so nothing on the
network gains a route from it. When the link's inventory network has an IPv6
prefix (``networks.X.ipv6``) the RA carries it as on-link, without the
autonomous flag: nobody makes up an address from it; when DHCPv6 runs too
(``--only ...,dhcp6``) each solicitor gets its own RA, with M set when it is a host
with an inventory IPv6 address there, so iPXE asks DHCPv6 for that address and its
boot URL (and a host without one is not sent to DHCPv6). Only solicitations are
answered; nothing is advertised unasked.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from ..inventory.model import Inventory
from ..protocol.dhcp6 import eui64_mac
from .base import ServeContext, Service, SocketThreadService

log = logging.getLogger(__name__)

ICMPV6_RS = 133  # RFC 4861 section 4.1
ICMPV6_RA = 134  # RFC 4861 section 4.2
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"
_RA = struct.Struct("!BBHBBHII")  # type, code, checksum, hop limit, flags, lifetime, reach, retrans
SYSCTL = "/proc/sys/net/ipv6/conf/{}/disable_ipv6"  # per network namespace
RECHECK = 5.0  # seconds between looks at disable_ipv6 while serving


def ipv6_disabled(ifname: str, sysctl: str = SYSCTL) -> bool:
    """True when the kernel has IPv6 off on ``ifname``: no solicitation reaches us there."""
    try:
        with open(sysctl.format(ifname)) as f:
            return f.read().strip() == "1"
    except OSError:  # no /proc/sys/net/ipv6 at all: IPv6 is off (ipv6.disable=1)
        return True
# type, length (8-octet units), prefix length, flags, valid, preferred, reserved, prefix
_PIO = struct.Struct("!BBBBIII16s")
ND_OPT_PREFIX_INFORMATION = 3
PIO_ON_LINK = 0x80  # L
RA_MANAGED = 0x80  # M: addresses are available by DHCPv6
PREFIX_VALID = 86400  # s
PREFIX_PREFERRED = 14400  # s


def is_router_solicitation(data: bytes) -> bool:
    """An ICMPv6 RS (code 0, at least the 8-byte header) -- RFC 4861 section 6.1.1."""
    return len(data) >= 8 and data[0] == ICMPV6_RS and data[1] == 0


def prefix_information(prefix: IPv6Network, valid: int = PREFIX_VALID,
                       preferred: int = PREFIX_PREFERRED) -> bytes:
    """RFC 4861 section 4.6.2: the prefix is on-link (L); no A flag, so nobody
    autoconfigures an address from it: hosts' addresses come from the inventory."""
    return _PIO.pack(ND_OPT_PREFIX_INFORMATION, 4, prefix.prefixlen, PIO_ON_LINK, valid,
                     preferred, 0, prefix.network_address.packed)


def router_advertisement(prefixes: Iterable[IPv6Network] = (), managed: bool = False) -> bytes:
    """RA: hop limit unspecified, router lifetime 0 (the master is not a router), a
    prefix information option per configured prefix (checksum by kernel). ``managed``
    sets M (RFC 4861 4.2: addresses by DHCPv6; iPXE then runs DHCPv6 and boots its
    option 59 URL), only where there is a prefix: elsewhere no M/O flags."""
    prefixes = list(prefixes)
    flags = RA_MANAGED if managed and prefixes else 0
    return _RA.pack(ICMPV6_RA, 0, 0, 0, flags, 0, 0, 0) + b"".join(
        prefix_information(p) for p in prefixes)


ND_OPT_SOURCE_LINK_ADDR = 1  # RFC 4861 section 4.6.1


def solicitor_mac(data: bytes, source: str) -> str | None:
    """The MAC of a router solicitation's sender: its source link-layer address
    option, else the modified EUI-64 link-local source address (what iPXE sends)."""
    i = 8
    while i + 2 <= len(data):
        kind, units = data[i], data[i + 1]
        if units == 0:  # RFC 4861 4.6: a zero length is invalid; stop reading
            break
        if kind == ND_OPT_SOURCE_LINK_ADDR and units == 1 and i + 8 <= len(data):
            return ":".join(f"{x:02x}" for x in data[i + 2:i + 8])
        i += units * 8
    try:
        return eui64_mac(IPv6Address(source.split("%")[0]))
    except ValueError:
        return None


def wants_dhcp6(inv: Inventory, mac: str | None, prefixes: Iterable[IPv6Network]) -> bool:
    """Whether the RA to this solicitor sets M: only a host with an inventory IPv6
    address on the link, whom DHCPv6 can serve; to anyone else (a host with no IPv6
    address) iPXE would solicit DHCPv6 for ~16 s, answered "no addresses", per stage."""
    host = inv.host_by_mac(mac) if mac else None
    if host is None:
        return False
    return any(a in p for a in host.addresses6.values() for p in prefixes)


def link_prefixes(inv: Inventory, address: IPv4Address) -> list[IPv6Network]:
    """The IPv6 prefixes of the inventory networks on a link with this IPv4 address."""
    return [n.ipv6 for n in inv.networks.values() if n.ipv6 is not None and address in n.cidr]


class RaService(SocketThreadService):
    """The IPv6 router advertisement service."""

    name = "ra"

    def __init__(self, ctx: ServeContext):
        super().__init__(ctx)
        self._disabled: set[str] = set()  # interfaces we have warned about

    def start(self) -> None:
        for ifname in self.ctx.interfaces:
            idx = socket.if_nametoindex(ifname)
            s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            # RFC 4861 section 6.1.2: RAs must carry hop limit 255
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            mreq = socket.inet_pton(socket.AF_INET6, ALL_ROUTERS) + struct.pack("@I", idx)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            self._socks[s.fileno()] = (ifname, s)
        self.ctx.metrics.describe("dsas_ra_ipv6_disabled",
                                  "1 when IPv6 is disabled on the interface (no RS can arrive)")
        self._check_ipv6()
        self._thread = threading.Thread(target=self._run, name="ra", daemon=True)
        self._thread.start()

    def _check_ipv6(self) -> None:
        """Say so, once per interface (again only after it came back), when IPv6 is off."""
        for ifname in self.ctx.interfaces:
            if not ipv6_disabled(ifname):
                if ifname in self._disabled:
                    self._disabled.discard(ifname)
                    log.info("ra: IPv6 is back on %s: answering router solicitations", ifname)
                continue
            if ifname in self._disabled:
                continue
            self._disabled.add(ifname)
            self.ctx.metrics.set("dsas_ra_ipv6_disabled", 1, interface=ifname)
            log.warning("ra: IPv6 is disabled on %s: no router solicitation can reach this "
                        "service, and iPXE waits ~13 s per stage for an IPv6 router; enable "
                        "it: sysctl -w net.ipv6.conf.%s.disable_ipv6=0", ifname, ifname)
        for ifname in self.ctx.interfaces:
            if ifname not in self._disabled:
                self.ctx.metrics.set("dsas_ra_ipv6_disabled", 0, interface=ifname)

    def _run(self) -> None:
        try:
            next_check = time.monotonic() + RECHECK
            while not self._stop.is_set():
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + RECHECK
                    self._check_ipv6()
                ready, _, _ = select.select(list(self._socks), [], [], 0.5)
                for fd in ready:
                    ifname, s = self._socks[fd]
                    data, addr = s.recvfrom(1500)
                    if not is_router_solicitation(data):
                        continue
                    idx = socket.if_nametoindex(ifname)
                    prefixes = self._prefixes(ifname)
                    source = addr[0].split("%")[0]
                    # With DHCPv6 on, the answer goes to the solicitor alone (RFC 4861
                    # 6.2.6 allows it), M set only for a host DHCPv6 has an address for.
                    managed = self.ctx.dhcp6 and source != "::" and wants_dhcp6(
                        self.ctx.inventory, solicitor_mac(data, source), prefixes)
                    dest = source if self.ctx.dhcp6 and source != "::" else ALL_NODES
                    try:
                        s.sendto(router_advertisement(prefixes, managed), (dest, 0, 0, idx))
                    except OSError as e:
                        # e.g. the interface's link-local address is still tentative (DAD):
                        # the client solicits again in a moment.
                        self.ctx.metrics.inc("dsas_ra_errors_total", interface=ifname,
                                             reason=e.__class__.__name__)
                        log.debug("ra: cannot answer on %s yet: %s", ifname, e)
                        continue
                    self.ctx.metrics.inc("dsas_ra_answers_total", interface=ifname)
                    log.debug("ra: answered a router solicitation from %s on %s", addr[0],
                              ifname)
        except BaseException as e:  # reported through alive()
            self._error = e
            log.exception("ra: stopped")

    def _prefixes(self, ifname: str) -> list[IPv6Network]:
        """The inventory's prefixes on this interface's IPv4 network (read per answer,
        so a reloaded inventory shows at once); none when it has no IPv4 address."""
        from .dhcp_socket import interface_address

        try:
            address, _ = interface_address(ifname)
        except OSError:
            return []
        return link_prefixes(self.ctx.inventory, address)


def create(ctx: ServeContext) -> Service:
    return RaService(ctx)
