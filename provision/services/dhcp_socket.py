"""The DHCPv4 service's sockets: one per interface (SO_BINDTODEVICE, IP_PKTINFO), the
interface's address from the kernel, and whether a datagram was sent to us (unicast)."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from ipaddress import IPv4Address

SOCKET_BUFFER = 4 * 1024 * 1024
SIOCGIFADDR = 0x8915  # linux/sockios.h
SIOCGIFNETMASK = 0x891B
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
ANCILLARY = socket.CMSG_SPACE(12)  # struct in_pktinfo
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def interface_address(ifname: str) -> tuple[IPv4Address, ipaddress.IPv4Network]:
    """The interface's (primary) IPv4 address and subnet, from the kernel."""
    req = struct.pack("256s", ifname.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            addr = fcntl.ioctl(s.fileno(), SIOCGIFADDR, req)[20:24]
            mask = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, req)[20:24]
        except OSError as e:
            raise OSError(f"interface {ifname}: no IPv4 address ({e.strerror})") from None
    address = IPv4Address(addr)
    net = ipaddress.IPv4Network(f"{address}/{IPv4Address(mask)}", strict=False)
    return address, net


def bind_interface(ifname: str, port: int, reuseport: bool = False) -> socket.socket:
    """A UDP socket on ``port`` of ``ifname`` only (SO_BINDTODEVICE), with IP_PKTINFO;
    ``reuseport``: in a group with the other DHCP workers' (``dhcp_steer``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        sock.bind(("0.0.0.0", port))
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise OSError(f"dhcp: cannot bind {ifname} port {port}: {e.strerror or e}") from None
    return sock


def addressed_to(anc: list[tuple[int, int, bytes]], address: bytes) -> bool:
    """Was the datagram addressed to our unicast address (IP_PKTINFO ipi_addr)?"""
    for level, kind, data in anc:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
            return data[8:12] == address
    return False
