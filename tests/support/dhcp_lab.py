"""The DHCP lab: `dsas serve` in a server namespace and udhcpc in a client namespace
(test_dhcp_lab, test_dhcp_hostile, test_dhcp_durable, test_fuzz_dhcp,
test_inventory_edit_lab, test_dhcp_ipxe_vm)."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.testing import Lab, Netns, require_tool
from tests.support.dhcp_support import INVENTORY

DSAS = str(Path(sys.executable).with_name("dsas"))


@dataclass
class Server:
    """`dsas serve --only dhcp` in a namespace, restartable with the same state."""

    lab: Lab
    ns: Netns
    iface: str
    workdir: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[Any] | None = None

    def start(self) -> None:
        inv = self.workdir / "cluster.yaml"
        inv.write_text(INVENTORY)
        boot = self.workdir / "boot"  # DHCP offers only the loaders the boot root has
        boot.mkdir(exist_ok=True)
        for loader in ("undionly.kpxe", "ipxe.efi", "pxelinux.0"):
            (boot / loader).touch()
        # The log is appended to across restarts: wait for one more "dhcp listening"
        # than it has now (a restart would otherwise return on the first start's line).
        seen = self.log().count("dhcp listening") if (self.workdir / "serve.log").exists() else 0
        log = open(self.workdir / "serve.log", "a")  # noqa: SIM115 - closed with the process
        self.proc = self.ns.popen(
            [DSAS, "serve", "--only", "dhcp", "--interface", self.iface, "--inventory", str(inv),
             "--state-dir", str(self.workdir / "state"), "--boot-root",
             str(self.workdir / "boot"), "-vv", *self.args],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"dsas serve exited {self.proc.returncode}:\n{self.log()}")
            if self.log().count("dhcp listening") > seen:
                return
            time.sleep(0.1)
        pytest.fail(f"dsas serve did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None

    def log(self) -> str:
        return (self.workdir / "serve.log").read_text(errors="replace")


def set_mac(ns: Netns, iface: str, mac: str) -> None:
    ns.run(["ip", "link", "set", "dev", iface, "address", mac])


def udhcpc_script(tmp: Path, configure: bool = False) -> tuple[Path, Path]:
    """A udhcpc script that records each event; with ``configure`` it also sets the
    address (needed to renew: the REQUEST and the ACK are unicast)."""
    out = tmp / f"udhcpc-{time.monotonic_ns()}.out"
    script = tmp / f"udhcpc-{time.monotonic_ns()}.sh"
    setup = ('case "$1" in bound|renew) ip addr flush dev "$interface"; '
             'ip addr add "$ip/$mask" dev "$interface";; esac\n') if configure else ""
    script.write_text("#!/bin/sh\n" + setup +
                      f'echo "$1 ip=$ip hostname=$hostname domain=$domain router=$router '
                      f'serverid=$serverid" >> {out}\n')
    script.chmod(0o755)
    return script, out


def udhcpc_once(ns: Netns, iface: str, tmp: Path, tries: int = 3) -> dict[str, str] | None:
    """Run udhcpc until it has a lease (or gives up); the 'bound' event's fields."""
    udhcpc = require_tool("udhcpc")
    script, out = udhcpc_script(tmp)
    ns.run([udhcpc, "-f", "-q", "-n", "-i", iface, "-s", str(script), "-t", str(tries),
            "-T", "1", "-A", "1"], timeout=tries * 2 + 10, check=False)
    return last_event(out, "bound")


def last_event(out: Path, event: str) -> dict[str, str] | None:
    if not out.exists():
        return None
    found = None
    for line in out.read_text().splitlines():
        word, _, rest = line.partition(" ")
        if word == event:
            found = dict(kv.split("=", 1) for kv in rest.split())
    return found


def wait_for_value(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")
