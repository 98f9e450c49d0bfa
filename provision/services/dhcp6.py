"""`dsas serve --only ...,dhcp6`: DHCPv6 (RFC 8415) on the interfaces whose inventory
network has an IPv6 prefix: each host's reserved address (by MAC, see
``provision.policy.dhcp6``) and its boot file URL (option 59).

One thread; one UDP socket per interface on port 547, bound to the device and joined
to All_DHCP_Relay_Agents_and_Servers (ff02::1:2). Replies go to the client's
link-local source address, port 546. Malformed messages are counted and dropped.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import threading
from ipaddress import IPv6Address
from pathlib import Path

from ..inventory.model import Inventory
from ..policy.dhcp6 import Dhcp6Policy, Link6
from ..protocol import dhcp6 as d6
from .base import ServeContext, Service, SocketThreadService

log = logging.getLogger(__name__)

SERVER_PORT = 547
CLIENT_PORT = 546
ALL_SERVERS = "ff02::1:2"


def interface_mac(ifname: str) -> str:
    return Path(f"/sys/class/net/{ifname}/address").read_text().strip().lower()


def interface_addresses6(ifname: str) -> list[IPv6Address]:
    """The interface's global IPv6 addresses, from /proc/net/if_inet6."""
    out = []
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        f = line.split()
        if len(f) >= 6 and f[5] == ifname and f[3] == "00":  # scope global
            out.append(IPv6Address(bytes.fromhex(f[0])))
    return out


class Dhcp6Service(SocketThreadService):
    """The DHCPv6 service."""

    name = "dhcp6"

    def __init__(self, ctx: ServeContext):
        super().__init__(ctx)
        self.policy = Dhcp6Policy(ctx.inventory, ctx.http_port)

    def start(self) -> None:
        for ifname in self.ctx.interfaces:
            idx = socket.if_nametoindex(ifname)
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind(("::", SERVER_PORT))
                mreq = socket.inet_pton(socket.AF_INET6, ALL_SERVERS) + struct.pack("@I", idx)
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            except OSError:
                s.close()
                self.stop()
                raise
            self._socks[s.fileno()] = (ifname, s)
            log.info("dhcp6 listening on %s (port %d)", ifname, SERVER_PORT)
        self._thread = threading.Thread(target=self._run, name="dhcp6", daemon=True)
        self._thread.start()

    def reload(self, inventory: Inventory) -> None:
        self.policy.reload(inventory)

    def link(self, ifname: str) -> Link6:
        from .dhcp_socket import interface_address

        inv = self.policy.inv
        try:
            address, _ = interface_address(ifname)
            net = inv.network_of(address)
        except OSError:
            net = None
        ours = [a for a in interface_addresses6(ifname)
                if net is not None and net.ipv6 is not None and a in net.ipv6]
        return Link6(ifname, net, ours[0] if ours else None,
                     d6.duid_ll(interface_mac(ifname)))

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select(list(self._socks), [], [], 0.5)
                for fd in ready:
                    ifname, s = self._socks[fd]
                    data, addr = s.recvfrom(65535)
                    try:
                        self._one(ifname, s, data, addr)
                    except Exception:  # noqa: BLE001 - one bad message must not stop DHCPv6
                        self.ctx.metrics.inc("dsas_dhcp6_dropped_total", reason="internal")
                        log.exception("dhcp6: handling a message from %s failed", addr[0])
        except BaseException as e:  # reported through alive()
            self._error = e
            log.exception("dhcp6: stopped")

    def _one(self, ifname: str, s: socket.socket, data: bytes,
             addr: tuple[str, int, int, int]) -> None:
        metrics = self.ctx.metrics
        try:
            msg = d6.decode(data)
            source = IPv6Address(addr[0].split("%")[0])
        except ValueError as e:
            metrics.inc("dsas_dhcp6_dropped_total", reason="malformed")
            log.debug("dhcp6: malformed message from %s: %s", addr[0], e)
            return
        d = self.policy.handle(msg, self.link(ifname), source)
        kind = d6.MESSAGE_NAMES.get(msg.msg_type, str(msg.msg_type))
        if d.reply is None:
            metrics.inc("dsas_dhcp6_dropped_total", reason=d.drop or "none")
            log.debug("dhcp6: %s from %s mac=%s dropped: %s", kind, addr[0], d.mac or "-",
                      d.drop)
            return
        try:
            s.sendto(d6.encode(d.reply), (str(source), CLIENT_PORT, 0, addr[3]))
        except OSError as e:
            metrics.inc("dsas_dhcp6_errors_total", reason=e.__class__.__name__)
            log.warning("dhcp6: cannot answer %s on %s: %s", source, ifname, e)
            return
        metrics.inc("dsas_dhcp6_replies_total", type=d6.MESSAGE_NAMES[d.reply.msg_type])
        log.info("dhcp6 %s %s host=%s mac=%s (for %s) boot=%s",
                 d6.MESSAGE_NAMES[d.reply.msg_type], d.address or "-", d.host, d.mac, kind,
                 d.boot or "-")


def create(ctx: ServeContext) -> Service:
    return Dhcp6Service(ctx)
