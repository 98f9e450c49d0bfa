"""Hostile clients for the lab tests (issue 13): crafted DHCP datagrams and DNS streams
sent from a lab namespace with plain sockets made in that namespace."""

from __future__ import annotations

import random
import re
import socket
from pathlib import Path

from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import encode
from tests.support.dhcp_support import client_packet
from tests.support.netns_thread import in_netns

# A line as `dsas serve` logs it (cli.common.setup_logging); anything else is a forged or
# broken line (a traceback is checked for separately).
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                      r"[\w.]+: ")


def dhcpclient_socket(ns_name: str, iface: str) -> socket.socket:
    """A UDP socket on port 68 of ``iface`` in the namespace, able to broadcast."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
        s.bind(("0.0.0.0", 68))
        return s
    return in_netns(ns_name, make)


def send_broadcast(sock: socket.socket, data: bytes) -> None:
    sock.sendto(data, ("255.255.255.255", 67))


def discover(mac: str, extra: dict[int, bytes] | None = None) -> bytes:
    return encode(client_packet(o.DISCOVER, mac, broadcast=True, extra=extra))


def random_mac(rng: random.Random) -> str:
    """A random locally administered unicast MAC (02:xx:...)."""
    return "02:" + ":".join(f"{rng.randrange(256):02x}" for _ in range(5))


def log_problems(path: Path) -> list[str]:
    """Lines of a `dsas serve` log that are not log lines (forged, broken), or tracebacks."""
    bad = []
    for line in path.read_text(errors="replace").splitlines():
        if not LOG_LINE.match(line) or "Traceback" in line:
            bad.append(line)
    return bad


def drain(sock: socket.socket, limit: int = 1000) -> int:
    """Read and drop what is queued on ``sock`` without waiting (bounded: ``limit``)."""
    n = 0
    while n < limit:
        try:
            sock.recv(65535, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # e.g. an ICMP error queued for an earlier datagram
            pass
        n += 1
    return n
