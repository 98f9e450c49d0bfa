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
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from lab.testing import Lab, Netns, require_tool, wait_for
from provision.state import StateStore
from provision.state.leases import bound
from tests.support.master_support import pair_inventory

DSAS = str(Path(sys.executable).with_name("dsas"))
VIP = "198.18.0.3"
ADDRESSES = {"m01": "198.18.0.1", "m02": "198.18.0.2"}
HALF = 127  # the pool is .1-.254: the primary's half .1-.127, the secondary's .128-.254
BOOT = ("undionly.kpxe", "ipxe.efi", "pxelinux.0")


@dataclass
class Master:
    lab: Lab
    ns: Netns
    iface: str
    name: str
    dir: Path
    inventory: Path
    proc: subprocess.Popen[Any] | None = None
    starts: int = 0

    def start(self, resync_wait: float = 10) -> None:
        boot = self.dir / "boot"
        boot.mkdir(parents=True, exist_ok=True)
        for loader in BOOT:
            (boot / loader).touch()
        self.starts += 1
        log = open(self.dir / "serve.log", "a")  # noqa: SIM115 - closed with the process
        log.write(f"\n=== start {self.starts}\n")
        log.flush()
        self.proc = self.ns.popen(
            [DSAS, "serve", "--only", "dhcp,http,dns", "--http-port", "8080", "--interface",
             self.iface, "--inventory", str(self.inventory), "--state-dir", str(self.state),
             "--boot-root", str(boot), "--discovery", "--master", self.name,
             "--resync-wait", str(resync_wait), "-vv"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self._started(), 30, f"{self.name}'s dsas serve to start")

    def _started(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"{self.name}: dsas serve exited {self.proc.returncode}:\n{self.log()}")
        return "dhcp listening" in self.log().split("=== start")[-1]

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def log(self) -> str:
        text = (self.dir / "serve.log").read_text(errors="replace")
        ka = self.state / "keepalived.log"
        return text + ("\n--- keepalived\n" + ka.read_text(errors="replace")[-3000:]
                       if ka.exists() else "")

    def holds_vip(self) -> bool:
        out = self.ns.run(["ip", "-o", "-4", "addr", "show", "dev", self.iface]).stdout
        return f" {VIP}/" in out

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state / "master-status.json").read_text()))
        except (OSError, ValueError):
            return {}

    def leases(self) -> dict[str, str]:
        """ip -> MAC of every live bound lease in this master's store."""
        store = StateStore(self.state)
        try:
            now = time.time()
            return {str(IPv4Address(b.ip)): b.mac for b in bound(store) if b.expires > now}
        finally:
            store.close()


@dataclass
class Client:
    ns: Netns
    iface: str
    mac: str
    out: Path
    port: str
    proc: subprocess.Popen[Any] | None = None
    events: list[str] = field(default_factory=list)

    def lines(self) -> list[dict[str, str]]:
        if not self.out.exists():
            return []
        rows = []
        for line in self.out.read_text().splitlines():
            word, _, rest = line.partition(" ")
            rows.append({"event": word, **dict(kv.split("=", 1) for kv in rest.split())})
        return rows

    def address(self) -> str | None:
        got = [r for r in self.lines() if r["event"] in ("bound", "renew")]
        return got[-1]["ip"] if got else None

    def renew(self) -> str:
        """SIGUSR1 (udhcpc: renew now) until a new bound/renew event; its address."""
        before = len(self.lines())
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGUSR1)
            t = time.monotonic() + 4
            while time.monotonic() < t:
                new = [r for r in self.lines()[before:] if r["event"] in ("bound", "renew")]
                if new:
                    return new[-1]["ip"]
                time.sleep(0.1)
        pytest.fail(f"{self.mac}: no renewal in 40 s: {self.lines()}")


def _client(lab: Lab, bridge_ns: Netns, tmp: Path, i: int) -> Client:
    ns = lab.netns("mcli")
    port, iface = lab.veth(bridge_ns, ns)
    bridge_ns.run(["ip", "link", "set", port, "master", "br0"])
    mac = f"52:54:00:00:ee:{i:02x}"
    ns.run(["ip", "link", "set", "dev", iface, "address", mac])
    out, script = tmp / f"client{i}.out", tmp / f"client{i}.sh"
    script.write_text(
        "#!/bin/sh\n"
        'case "$1" in bound|renew) ip addr flush dev "$interface"; '
        'ip addr add "$ip/$mask" dev "$interface";; esac\n'
        f'echo "$1 ip=$ip serverid=$serverid" >> {out}\n')
    script.chmod(0o755)
    return Client(ns, iface, mac, out, port)


def _start_client(c: Client, wait: bool = True) -> str:
    c.proc = c.ns.popen([require_tool("udhcpc"), "-f", "-i", c.iface, "-s",
                         str(c.out.with_suffix(".sh")), "-t", "20", "-T", "1", "-A", "1"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return wait_for(c.address, 40, f"{c.mac}'s first lease") if wait else ""


@dataclass
class Pair:
    lab: Lab
    bridge: Netns
    masters: dict[str, Master]
    ports: dict[str, str]  # master -> its port on the bridge
    tmp: Path
    clients: list[Client] = field(default_factory=list)

    def client(self) -> Client:
        c = _client(self.lab, self.bridge, self.tmp, len(self.clients) + 1)
        self.clients.append(c)
        self.ports[c.mac] = c.port
        return c

    def islands(self, second: set[str]) -> None:
        """Split the segment: the ports named (master or client MAC) move to a second
        bridge, the rest stay on br0; an empty set puts everything back on br0."""
        if second and not self.bridge.run(["ip", "link", "show", "br1"], check=False) \
                .returncode == 0:
            self.lab.bridge(self.bridge, "br1")
        for who, port in self.ports.items():
            self.bridge.run(["ip", "link", "set", port, "master",
                             "br1" if who in second else "br0"])

    def isolate(self, on: bool) -> None:
        """Cut (or mend) the link between the two masters only: isolated bridge ports
        do not forward to each other, and both still reach every client."""
        for name in self.masters:
            self.bridge.run(["bridge", "link", "set", "dev", self.ports[name], "isolated",
                             "on" if on else "off"])

    def logs(self) -> str:
        return "\n".join(f"===== {m.name}\n{m.log()[-6000:]}" for m in self.masters.values())


@pytest.fixture
def pair_lab(lab: Lab, tmp_path: Path, request: pytest.FixtureRequest) -> Pair:
    require_tool("keepalived")
    require_tool("udhcpc")
    require_tool("bridge")
    preempt = getattr(request, "param", True)
    inv = tmp_path / "cluster.yaml"
    inv.write_text(pair_inventory(preempt=preempt, small=preempt == "small"))
    bridge = lab.netns("mbr")
    lab.bridge(bridge)
    masters, ports = {}, {}
    for name, addr in ADDRESSES.items():
        ns = lab.netns(name)
        prefix = 28 if preempt == "small" else 24
        port, iface = lab.veth(bridge, ns, None, f"{addr}/{prefix}")
        bridge.run(["ip", "link", "set", port, "master", "br0"])
        masters[name] = Master(lab, ns, iface, name, tmp_path / name, inv)
        ports[name] = port
    # The pair key: made on the primary by `dsas master key`, copied to the secondary.
    out = subprocess.run([DSAS, "master", "key", "--inventory", str(inv), "--state-dir",
                          str(masters["m01"].state)], capture_output=True, text=True,
                         timeout=60, check=True)
    key = masters["m01"].state / "master-pair.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert key.read_text().strip() not in out.stdout + out.stderr  # never printed
    masters["m02"].state.mkdir(parents=True)
    (masters["m02"].state / "master-pair.key").write_bytes(key.read_bytes())
    os.chmod(masters["m02"].state / "master-pair.key", 0o600)
    return Pair(lab, bridge, masters, ports, tmp_path)


def _up(p: Pair) -> None:
    m1, m2 = p.masters["m01"], p.masters["m02"]
    m1.start(resync_wait=0.5)  # the first of the pair: no peer to pull from yet
    wait_for(m1.holds_vip, 30, "the primary to take the VIP")
    m2.start()
    wait_for(lambda: m1.status().get("in_sync"), 30, "the primary in sync with the secondary")
    assert not m2.holds_vip()


def _no_address_twice(p: Pair) -> dict[str, str]:
    """What the clients hold, checked against both stores: one MAC per address."""
    held = {c.mac: c.address() for c in p.clients}
    addrs = [a for a in held.values() if a]
    assert len(addrs) == len(set(addrs)), f"an address given twice: {held}"
    by_ip = {a: mac for mac, a in held.items() if a}
    for m in p.masters.values():
        for ip, mac in m.leases().items():
            if ip in by_ip:
                assert by_ip[ip] == mac, f"{m.name} has {ip} for {mac}, a client holds it " \
                                         f"as {by_ip[ip]}"
    l1, l2 = p.masters["m01"].leases(), p.masters["m02"].leases()
    for ip in set(l1) & set(l2):
        assert l1[ip] == l2[ip], f"{ip}: m01 says {l1[ip]}, m02 says {l2[ip]}"
    return by_ip


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
    _up(p)
    before = {}
    for _ in range(3):
        c = p.client()
        before[c.mac] = _start_client(c)
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
    ip = _start_client(late)
    assert _last(ip) > HALF, f"alone, the secondary gave {ip} outside its half"
    assert ip not in before.values()
    code = p.clients[0].ns.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                "--max-time", "5", f"http://{VIP}:8080/"], check=False)
    assert code.stdout.strip() not in ("", "000"), "no HTTP answer from the VIP"
    dig = p.clients[0].ns.run([require_tool("dig"), "+short", "+time=2", "+tries=3",
                               f"@{VIP}", "w1.lab.example"], check=False)
    assert dig.stdout.strip() == "198.18.0.11", ("no DNS answer from the VIP", dig)
    _no_address_twice(p)

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
    _no_address_twice(p)
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
    _up(p)
    before = {}
    for _ in range(2):
        c = p.client()
        before[c.mac] = _start_client(c)
    p.isolate(True)  # the masters no longer see each other; the clients see both
    wait_for(m2.holds_vip, 20, "the secondary to take the VIP too (it sees no adverts)")
    wait_for(lambda: m1.status().get("lag_updates", 0) >= 0
             and not m1.status().get("in_sync"), 20, "the primary to go on alone")
    for c in p.clients:
        assert c.renew() == before[c.mac], (c.mac, c.lines())
    for _ in range(4):  # new machines ask both; each side gives only its own half
        _start_client(p.client())
    by_ip = _no_address_twice(p)
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
    _no_address_twice(p)
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
    _up(p)
    a = [p.client() for _ in range(5)]
    b = [p.client() for _ in range(2)]
    p.islands({"m02", *(c.mac for c in b)})
    wait_for(m2.holds_vip, 20, "the secondary to take the VIP on its island")
    wait_for(lambda: not m1.status().get("in_sync"), 20, "the primary to go on alone")
    for c in b:
        assert _start_client(c) in SMALL_HALVES["m02"], c.lines()
    for c in a:
        _start_client(c, wait=False)
    wait_for(lambda: sum(1 for c in a if c.address()) >= 4, 60,
             "four machines on the primary's island to get an address")
    wait_for(lambda: "reason=pool_exhausted" in m1.log().split("=== start")[-1], 30,
             "the primary to find its half full")
    got = {c.mac: c.address() for c in a if c.address()}
    assert set(got.values()) == SMALL_HALVES["m01"], got
    _no_address_twice(p)
    # Mended: both stores hold all six leases, one MAC each.
    p.islands(set())
    wait_for(lambda: m1.holds_vip() != m2.holds_vip(), 20, "one VIP holder again")
    held = {c.address() for c in a + b if c.address()}
    wait_for(lambda: held <= set(m1.leases()) and held <= set(m2.leases()), 30,
             "both stores to hold every lease of both islands")
    _no_address_twice(p)
