"""An inventory edit reaches a running `dsas serve` without a restart: a real dig resolves
the new name, a real DHCP client (busybox udhcpc) with the new MAC gets its reserved
address and curl gets its dsas.conf. Also `dsas enlist` of a machine that really asked
from the discovery pool.

    master 198.18.0.1/24 (dsas serve --only dhcp,dns,http) ── client (udhcpc, dig, curl)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab.testing import Lab, require_tool
from tests.support.dhcp_lab import set_mac, udhcpc_once

DSAS = str(Path(sys.executable).with_name("dsas"))
DOMAIN = "lab.example"
INVENTORY = """\
# the lab farm: one master, web hosts (comments and order survive every edit)
cluster: {name: lab, domain: lab.example, master_address: 198.18.0.1, masters: {primary: m01}}
networks:
  lan: {cidr: 198.18.0.0/24, gateway: 198.18.0.254, dns: [198.18.0.1]}
hwtypes: {vm: {nics: [eth0]}}
images: {base: {version: v1}}
roles:
  master: {services: [], networks: [lan], image: base, hwtype: vm, boot: disk,
           bond: {mode: none}}
  web: {services: [], networks: [lan], image: base, hwtype: vm, bond: {mode: none}}
hosts:
  m01: {role: master, macs: ["52:54:00:00:00:01"], addresses: {lan: 198.18.0.1}}
  w1: {role: web, macs: ["52:54:00:00:01:01"], addresses: {lan: 198.18.0.11}}  # the first
"""
NEW_MAC = "52:54:00:00:01:02"


class Farm:
    def __init__(self, lab: Lab, tmp: Path, *serve_args: str):
        require_tool("dig")
        self.lab, self.tmp = lab, tmp
        self.master, self.client = lab.netns("iem"), lab.netns("iec")
        self.mif, self.cif = lab.veth(self.master, self.client, "198.18.0.1/24", None)
        self.inv = tmp / "cluster.yaml"
        self.inv.write_text(INVENTORY)
        self.state = tmp / "state"
        self.log = tmp / "serve.log"
        with open(self.log, "w") as log:
            self.proc: subprocess.Popen[Any] = self.master.popen(
                [DSAS, "serve", "--only", "dhcp,dns,http", "--interface", self.mif, "-i",
                 str(self.inv), "--state-dir", str(self.state), "--boot-root",
                 str(tmp / "boot"), "-v", *serve_args], stdout=log, stderr=subprocess.STDOUT)
        # a client address for dig (udhcpc flushes nothing: it only records its events)
        self.client.addr(self.cif, "198.18.0.200/24")
        for _ in range(100):  # bounded: 100 x (up to 1.1 s)
            assert self.proc.poll() is None, self.log.read_text()
            if "dhcp listening" in self.log.read_text() and self.dig("w1") == ["198.18.0.11"]:
                return
            time.sleep(0.1)
        pytest.fail(f"dsas serve did not start:\n{self.log.read_text()}")

    def dig(self, name: str) -> list[str]:
        out = self.client.run(["dig", "@198.18.0.1", "+short", "+time=1", "+tries=1",
                               f"{name}.{DOMAIN}"], check=False, timeout=10)
        return out.stdout.split() if out.returncode == 0 else ["(no reply)"]

    def fetch(self, path: str) -> tuple[str, str]:
        """(HTTP status, body) of a boot file, with curl from the client."""
        out = self.client.run([require_tool("curl"), "-s", "-m", "5", "-w", "\n%{http_code}",
                               f"http://198.18.0.1/{path}"], check=False, timeout=15)
        body, _, code = out.stdout.rpartition("\n")
        return code, body

    def dsas(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DSAS, *args, "-i", str(self.inv), "--state-dir",
                               str(self.state)], capture_output=True, text=True, timeout=60)

    def lease(self, mac: str) -> dict[str, str] | None:
        set_mac(self.client, self.cif, mac)
        return udhcpc_once(self.client, self.cif, self.tmp, tries=4)


def test_host_add_is_served_at_once_without_a_restart(lab: Lab, tmp_path: Path) -> None:
    farm = Farm(lab, tmp_path)
    pid = farm.proc.pid
    assert farm.dig("w2") == []  # not a name yet
    assert farm.fetch("hosts/w2/dsas.conf")[0] == "404"
    r = farm.dsas("host", "add", "w2", "--role", "web", "--mac", NEW_MAC)
    assert r.returncode == 0, r.stderr
    assert "w2: lan 198.18.0.2 (lowest free)" in r.stdout
    assert f"dsas serve (pid {pid}) reloaded" in r.stdout, (r.stdout, r.stderr)
    # the command returned after the serve confirmed: no waiting needed
    assert farm.dig("w2") == ["198.18.0.2"]
    code, conf = farm.fetch("hosts/w2/dsas.conf")
    assert code == "200" and "SYSTEMNAME=w2\n" in conf and "IPADDRESS0=198.18.0.2/24\n" in conf
    lease = farm.lease(NEW_MAC)
    assert lease is not None, farm.log.read_text()
    assert lease["ip"] == "198.18.0.2" and lease["hostname"] == "w2"
    assert farm.proc.poll() is None and farm.proc.pid == pid  # never restarted
    assert "Traceback" not in farm.log.read_text()
    # and back: the revert is served the same way
    r = farm.dsas("inventory", "revert")
    assert r.returncode == 0 and "reloaded" in r.stdout, r.stderr
    assert farm.dig("w2") == []
    assert farm.inv.read_text() == INVENTORY


def test_enlist_adopts_a_discovered_machine_with_the_address_it_leased(
        lab: Lab, tmp_path: Path) -> None:
    farm = Farm(lab, tmp_path, "--discovery")
    unknown = "52:54:00:00:ee:05"
    first = farm.lease(unknown)
    assert first is not None and first["hostname"] == "", farm.log.read_text()
    listed = subprocess.run([DSAS, "discovered", "--state-dir", str(farm.state)],
                            capture_output=True, text=True, timeout=30).stdout
    assert unknown in listed and first["ip"] in listed
    # the address the unknown machine holds is not free for another new host...
    r = farm.dsas("host", "add", "w4", "--role", "web", "--mac", "52:54:00:00:01:04")
    assert r.returncode == 0 and first["ip"] not in r.stdout, r.stdout
    # ...but it is the machine's own when it is enlisted
    r = farm.dsas("enlist", unknown, "w3", "--role", "web")
    assert r.returncode == 0, r.stderr
    assert f"w3: lan {first['ip']} (leased)" in r.stdout and "reloaded" in r.stdout
    assert farm.dig("w3") == [first["ip"]]
    again = farm.lease(unknown)
    assert again is not None and again["ip"] == first["ip"] and again["hostname"] == "w3"
    r = farm.dsas("enlist", "52:54:00:00:ee:99", "w4", "--role", "web")
    assert r.returncode == 1 and "is not in `dsas discovered`" in r.stderr
