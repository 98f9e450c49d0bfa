"""The master pair's lab (issue 18): two (or more) master namespaces on one bridge, each
running a real `dsas serve --master` with Debian's keepalived, and busybox udhcpc
clients in their own namespaces; shared by the pair's lab tests."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
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


def start_client(c: Client, wait: bool = True) -> str:
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
    # True, False (preempt), "small" (a /28), "join" (a third host), "partner_down" (a /28),
    # "guests" (netbooting QEMU guests' hosts)
    param = getattr(request, "param", True)
    preempt = "small" if param == "partner_down" else (True if param in ("join", "guests")
                                                       else param)
    inv = tmp_path / "cluster.yaml"
    inv.write_text(pair_inventory(preempt=bool(preempt), small=preempt == "small",
                                  third=param == "join", partner_down=param == "partner_down",
                                  guests=param == "guests"))
    bridge = lab.netns("mbr")
    lab.bridge(bridge)
    masters, ports = {}, {}
    for name, addr in ADDRESSES.items():
        ns = lab.netns(name)
        prefix = 28 if preempt == "small" else 24
        port, iface = lab.veth(bridge, ns, None, f"{addr}/{prefix}")
        bridge.run(["ip", "link", "set", port, "master", "br0"])
        # each master its own inventory file (the standby's is mirrored from the active)
        (tmp_path / name).mkdir()
        own = tmp_path / name / "cluster.yaml"
        own.write_bytes(inv.read_bytes())
        masters[name] = Master(lab, ns, iface, name, tmp_path / name, own)
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


def up(p: Pair) -> None:
    m1, m2 = p.masters["m01"], p.masters["m02"]
    m1.start(resync_wait=0.5)  # the first of the pair: no peer to pull from yet
    wait_for(m1.holds_vip, 30, "the primary to take the VIP")
    m2.start()
    wait_for(lambda: m1.status().get("in_sync"), 30, "the primary in sync with the secondary")
    assert not m2.holds_vip()


def no_address_twice(p: Pair) -> dict[str, str]:
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



def add_master(p: Pair, name: str, address: str) -> Master:
    """Another master namespace on the bridge (not started: `dsas master join` does)."""
    ns = p.lab.netns(name)
    port, iface = p.lab.veth(p.bridge, ns, None, f"{address}/24")
    p.bridge.run(["ip", "link", "set", port, "master", "br0"])
    d = p.tmp / name
    d.mkdir()
    m = Master(p.lab, ns, iface, name, d, d / "cluster.yaml")
    p.masters[name] = m
    p.ports[name] = port
    return m


def start_sshd(m: Master, address: str, authorized: Path, private: Sequence[str] = ()
               ) -> str:
    """A real sshd in the master's namespace, its own host key; that key's base64.

    ``private``: directories on which sshd (and so every SSH session) gets its own empty
    tmpfs, in a private mount namespace: what a session writes there only it sees."""
    from lab.sshfarm import SSHD_CONFIG
    d = m.dir / "sshd"
    d.mkdir()
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f",
                    str(d / "ssh_host_ed25519_key")], check=True, timeout=30,
                   capture_output=True)
    conf = d / "sshd_config"
    conf.write_text(SSHD_CONFIG.format(address=address, dir=d, authorized=authorized))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation dir
    log = open(d / "sshd.log", "ab")  # noqa: SIM115 - the child owns it
    argv = [require_tool("sshd"), "-D", "-e", "-f", str(conf)]
    if private:
        mounts = "".join(f"mount -t tmpfs dsas-lab {shlex.quote(d)} && " for d in private)
        argv = [require_tool("unshare"), "-m", "--propagation", "private", "sh", "-c",
                f"{mounts}exec {shlex.join(argv)}"]
    m.ns.popen(argv, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    m.ns.wait_port(22, "tcp")
    return (d / "ssh_host_ed25519_key.pub").read_text().split()[1]
