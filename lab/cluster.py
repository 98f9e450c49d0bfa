"""A whole lab cluster: a master namespace running `dsas serve`, and PXE-booting guests.

Shared by the lab tests and `dsas demo`:

    master netns:  br0 (inside network, the master address)
                   vlanN taps via lab.vlan (tagged networks' gateway addresses)
                   `dsas serve` (DHCP, TFTP, HTTP, DNS, RA) on br0
    guests:        qemu-system-x86_64 -accel tcg, two NICs on taps in br0, fixed MACs
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.inventory.model import Inventory
from provision.state import StateError
from provision.state import events as stored_events

from . import vlan
from .netns import Lab, LabError, Netns
from .qemu import Guest, GuestSpec


@dataclass
class NodeStatus:
    """A lab node as the master last recorded it."""

    host: str
    stage: str | None
    address: str | None
    reason: str | None
    when: str | None


@dataclass(frozen=True)
class StageEvent:
    """One boot stage a node reported."""

    stage: str
    ts: float  # wall clock, as the master recorded it
    detail: str | None


@dataclass
class LabCluster:
    """A master namespace running `dsas serve`, and the guests it boots."""

    lab: Lab
    inventory: Inventory
    inventory_path: Path
    workdir: Path
    boot_root: Path
    serve_args: list[str] = field(default_factory=list)
    ns: Netns | None = None
    serve_proc: subprocess.Popen[Any] | None = None
    guests: dict[str, Guest] = field(default_factory=dict)

    @property
    def master(self) -> Netns:
        if self.ns is None:
            raise LabError("the master is not set up")
        return self.ns

    def setup_network(self) -> None:
        """The master namespace, its bridge and addresses, and the VLAN ports."""
        inv = self.inventory
        self.ns = self.lab.netns("master")
        master_net = inv.network_of(inv.cluster.master_address)
        if master_net is None or master_net.vlan is not None:
            raise LabError("the lab's master address must be on an untagged network")
        self.lab.bridge(self.ns, "br0", f"{inv.cluster.master_address}/{master_net.prefixlen}")
        for net in inv.networks.values():
            if net.vlan is None or net.gateway is None:
                continue
            trunk_port, trunk = self.lab.veth(self.ns, self.ns)
            self.ns.run(["ip", "link", "set", trunk_port, "master", "br0"])
            tap = f"vlan{net.vlan}"
            self.ns.popen(vlan.relay_argv(trunk, tap, net.vlan),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _wait(lambda t=tap: self.ns is not None and
                  self.ns.run(["ip", "link", "show", t], check=False).returncode == 0,
                  10, f"VLAN port {tap}")
            self.ns.addr(tap, f"{net.gateway}/{net.prefixlen}")
            self.ns.up(tap)
        self.workdir.mkdir(parents=True, exist_ok=True)

    def start_serve(self, timeout: float = 30) -> None:
        argv = [sys.executable, "-m", "provision", "serve", "-i", str(self.inventory_path),
                "--interface", "br0", "--state-dir", str(self.workdir / "state"),
                "--boot-root", str(self.boot_root), *self.serve_args]
        with (self.workdir / "serve.log").open("wb") as log:
            self.serve_proc = self.master.popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: self._healthy(), timeout, "dsas serve's /healthz",
              lambda: self.serve_proc is not None and self.serve_proc.poll() is not None)
        if self.serve_proc.poll() is not None:
            raise LabError(f"dsas serve exited ({self.serve_proc.returncode}); see "
                           f"{self.workdir / 'serve.log'}")

    def _healthy(self) -> bool:
        url = f"http://{self.inventory.cluster.master_address}:{self.inventory.cluster.http_port}"
        out = self.master.run(["curl", "-sf", "-m", "2", f"{url}/healthz"], check=False,
                              timeout=10)
        return out.returncode == 0

    def add_guest(self, name: str, macs: list[str], firmware: str = "bios",
                  memory_mib: int = 384, nic_model: str = "virtio-net-pci") -> Guest:
        taps = [self.lab.tap(self.master, "br0") for _ in macs]
        spec = GuestSpec(name, macs, firmware=firmware, memory_mib=memory_mib, shell=True,
                         nic_model=nic_model)
        guest = Guest(self.lab, self.master, spec, taps, self.workdir / "guests")
        self.guests[name] = guest
        return guest

    def nodes(self) -> dict[str, NodeStatus]:
        """The master's view of every host (GET /api/v1/nodes)."""
        c = self.inventory.cluster
        out = self.master.run(["curl", "-sf", "-m", "3",
                               f"http://{c.master_address}:{c.http_port}/api/v1/nodes"],
                              check=False, timeout=10)
        if out.returncode != 0:
            return {}
        doc = json.loads(out.stdout)
        return {n["host"]: NodeStatus(n["host"], n.get("stage"), n.get("address"),
                                      n.get("reason"), n.get("when"))
                for n in doc.get("nodes", [])}

    def stage_history(self, since: float = 0.0) -> dict[str, list[StageEvent]]:
        """Every boot event the master recorded since ``since`` (wall clock), per host,
        oldest first, with its own timestamp: read from the master's state database
        (read-only), which keeps them all, where /api/v1/nodes gives the last only."""
        db = self.workdir / "state" / "state.db"
        if not db.exists():
            return {}
        try:
            rows = stored_events.read_only_since(db, since)
        except StateError:  # not created yet, or busy: the next poll sees it
            return {}
        out: dict[str, list[StageEvent]] = {}
        for e in rows:
            out.setdefault(e.host, []).append(StageEvent(e.stage, e.ts, e.reason))
        return out

    def wait_stages(self, hosts: list[str], stages: tuple[str, ...], timeout: float,
                    on_poll: Any = None) -> dict[str, NodeStatus]:
        """Wait (bounded) until every host reports one of ``stages``."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = self.nodes()
            if on_poll:
                on_poll(nodes)
            if all(h in nodes and nodes[h].stage in stages for h in hosts):
                return nodes
            if self.serve_proc is not None and self.serve_proc.poll() is not None:
                raise LabError(f"dsas serve exited ({self.serve_proc.returncode}):\n"
                               f"{self.serve_log()[-2000:]}")
            if time.monotonic() > deadline:
                state = {h: nodes[h].stage if h in nodes else None for h in hosts}
                raise TimeoutError(f"hosts did not reach {stages} in {timeout:.0f}s: {state}")
            time.sleep(1)

    def serve_log(self) -> str:
        try:
            return (self.workdir / "serve.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        for g in self.guests.values():
            g.stop()
        if self.serve_proc is not None:
            self.lab.stop(self.serve_proc)


def _wait(ok: Any, timeout: float, what: str, dead: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if dead is not None and dead():
            return
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
