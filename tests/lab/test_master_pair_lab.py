"""Two masters on one lab bridge (issue 18): real `dsas serve` processes, Debian's
keepalived holding the VIP, busybox udhcpc clients in their own namespaces.

* the primary is killed with SIGKILL: the secondary takes the VIP, every address ACKed
  before is renewed by the same MAC, a new machine gets an address of the secondary's
  half, no address is held by two MACs in either store; the primary returns, resyncs
  from the secondary, and takes the VIP back or not (``pair.preempt``);
* a partition (the two masters' bridge ports isolated from each other, the clients
  still reach both): both serve, and still no address goes to two machines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.testing import require_tool, wait_for
from provision.state import StateStore
from tests.support.master_lab import DSAS, HALF, VIP, Pair, no_address_twice, start_client, up


def _record_other(state: Path) -> None:
    from provision.policy.httpfiles import Event
    from provision.state import events
    from provision.state import inventory as invhist
    store = StateStore(state)
    try:
        events.record(store, Event("w1", "ready", None, "base@v1", "198.18.0.11"),
                      time.time(), False, 100)
        with invhist.InventoryHistory(store).recording("/etc/dsas/cluster.yaml", b"",
                                                       b"cluster: {}\n", "test"):
            pass
    finally:
        store.close()


def _has_other(state: Path) -> bool:
    store = StateStore(state)
    try:
        dump = store.dump()
    finally:
        store.close()
    return any(r["host"] == "w1" and r["stage"] == "ready" for r in dump.get("http_events", [])) \
        and any(r["content"] == b"cluster: {}\n" for r in dump.get("inventory_history", []))


def _last(ip: str) -> int:
    return int(ip.rsplit(".", 1)[1])


@pytest.mark.parametrize("pair_lab", [True, False], indirect=True,
                         ids=["preempt", "nopreempt"])
def test_the_secondary_takes_over_from_a_killed_primary_and_loses_no_lease(
        pair_lab: Pair) -> None:
    p = pair_lab
    m1, m2 = p.masters["m01"], p.masters["m02"]
    up(p)
    before = {}
    for _ in range(3):
        c = p.client()
        before[c.mac] = start_client(c)
    # Every ACK waited for the secondary: its store has each lease before the kill.
    stored = m2.leases()
    for mac, ip in before.items():
        assert stored.get(ip) == mac, (mac, ip, stored, p.logs())
        assert _last(ip) <= HALF  # in sync the primary fills its own half first
    # A node event and an inventory version, written on the primary, reach the standby.
    _record_other(m1.state)
    wait_for(lambda: _has_other(m2.state), 20, "the event and inventory version on m02")
    m1.kill()  # SIGKILL: no goodbye; keepalived, its child, gets SIGTERM and lets go
    wait_for(m2.holds_vip, 20, "the secondary to take the VIP")
    wait_for(lambda: m2.status().get("role") == "active", 10, "the secondary active")
    for c in p.clients:
        assert c.renew() == before[c.mac], (c.mac, c.lines(), p.logs())
    late = p.client()
    ip = start_client(late)
    assert _last(ip) > HALF, f"alone, the secondary gave {ip} outside its half"
    assert ip not in before.values()
    code = p.clients[0].ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "--max-time", "5", f"http://{VIP}:8080/"], check=False)
    assert code.stdout.strip() not in ("", "000"), "no HTTP answer from the VIP"
    dig = p.clients[0].ns.run([require_tool("dig"), "+short", "+time=2", "+tries=3",
                               f"@{VIP}", "w1.lab.example"], check=False)
    assert dig.stdout.strip() == "198.18.0.11", ("no DNS answer from the VIP", dig)
    no_address_twice(p)

    # The primary returns: it pulls the secondary's leases before it answers anyone.
    m1.start()
    log = m1.log().split("=== start")[-1]
    assert "resynced from m02" in log and "verified" in log, log
    assert m1.leases().get(ip) == late.mac  # given while it was dead: now it knows
    if "preempt: true" in m1.inventory.read_text():
        wait_for(m1.holds_vip, 30, "the primary to take the VIP back (preempt)")
        wait_for(lambda: not m2.holds_vip(), 10, "the secondary to let the VIP go")
        wait_for(lambda: m1.status().get("in_sync"), 20, "the primary in sync again")
    else:
        wait_for(lambda: m2.status().get("in_sync"), 20, "the secondary in sync again")
        time.sleep(6)  # longer than keepalived's master-down interval (3 x 1 s + skew)
        assert m2.holds_vip() and not m1.holds_vip(), "nopreempt: the VIP stays"
    for c in p.clients:
        assert c.renew() == (before.get(c.mac) or ip)
    no_address_twice(p)
    status = subprocess.run(p.masters["m01"].ns.cmd(
        [DSAS, "master", "status", "--json", "--inventory", str(m1.inventory), "--state-dir",
         str(m1.state), "--master", "m01"]), capture_output=True, text=True, timeout=60)
    doc = json.loads(status.stdout)
    roles = {m["name"]: m["role"] for m in doc["masters"]}
    assert sorted(roles.values()) == ["active", "standby"], doc
    assert all(m.get("peer_reachable") for m in doc["masters"]), doc


def test_a_partition_between_the_masters_gives_no_address_twice(pair_lab: Pair) -> None:
    p = pair_lab
    m1, m2 = p.masters["m01"], p.masters["m02"]
    up(p)
    before = {}
    for _ in range(2):
        c = p.client()
        before[c.mac] = start_client(c)
    p.isolate(True)  # the masters no longer see each other; the clients see both
    wait_for(m2.holds_vip, 20, "the secondary to take the VIP too (it sees no adverts)")
    wait_for(lambda: m1.status().get("lag_updates", 0) >= 0
             and not m1.status().get("in_sync"), 20, "the primary to go on alone")
    for c in p.clients:
        assert c.renew() == before[c.mac], (c.mac, c.lines())
    for _ in range(4):  # new machines ask both; each side gives only its own half
        start_client(p.client())
    by_ip = no_address_twice(p)
    l1, l2 = m1.leases(), m2.leases()
    for ip, mac in by_ip.items():
        if mac not in before:
            assert (ip in l1 and _last(ip) <= HALF) or (ip in l2 and _last(ip) > HALF), \
                (ip, mac, l1, l2)
    # Mended: the two catch each other up, and one master holds the VIP again.
    p.isolate(False)
    wait_for(lambda: m1.holds_vip() != m2.holds_vip(), 20, "one VIP holder again")
    active = m1 if m1.holds_vip() else m2
    wait_for(lambda: active.status().get("in_sync"), 20, "the pair in sync again")
    wait_for(lambda: set(by_ip) <= set(m1.leases()) and set(by_ip) <= set(m2.leases()), 20,
             "both stores to hold every lease given during the partition")
    no_address_twice(p)
    # A keepalived that dies is started again by its serve.
    pidfile = m2.state / "keepalived" / "keepalived.pid"
    old = int(pidfile.read_text())
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: "keepalived exited" in m2.log(), 20, "m02's serve to notice")
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip()
             and int(pidfile.read_text()) != old, 20, "a new keepalived on m02")


SMALL_HALVES = {"m01": {"198.18.0.4", "198.18.0.5", "198.18.0.6", "198.18.0.7"},
                "m02": {"198.18.0.8", "198.18.0.9", "198.18.0.10", "198.18.0.12",
                        "198.18.0.13"}}


@pytest.mark.parametrize("pair_lab", ["small"], indirect=True)
def test_two_islands_each_with_one_master_never_share_an_address(pair_lab: Pair) -> None:
    """The partition where it matters: the network splits in two, each master with its
    own clients. Five new machines ask the primary, whose half has four addresses: four
    get one of its half, the fifth none (pool_exhausted) — not an address of the
    secondary's half, which two machines on the other island hold meanwhile."""
    p = pair_lab
    m1, m2 = p.masters["m01"], p.masters["m02"]
    up(p)
    a = [p.client() for _ in range(5)]
    b = [p.client() for _ in range(2)]
    p.islands({"m02", *(c.mac for c in b)})
    wait_for(m2.holds_vip, 20, "the secondary to take the VIP on its island")
    wait_for(lambda: not m1.status().get("in_sync"), 20, "the primary to go on alone")
    for c in b:
        assert start_client(c) in SMALL_HALVES["m02"], c.lines()
    for c in a:
        start_client(c, wait=False)
    wait_for(lambda: sum(1 for c in a if c.address()) >= 4, 60,
             "four machines on the primary's island to get an address")
    wait_for(lambda: "reason=pool_exhausted" in m1.log().split("=== start")[-1], 30,
             "the primary to find its half full")
    got = {c.mac: c.address() for c in a if c.address()}
    assert set(got.values()) == SMALL_HALVES["m01"], got
    no_address_twice(p)
    # Mended: both stores hold all six leases, one MAC each.
    p.islands(set())
    wait_for(lambda: m1.holds_vip() != m2.holds_vip(), 20, "one VIP holder again")
    held = {c.address() for c in a + b if c.address()}
    wait_for(lambda: held <= set(m1.leases()) and held <= set(m2.leases()), 30,
             "both stores to hold every lease of both islands")
    no_address_twice(p)
