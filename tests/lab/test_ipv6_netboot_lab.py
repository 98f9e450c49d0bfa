"""Netboot over IPv6 only (issue 22) with real clients: curl over HTTP and TFTP and
rdisc6 in a lab namespace with no IPv4 address (units in tests/unit/test_ipv6_netboot.py)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from lab.testing import Lab, Netns, require_tool
from tests.support.netboot6_support import INVENTORY, MASTER6


def test_tftp_http_and_reports_over_ipv6_only(lab: Lab, tmp_path: Path) -> None:
    """A client with only the host's IPv6 address (no IPv4 on its side of the link):
    boot.ipxe (found by its IPv6 address) and a file over HTTP, the same file over TFTP,
    a ready report; rdisc6 sees the M flag (from w1's MAC; not from an unknown one)."""
    curl, rdisc6 = require_tool("curl"), require_tool("rdisc6")
    inv = tmp_path / "lab.yaml"
    inv.write_text(INVENTORY)
    boot = tmp_path / "boot"
    (boot / "images" / "base" / "v1").mkdir(parents=True)
    payload = bytes(range(256)) * 40  # several TFTP blocks
    (boot / "ipxe.efi").write_bytes(payload)
    srv, cli = lab.netns("nb6"), lab.netns("nb6c")
    lab.bridge(srv, "br0", "198.18.0.1/24")
    srv.run(["ip", "-6", "addr", "add", f"{MASTER6}/64", "dev", "br0", "nodad"])
    ifc = lab.plug(srv, "br0", cli, "198.18.0.9/24")
    cli.run(["ip", "link", "set", ifc, "down"])
    cli.run(["ip", "link", "set", ifc, "address", "52:54:00:00:01:01"])  # w1's
    cli.run(["ip", "link", "set", ifc, "up"])
    cli.run(["ip", "-4", "addr", "flush", "dev", ifc])
    cli.run(["ip", "-6", "addr", "add", "2001:db8:18::11/64", "dev", ifc, "nodad"])
    log = tmp_path / "serve.log"
    with log.open("wb") as f:
        serve = srv.popen([sys.executable, "-m", "provision", "serve", "--only",
                           "tftp,http,ra,dhcp6", "--interface", "br0", "-i", str(inv),
                           "--state-dir", str(tmp_path / "state"), "--boot-root", str(boot),
                           "-v"], stdout=f, stderr=subprocess.STDOUT)
    srv.wait_port(80, "tcp")
    srv.wait_port(69, "udp")
    try:
        base = f"http://[{MASTER6}]"
        out = cli.run([curl, "-gfsS", "-m", "10", f"{base}/boot.ipxe"], check=False,
                      timeout=20)
        assert out.returncode == 0, out.stderr + log.read_text()[-2000:]
        assert f"dsas.url={base}/hosts/w1/dsas.conf" in out.stdout, out.stdout
        got = cli.run([curl, "-gfsS", "-m", "10", "-o", str(tmp_path / "h"),
                       f"{base}/ipxe.efi"], check=False, timeout=20)
        assert got.returncode == 0 and (tmp_path / "h").read_bytes() == payload, got.stderr
        got = cli.run([curl, "-gfsS", "-m", "20", "-o", str(tmp_path / "t"),
                       f"tftp://[{MASTER6}]/ipxe.efi"], check=False, timeout=30)
        assert got.returncode == 0, got.stderr + log.read_text()[-2000:]
        assert (tmp_path / "t").read_bytes() == payload
        missing = cli.run([curl, "-gfsS", "-m", "10", "-o", "/dev/null",
                           f"tftp://[{MASTER6}]/nothing-here"], check=False, timeout=20)
        assert missing.returncode != 0  # the TFTP error came back over IPv6
        report = cli.run([curl, "-gfsS", "-m", "10", "-H", "Content-Type: application/json",
                          "--data", '{"host": "w1", "stage": "ready"}',
                          f"{base}/api/v1/events"], check=False, timeout=20)
        assert report.returncode == 0, report.stderr + log.read_text()[-2000:]
        def rdisc(ns: Netns, ifname: str) -> str:
            deadline = time.monotonic() + 10  # until its link-local address is usable
            while ns.run(["ip", "-6", "addr", "show", "dev", ifname, "tentative"]).stdout:
                assert time.monotonic() < deadline, "link-local address still tentative"
                time.sleep(0.1)
            out = None
            for _ in range(20):
                out = ns.run([rdisc6, "-1", "-w", "500", ifname], check=False, timeout=10)
                if out.returncode == 0:
                    break
            assert out is not None and out.returncode == 0, out.stdout + out.stderr
            return out.stdout

        text = rdisc(cli, ifc)
        assert re.search(r"Stateful address conf\.\s+:\s+Yes", text), text
        assert "2001:db8:18::/64" in text
        other = lab.netns("nb6o")  # a MAC that is nobody's in the inventory
        oifc = lab.plug(srv, "br0", other, "198.18.0.10/24")
        text = rdisc(other, oifc)
        assert re.search(r"Stateful address conf\.\s+:\s+No", text), text
        assert "2001:db8:18::/64" in text  # the prefix is still on-link
        assert serve.poll() is None
        text = log.read_text()
        assert "tftp: served ipxe.efi to 2001:db8:18::11 (host=w1)" in text, text[-3000:]
        assert "Traceback" not in text
    finally:
        lab.stop(serve)
