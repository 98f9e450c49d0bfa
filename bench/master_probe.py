"""Run inside the client's namespace by bench/master.py: once the file GO exists
(the primary was just killed), renew one lease (a unicast DHCPREQUEST, RENEWING, to the
VIP) every 0.1 s until an ACK comes back; print the seconds from GO and the address
ACKed, as JSON."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from ipaddress import IPv4Address

from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import BOOTREQUEST, DhcpPacket, decode, encode


def main() -> int:
    iface, mac, ip, vip, limit, go = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], \
        float(sys.argv[5]), sys.argv[6]
    chaddr = bytes.fromhex(mac.replace(":", ""))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, 25, iface.encode())  # SO_BINDTODEVICE
    sock.bind((ip, 68))
    sock.settimeout(0.1)
    wait = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < wait:  # the primary is killed
        time.sleep(0.005)
    t0 = time.monotonic()
    xid = int.from_bytes(os.urandom(4), "big")
    pkt = DhcpPacket(op=BOOTREQUEST, xid=xid, chaddr=chaddr, ciaddr=IPv4Address(ip),
                     options={o.MESSAGE_TYPE: bytes((o.REQUEST,)),
                              o.CLIENT_ID: b"\x01" + chaddr})
    wire = encode(pkt)
    while time.monotonic() - t0 < limit:
        try:
            sock.sendto(wire, (vip, 67))
        except OSError:
            pass
        try:
            data = sock.recv(4096)
        except (TimeoutError, OSError):
            continue
        try:
            reply = decode(data)
        except Exception:  # noqa: BLE001 - not ours
            continue
        if reply.xid == xid and reply.message_type in (o.ACK, o.NAK):
            print(json.dumps({"s": time.monotonic() - t0, "kind":
                              "ACK" if reply.message_type == o.ACK else "NAK",
                              "ip": str(reply.yiaddr)}))
            return 0
    print(json.dumps({"s": None}))
    return 1


if __name__ == "__main__":
    sys.exit(main())
