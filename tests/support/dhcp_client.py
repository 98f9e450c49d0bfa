"""A small DHCP/PXE client for the lab tests, run inside a client namespace.

    python tests/support/dhcp_client.py IFACE MAC --profile bios|efi7|efi9|ipxe [--wait S]
        [--request] [--proxy-request ADDR]

Sends a DISCOVER shaped like the chosen firmware (PXE-CLIENTS.md 2) with the broadcast
flag set, collects every reply for --wait seconds, optionally REQUESTs the offered
address, and prints the replies as JSON lines. With --proxy-request it then assigns the
ACKed address and asks ADDR:4011 for boot information, as a PXE ROM does after a
ProxyDHCP offer. Uses only the project's codec and a plain UDP socket.
"""

from __future__ import annotations

import argparse
import json
import random
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from provision.protocol import dhcp_options as o  # noqa: E402
from provision.protocol.dhcp import DhcpDecodeError, DhcpPacket, decode, encode  # noqa: E402
from tests.support.dhcp_support import IPXE_ROM, OVMF, PXE_BIOS, client_packet  # noqa: E402

PROFILES = {
    "bios": PXE_BIOS,
    "efi7": OVMF,
    "efi9": {**OVMF, o.CLIENT_ARCH: o.u16(9)},
    "ipxe": IPXE_ROM,
    "plain": {},
}


def describe(p: DhcpPacket, source: tuple[str, int]) -> dict[str, object]:
    return {
        "source": source[0], "sport": source[1],
        "type": o.MESSAGE_TYPE_NAMES.get(p.message_type or 0, "BOOTP"),
        "xid": p.xid, "yiaddr": str(p.yiaddr), "siaddr": str(p.siaddr),
        "file": p.file.decode("ascii", "replace"),
        "opt67": p.options.get(o.BOOTFILE_NAME, b"").decode("ascii", "replace"),
        "opt66": p.options.get(o.TFTP_SERVER, b"").decode("ascii", "replace"),
        "opt60": p.options.get(o.VENDOR_CLASS, b"").decode("ascii", "replace"),
        "server_id": str(p.server_id) if p.server_id else "",
        "hostname": p.hostname or "",
    }


def collect(sock: socket.socket, xid: int, wait: float, types: set[int],
            want: int) -> list[tuple[DhcpPacket, tuple[str, int]]]:
    out: list[tuple[DhcpPacket, tuple[str, int]]] = []
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and len(out) < want:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data, source = sock.recvfrom(4096)
        try:
            p = decode(data)
        except DhcpDecodeError:
            continue
        if p.xid == xid and p.message_type in types:
            out.append((p, source))
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("iface")
    ap.add_argument("mac")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="bios")
    ap.add_argument("--wait", type=float, default=2.0)
    ap.add_argument("--offers", type=int, default=1, help="stop after this many offers")
    ap.add_argument("--request", action="store_true")
    ap.add_argument("--proxy-request", metavar="ADDR")
    args = ap.parse_args(argv)
    extra = dict(PROFILES[args.profile])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, args.iface.encode())
    sock.bind(("0.0.0.0", 68))
    xid = random.getrandbits(32)
    disc = client_packet(o.DISCOVER, args.mac, xid=xid, broadcast=True, extra=extra,
                         client_id=False)
    sock.sendto(encode(disc), ("255.255.255.255", 67))
    offers = collect(sock, xid, args.wait, {o.OFFER}, args.offers)
    for p, src in offers:
        print(json.dumps(describe(p, src)))
    address_offer = next((p for p, _ in offers if p.yiaddr != o.IPv4Address(0)), None)
    if not (args.request or args.proxy_request) or address_offer is None:
        return 0 if offers else 1
    req = client_packet(o.REQUEST, args.mac, xid=xid, broadcast=True, extra=extra,
                        requested=str(address_offer.yiaddr), server=address_offer.server_id,
                        client_id=False)
    sock.sendto(encode(req), ("255.255.255.255", 67))
    acks = collect(sock, xid, args.wait, {o.ACK, o.NAK}, 1)
    for p, src in acks:
        print(json.dumps(describe(p, src)))
    if not acks or acks[0][0].message_type != o.ACK or not args.proxy_request:
        return 0 if acks else 1
    ack = acks[0][0]
    mask = ack.options.get(o.SUBNET_MASK, o.ip("255.255.255.0"))
    prefix = bin(int.from_bytes(mask, "big")).count("1")
    subprocess.run(["ip", "addr", "add", f"{ack.yiaddr}/{prefix}", "dev", args.iface],
                   check=True, timeout=10)
    pxe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pxe.bind((str(ack.yiaddr), 0))
    boot = client_packet(o.REQUEST, args.mac, xid=xid, ciaddr=str(ack.yiaddr), extra=extra,
                         client_id=False)
    pxe.sendto(encode(boot), (args.proxy_request, 4011))
    for p, src in collect(pxe, xid, args.wait, {o.ACK}, 1):
        print(json.dumps({**describe(p, src), "port": 4011}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
