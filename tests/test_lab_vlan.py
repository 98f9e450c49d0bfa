"""The lab's userspace 802.1Q port: pure tag/untag, and two relays carrying a ping."""

from __future__ import annotations

import sys
import time

from provision.lab.vlan import tag, untag

from .lab import Lab

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
        ns.popen([sys.executable, "-m", "provision.lab.vlan", trunk, "vlan2", "2"])
        _wait_link(ns, "vlan2")
        ns.addr("vlan2", addr)
        ns.up("vlan2")
    out = a.run(["ping", "-c", "2", "-W", "2", "198.19.2.2"], check=False)
    assert out.returncode == 0, out.stdout + out.stderr
