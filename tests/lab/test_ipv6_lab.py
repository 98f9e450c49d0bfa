"""IPv6 against a real `dsas serve` in a lab namespace: rdisc6 gets the prefix, dig gets
AAAA (the inventory, DNS, dsas.conf and RA units are in tests/unit/test_ipv6.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lab.testing import Lab, require_tool
from tests.support.ipv6_support import INVENTORY


def test_serve_advertises_the_prefix_and_answers_aaaa(lab: Lab, tmp_path: Path) -> None:
    rdisc6, dig = require_tool("rdisc6"), require_tool("dig")
    inv = tmp_path / "lab.yaml"
    inv.write_text(INVENTORY)
    srv, cli = lab.netns("ra6"), lab.netns("ra6c")
    lab.bridge(srv, "br0", "198.18.0.1/24")
    ifc = lab.plug(srv, "br0", cli, "198.18.0.9/24")
    time.sleep(2.5)  # link-local addresses finish duplicate address detection
    serve = srv.popen([sys.executable, "-m", "provision", "serve", "--only", "ra,dns",
                       "--interface", "br0", "-i", str(inv), "--state-dir",
                       str(tmp_path / "state")])
    out = None
    for _ in range(20):  # the service needs a moment to bind
        out = cli.run([rdisc6, "-1", "-w", "500", ifc], check=False, timeout=10)
        if out.returncode == 0:
            break
    assert serve.poll() is None
    assert out is not None and out.returncode == 0, out.stdout + out.stderr
    assert "Prefix" in out.stdout and "2001:db8:18::/64" in out.stdout, out.stdout
    assert "0 (0x00000000) seconds" in out.stdout  # router lifetime: still not a router
    srv.wait_port(53, "udp")
    aaaa = cli.run([dig, "+short", "+time=2", "+tries=3", "@198.18.0.1", "AAAA",
                    "w1.lab.example"], timeout=30)
    assert aaaa.stdout.split() == ["2001:db8:18::11"], aaaa.stdout
    rev = cli.run([dig, "+short", "+time=2", "+tries=3", "@198.18.0.1", "-x",
                   "2001:db8:18::11"], timeout=30)
    assert rev.stdout.split() == ["w1.lab.example."], rev.stdout
