"""A userspace 802.1Q port for the lab: tagged VLAN traffic without the 8021q module.

The lab host's kernel has neither 8021q nor bridge VLAN filtering, but the
guests tag their frames (``bond0.2``). To reach a guest's VLAN address from the
master's namespace, this relay stands in for a switch's access port:

    bridge br0 --- veth (trunk side, a packet socket) <-relay-> tap "vlanN" (untagged, has the
                                                                 master's address on VLAN N)

Frames arriving on the trunk with VLAN id N lose their tag and go to the tap;
frames from the tap get the tag and go to the trunk. The kernel hands received
tags to packet sockets as metadata (PACKET_AUXDATA), so both forms are handled.
Runs as its own process (``relay_argv()``: ``python lab/vlan.py TRUNK TAP VID``) inside
the namespace, stopped by PID like everything else in the lab.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable

ETH_P_ALL = 0x0003
ETH_P_8021Q = 0x8100
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 1 << 3  # the L4 checksum is left to "hardware" (offload)
TP_STATUS_VLAN_VALID = 1 << 4
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
_AUX = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def untag(frame: bytes, aux_tci: int | None, vid: int) -> bytes | None:
    """The untagged frame if it belongs to VLAN ``vid``; None otherwise (pure)."""
    if aux_tci is not None:
        return frame if aux_tci & 0x0FFF == vid else None
    if len(frame) >= 18 and struct.unpack_from("!H", frame, 12)[0] == ETH_P_8021Q:
        if struct.unpack_from("!H", frame, 14)[0] & 0x0FFF == vid:
            return frame[:12] + frame[16:]
    return None


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(total)


def fill_checksum(frame: bytes) -> bytes:
    """Complete the TCP/UDP checksum of an IPv4 frame whose checksum was offloaded (pure).

    A guest's virtio NIC hands the host packets with CHECKSUM_PARTIAL; a packet
    socket sees them before any "hardware" filled the checksum in, and the tap on
    the other side would drop them. ICMP is never offloaded, which is why ping
    works without this.
    """
    if len(frame) < 34 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
        return frame
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    total = struct.unpack_from("!H", frame, 16)[0]
    off = 14 + ihl
    end = 14 + total
    if proto not in (6, 17) or end > len(frame):
        return frame
    field = off + (16 if proto == 6 else 6)
    if field + 2 > end:
        return frame
    seg = bytearray(frame[off:end])
    seg[field - off: field - off + 2] = b"\0\0"
    pseudo = frame[26:34] + struct.pack("!BBH", 0, proto, end - off)
    csum = 0xFFFF - _sum16(pseudo + bytes(seg))
    if proto == 17 and csum == 0:
        csum = 0xFFFF
    return frame[:field] + struct.pack("!H", csum) + frame[field + 2:]


def tag(frame: bytes, vid: int) -> bytes:
    """Insert an 802.1Q header with ``vid`` (priority 0) after the MAC addresses (pure)."""
    return frame[:12] + struct.pack("!HH", ETH_P_8021Q, vid & 0x0FFF) + frame[12:]


def relay(trunk: str, tap_name: str, vid: int, max_frames: int | None = None) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.bind((trunk, 0))
    tap = open_tap(tap_name)
    seen = 0
    while max_frames is None or seen < max_frames:
        ready, _, _ = select.select([sock.fileno(), tap], [], [], 1.0)
        for r in ready:
            seen += 1
            if r == sock.fileno():
                data, anc, _, addr = sock.recvmsg(65535, socket.CMSG_SPACE(_AUX.size))
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                tci = None
                partial = False
                for level, kind, value in anc:
                    if level == SOL_PACKET and kind == PACKET_AUXDATA:
                        status, *_, vlan_tci, _tpid = _AUX.unpack_from(value)
                        if status & TP_STATUS_VLAN_VALID:
                            tci = vlan_tci
                        partial = bool(status & TP_STATUS_CSUMNOTREADY)
                out = untag(data, tci, vid)
                if out is not None:
                    _deliver(lambda f: os.write(tap, f), fill_checksum(out) if partial else out)
            else:
                _deliver(sock.send, tag(os.read(tap, 65535), vid))


def _deliver(send: Callable[[bytes], object], frame: bytes) -> None:
    """Send one frame; a port that is down or full drops it, as a switch would."""
    try:
        send(frame)
    except OSError as e:
        if e.errno not in (errno.EIO, errno.ENETDOWN, errno.ENOBUFS, errno.EAGAIN):
            raise


def relay_argv(trunk: str, tap_name: str, vid: int) -> list[str]:
    """The command line of a relay process. It runs this file as a script (standard
    library only), so it works from any directory, whether or not the source tree
    is on the child's ``sys.path``."""
    return [sys.executable, __file__, trunk, tap_name, str(vid)]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python lab/vlan.py TRUNK_IF TAP_NAME VLAN_ID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    relay(argv[0], argv[1], int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
