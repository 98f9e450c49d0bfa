"""The master pair with real netbooting guests (issue 18): three QEMU guests (TCG,
SeaBIOS + iPXE option ROM, the tiny image) power on against the master VIP; once the
primary has ACKed at least one of them, and before all three are ready, its `dsas serve`
is killed with SIGKILL. The secondary takes the VIP and the rest of the boot:

* all three guests reach ``ready``, their reports recorded by the secondary;
* every address the primary had committed (an ACK leaves only after its lease is on
  disk, so this covers every ACK sent) is held by the same MAC in the secondary's store;
* no address is held by two MACs, in either store or between them, and what each guest
  got (iPXE's DHCP on its console, its ready report) is what the stores say.

The two masters are tests/support/master_lab.py's (real `dsas serve --master`, Debian's
keepalived holding the VIP); the guests sit on the same bridge. Timings are printed.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from ipaddress import IPv4Address

import pytest

from lab.clone import TEST_BOOT_ROOT, build_images
from lab.qemu import Guest, GuestSpec
from lab.testing import require_root, require_tool, wait_for
from provision.policy.boottree import populate_loaders
from provision.state import StateError, StateStore
from provision.state import events as stored_events
from tests.support.master_lab import Master, Pair, no_address_twice, up
from tests.support.master_support import GUESTS

STAGES = ["initramfs", "dsas.conf", "image", "configured", "ready"]
TIMINGS: list[str] = []  # printed in the terminal summary (conftest)
READY_TIMEOUT = 420  # three TCG guests on a shared 2-core machine
ACK = re.compile(r"dhcp ACK (\S+) host=(g\d) mac=(\S+)")
IPXE_ADDRESS = re.compile(r"net0: (198\.18\.\d+\.\d+)/")  # iPXE's DHCP
LINUX_ADDRESS = re.compile(r"dsas: eth0: address (\S+)/24")  # the initramfs's DHCP


def _boot_tree(m: Master) -> None:
    """The boot loaders and the tiny image (built once per machine, then cached)."""
    boot = m.dir / "boot"
    populate_loaders(boot)
    build_images("tiny")
    shutil.copytree(TEST_BOOT_ROOT / "images" / "tiny", boot / "images" / "tiny",
                    symlinks=True)


def _rows(m: Master) -> dict[str, tuple[str, str]]:
    """ip -> (MAC, state) of every lease row in the master's store (bound or released:
    a guest gives its DHCP lease back once dsas-init has set its own address)."""
    store = StateStore(m.state)
    try:
        rows = store.query("SELECT ip, mac, state FROM dhcp_leases")
    finally:
        store.close()
    return {str(IPv4Address(r["ip"])): (r["mac"], r["state"]) for r in rows}


def _reports(m: Master) -> dict[str, list[stored_events.StoredEvent]]:
    try:
        rows = stored_events.read_only_since(m.state / "state.db", 0)
    except StateError:  # busy: the next poll sees it
        return {}
    out: dict[str, list[stored_events.StoredEvent]] = {}
    for e in rows:
        out.setdefault(e.host, []).append(e)
    return out


def _ready(m: Master) -> set[str]:
    return {h for h, evs in _reports(m).items() if h in GUESTS and evs[-1].stage == "ready"}


def _guest_rows(m: Master) -> dict[str, str]:
    """ip -> MAC of the guests' leases in the master's store."""
    macs = {mac for mac, _ in GUESTS.values()}
    return {ip: mac for ip, (mac, _) in _rows(m).items() if mac in macs}


def _acks(m: Master) -> list[tuple[str, str, str]]:
    """(address, host, MAC) of every ACK the master's log says it decided on."""
    return [(a.group(1), a.group(2), a.group(3)) for a in ACK.finditer(m.log())]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("pair_lab", ["guests"], indirect=True)
def test_three_guests_netboot_through_a_primary_killed_mid_boot(pair_lab: Pair) -> None:
    require_root()
    require_tool("qemu-system-x86_64")
    p = pair_lab
    m1, m2 = p.masters["m01"], p.masters["m02"]
    for m in (m1, m2):
        _boot_tree(m)
    up(p)
    guests = {}
    for name, (mac, _) in GUESTS.items():
        tap = p.lab.tap(p.bridge, "br0")
        guests[name] = Guest(p.lab, p.bridge, GuestSpec(name, [mac], memory_mib=384), [tap],
                             p.tmp / "guests")
    timings: list[str] = []
    ready_at: dict[str, float] = {}  # since g1's power-on
    boot_s: dict[str, float] = {}  # each guest's power-on to ready
    t0 = time.monotonic()
    try:
        # g1 first, until its console shows the address iPXE was ACKed (by the primary:
        # the only one serving); then g2 and g3, killed mid-DHCP: the primary dies once
        # its store holds one of their leases (the log line is written when the ACK is
        # decided; the ACK leaves only once its lease is on disk and on the secondary).
        first, *others = guests.values()
        first.start()
        first.wait_for(IPXE_ADDRESS.pattern, 180)
        for g in others:
            g.start()
        wait_for(lambda: set(_guest_rows(m1).values()) - {first.spec.macs[0]}, 120,
                 "a DHCP ACK from the primary to g2 or g3", interval=0.2)
        ready_before = _ready(m1)
        assert len(ready_before) < len(GUESTS), "all ready before the kill: nothing tested"
        m1.kill()
        killed = time.monotonic() - t0
        committed = _guest_rows(m1)  # dead: what it could have ACKed, every one of them
        decided = _acks(m1)
        timings.append(f"pair: SIGKILL of the primary {killed:.1f} s after g1's power-on "
                       f"({others[0].elapsed():.1f} s after g2's and g3's), "
                       f"{len(committed)} lease(s) committed ({sorted(committed)}), "
                       f"{len(decided)} ACK(s) in its log; ready then: "
                       f"{sorted(ready_before) or 'none'}")
        deadline = time.monotonic() + READY_TIMEOUT
        while len(ready_at) < len(guests):
            for name in _ready(m2) - set(ready_at):
                ready_at[name] = time.monotonic() - t0
                boot_s[name] = guests[name].elapsed()
            for name, g in guests.items():
                if name not in ready_at and not g.running():
                    pytest.fail(f"{name}'s QEMU exited before ready:\n{g.console()[-3000:]}"
                                f"\n{p.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready in {READY_TIMEOUT} s after the kill: "
                            f"{sorted(set(guests) - set(ready_at))}; reports on m02: "
                            f"{ {h: [e.stage for e in evs] for h, evs in _reports(m2).items()} }"
                            f"\n{p.logs()}\n" + "\n".join(
                                f"---- {n}\n{g.console()[-2000:]}" for n, g in guests.items()))
            time.sleep(0.5)
        for name in guests:
            timings.append(f"pair: {name} power-on to ready {boot_s[name]:.1f} s, "
                           f"{ready_at[name] - killed:.1f} s after the kill")
    finally:
        for g in guests.values():
            g.stop()
        print("\n" + "\n".join(timings), file=sys.stderr)
        TIMINGS.extend(timings)

    assert m2.holds_vip() and m2.status().get("role") == "active", m2.status()
    reports = _reports(m2)
    after = _rows(m2)
    for ip, mac in committed.items():  # each ACK before the kill: the same MAC after
        assert after.get(ip, ("none", ""))[0] == mac, (ip, mac, after)
    no_address_twice(p)  # the live leases of the two stores agree
    given = _acks(m2)  # the secondary's ACKs (the initramfs's DHCP at least)
    assert {host for _, host, _ in given} == set(GUESTS), given
    for ip, host, mac in given:
        assert GUESTS[host] == (mac, ip), (host, mac, ip)
    before = _rows(m1)
    for ip in set(before) & set(after):
        assert before[ip][0] == after[ip][0], (ip, before[ip], after[ip])
    got = {}
    for name, g in guests.items():
        mac, address = GUESTS[name]
        for rx in (IPXE_ADDRESS, LINUX_ADDRESS):  # iPXE's DHCP, then the initramfs's
            seen = rx.findall(g.console())
            assert seen and set(seen) == {address}, (name, rx.pattern, seen)
        assert [e.stage for e in reports[name]] == STAGES, (name, reports[name])
        ready = reports[name][-1]
        assert f"eth0={address}/24" in (ready.reason or ""), ready
        assert after.get(address, ("none", ""))[0] == mac, (name, address, after)
        got[address] = mac
    assert len(got) == len(guests)  # one address each, no address twice
    for rows in (before, after):
        held = {}
        for ip, (mac, _) in rows.items():
            if mac in got.values():
                assert held.setdefault(mac, ip) == ip, f"{mac} holds {held[mac]} and {ip}"
