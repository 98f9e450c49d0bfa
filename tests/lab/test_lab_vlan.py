"""The lab's userspace 802.1Q port: pure tag/untag, and two relays carrying a ping."""

from __future__ import annotations

import time

from lab.testing import Lab
from lab.vlan import fill_checksum, relay_argv, tag, untag

FRAME = bytes.fromhex("ffffffffffff525400000001") + b"\x08\x06" + b"\x00" * 28


def test_tag_then_untag_round_trips() -> None:
    tagged = tag(FRAME, 2)
    assert tagged[12:16] == b"\x81\x00\x00\x02" and len(tagged) == len(FRAME) + 4
    assert untag(tagged, None, 2) == FRAME
    assert untag(tagged, None, 3) is None
    assert untag(FRAME, None, 2) is None  # untagged frames stay out of the VLAN
    assert untag(FRAME, 0x2002, 2) == FRAME  # tag delivered as metadata (PCP 1, VID 2)


def _wait_link(ns, name: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(50):
        if ns.run(["ip", "link", "show", name], check=False).returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError(name)


def test_two_relays_carry_a_ping_over_a_tagged_link(lab: Lab) -> None:
    a, b = lab.netns("vla"), lab.netns("vlb")
    ta, tb = lab.veth(a, b)
    for ns, trunk, addr in ((a, ta, "198.19.2.1/24"), (b, tb, "198.19.2.2/24")):
        ns.popen(relay_argv(trunk, "vlan2", 2))
        _wait_link(ns, "vlan2")
        ns.addr("vlan2", addr)
        ns.up("vlan2")
    out = a.run(["ping", "-c", "4", "-W", "2", "198.19.2.2"], check=False, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


def test_fill_checksum_matches_a_real_tcp_segment() -> None:
    # A SYN from 198.19.2.11:40000 to 198.19.2.1:22 with a zero checksum field:
    # after fill_checksum the segment must verify (RFC 793 one's-complement sum).
    import struct

    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
                               bytes([198, 19, 2, 11]), bytes([198, 19, 2, 1])))
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 22, 1, 0, 0x50, 0x02, 64240, 0, 0))
    frame = bytes(12) + b"\x08\x00" + bytes(ip) + bytes(tcp)
    fixed = fill_checksum(frame)
    # verify: the one's-complement sum over pseudo header + segment is 0xffff
    seg = fixed[34:]
    pseudo = fixed[26:34] + struct.pack("!BBH", 0, 6, len(seg))
    data = pseudo + seg
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF
    assert fixed[:50] == frame[:50] and fixed[52:] == frame[52:]  # only the checksum changed
    assert fill_checksum(FRAME) == FRAME  # not IPv4: untouched
