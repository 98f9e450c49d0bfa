"""DHCPv6 with a real client: ISC dhclient -6 against `dsas serve --only dhcp6` in lab
namespaces gets its host's inventory IPv6 address, also after a fuzzed run (the codec
and policy units are in tests/unit/test_dhcp6.py)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.testing import Lab, Netns, require_tool
from tests.support.dhcp6_support import (
    SEEDS,
    W1_MAC,
    mutated,
)
from tests.support.fuzzing import fuzz_cases
from tests.support.ipv6_support import INVENTORY
from tests.support.netns_thread import in_netns


def serve_dhcp6(lab: Lab, tmp_path: Path) -> tuple[Netns, str, Path, subprocess.Popen[bytes]]:
    inv = tmp_path / "lab.yaml"
    inv.write_text(INVENTORY)
    srv, cli = lab.netns("d6"), lab.netns("d6c")
    lab.bridge(srv, "br0", "198.18.0.1/24")
    srv.run(["ip", "-6", "addr", "add", "2001:db8:18::1/64", "dev", "br0", "nodad"])
    ifc = lab.plug(srv, "br0", cli, "198.18.0.9/24")
    cli.run(["ip", "link", "set", ifc, "down"])
    cli.run(["ip", "link", "set", ifc, "address", W1_MAC])
    cli.run(["ip", "link", "set", ifc, "up"])
    time.sleep(2.5)  # link-local addresses finish duplicate address detection
    log = tmp_path / "serve.log"
    with log.open("wb") as f:
        serve = srv.popen([sys.executable, "-m", "provision", "serve", "--only", "dhcp6",
                           "--interface", "br0", "-i", str(inv), "--state-dir",
                           str(tmp_path / "state"), "-v"], stdout=f, stderr=subprocess.STDOUT)
    srv.wait_port(547, "udp")
    return cli, ifc, log, serve


def dhclient6(lab: Lab, cli: Netns, ifc: str, tmp_path: Path, log: Path,
              serve: subprocess.Popen[bytes]) -> str:
    dhclient = require_tool("dhclient")
    out = tmp_path / "dhclient.out"
    script = tmp_path / "dhclient.sh"
    script.write_text(f'#!/bin/sh\necho "$reason ip6=$new_ip6_address" >> {out}\n')
    script.chmod(0o755)
    proc = cli.popen([dhclient, "-6", "-d", "-1", "-D", "LL", "-sf", str(script), "-lf",
                      str(tmp_path / "d6.leases"), "-pf", str(tmp_path / "d6.pid"), ifc],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while "BOUND6" not in (out.read_text() if out.exists() else ""):
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            assert serve.poll() is None, log.read_text()[-2000:]
            time.sleep(0.2)
    finally:
        lab.stop(proc)
    return out.read_text()


@pytest.mark.fuzz
def test_fuzzed_dhcp6_server_still_answers_dhclient(lab: Lab, tmp_path: Path) -> None:
    """fuzz_cases() mutated messages to the running server (unicast and multicast), then
    a real dhclient -6 still gets its address, and the log has no traceback."""
    cli, ifc, log, serve = serve_dhcp6(lab, tmp_path)
    rng = random.Random(22)
    n = fuzz_cases()

    def blast() -> None:
        idx = socket.if_nametoindex(ifc)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            for i in range(n):
                dst = ("ff02::1:2", 547, 0, idx) if i % 2 else ("2001:db8:18::1", 547, 0, 0)
                try:
                    s.sendto(mutated(rng, SEEDS), dst)
                except OSError:
                    time.sleep(0.01)  # ENOBUFS: let the queue drain
                if i % 200 == 0:
                    time.sleep(0.005)

    in_netns(cli.name, blast, timeout=300)
    assert serve.poll() is None, log.read_text()[-2000:]
    deadline = time.monotonic() + 20  # the server got them: it answered some
    while log.read_text().count("dhcp6 ADVERTISE") < 10:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    assert "BOUND6 ip6=2001:db8:18::11" in dhclient6(lab, cli, ifc, tmp_path, log, serve)
    assert "Traceback" not in log.read_text()


def test_dhclient6_gets_its_inventory_address(lab: Lab, tmp_path: Path) -> None:
    cli, ifc, log, serve = serve_dhcp6(lab, tmp_path)
    assert "BOUND6 ip6=2001:db8:18::11" in dhclient6(lab, cli, ifc, tmp_path, log, serve)
    assert "dhcp6 REPLY 2001:db8:18::11 host=w1 mac=52:54:00:00:01:01" in log.read_text()
