"""Rough edges of the services (issue 14): a clean DNS stop, the RA service on an
interface without IPv6, one log line per file served."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import time
from pathlib import Path

import pytest

from lab.bootfiles import inventory as bootfiles_inventory
from lab.testing import Lab, require_tool
from provision.services import dns as dns_service
from provision.services import ra as ra_service
from provision.services.base import ServeContext
from tests.support.bootfiles_lab import CLI, HTTP, SRV, start_lab
from tests.support.dns_helpers import inventory as dns_inventory
from tests.support.dns_lab import inside


@pytest.mark.parametrize("batch", [True, False], ids=["recvmmsg", "recvfrom"])
def test_a_clean_dns_stop_logs_no_short_datagram(lab: Lab, tmp_path: Path, batch: bool,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """shutdown() wakes the receive loop with an empty datagram from 0.0.0.0:0: that is
    the stop, not a short query (it used to be logged and counted as one)."""
    ns = lab.netns("dnsstop")
    lab.bridge(ns, "br0", "198.18.0.1/24")
    ctx = ServeContext(inventory=dns_inventory(3), interfaces=[], state_dir=tmp_path / "st",
                       boot_root=tmp_path, bind_address=ipaddress.IPv4Address("198.18.0.1"))
    svc = dns_service.DnsService(ctx, batch=batch)
    caplog.set_level(logging.INFO, logger="provision.services.dns")
    with inside(ns):
        svc.start()
    assert svc.alive()
    svc.stop()
    assert not svc.alive()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == []
    assert ctx.metrics.get(dns_service.M_DROPPED, reason="short") == 0


def test_ra_says_once_that_ipv6_is_disabled(lab: Lab, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    ns = lab.netns("ra6off")
    lab.bridge(ns, "br0", "198.18.4.1/24")
    sysctl = ["sysctl", "-qw"]

    def ipv6(off: int) -> None:
        ns.run([*sysctl, f"net.ipv6.conf.br0.disable_ipv6={off}"])

    ipv6(1)
    ctx = ServeContext(inventory=bootfiles_inventory(), interfaces=["br0"],
                       state_dir=tmp_path / "st", boot_root=tmp_path)
    svc = ra_service.RaService(ctx)
    caplog.set_level(logging.INFO, logger="provision.services.ra")
    with inside(ns):
        svc.start()
        try:
            for _ in range(3):  # the periodic look, three times: still one warning
                svc._check_ipv6()
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(said) == 1, said
            assert "IPv6 is disabled on br0" in said[0]
            assert "sysctl -w net.ipv6.conf.br0.disable_ipv6=0" in said[0]
            assert ctx.metrics.get("dsas_ra_ipv6_disabled", interface="br0") == 1
            ipv6(0)
            svc._check_ipv6()
            assert any("IPv6 is back on br0" in r.getMessage() for r in caplog.records)
            assert ctx.metrics.get("dsas_ra_ipv6_disabled", interface="br0") == 0
            ipv6(1)
            svc._check_ipv6()
            svc._check_ipv6()
            said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(said) == 2  # once more after it came back and went away again
            assert svc.alive()
        finally:
            svc.stop()


def test_ra_is_quiet_when_ipv6_is_on(lab: Lab, tmp_path: Path,
                                     caplog: pytest.LogCaptureFixture) -> None:
    ns = lab.netns("ra6on")
    lab.bridge(ns, "br0", "198.18.4.1/24")
    ctx = ServeContext(inventory=bootfiles_inventory(), interfaces=["br0"],
                       state_dir=tmp_path / "st", boot_root=tmp_path)
    svc = ra_service.RaService(ctx)
    caplog.set_level(logging.INFO, logger="provision.services.ra")
    with inside(ns):
        svc.start()
        svc.stop()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


SERVED = re.compile(r"(tftp|http): served (\S+) to (\S+) \(host=(\S+)\): (\d+) bytes in "
                    r"(\d+\.\d{3}) s$")


def test_each_file_served_is_one_line_with_host_file_bytes_and_seconds(
        lab: Lab, tmp_path: Path) -> None:
    require_tool("tftp")
    blob = os.urandom(300_000)
    env = start_lab(lab, tmp_path, files={"blob.bin": blob})  # `dsas serve -v`
    out = tmp_path / "out"
    r = env.cli.run(["tftp", SRV, "-m", "octet", "-c", "get", "blob.bin", str(out)],
                    timeout=60, check=False)
    assert r.returncode == 0 and out.read_bytes() == blob, r.stderr
    r = env.curl("-o", str(out), f"{HTTP}/blob.bin")
    assert r.returncode == 0 and out.read_bytes() == blob, r.stderr
    r = env.curl("-o", str(out), f"{HTTP}/hosts/n1/dsas.conf")
    assert r.returncode == 0, r.stderr
    conf = out.read_bytes()
    log = tmp_path / "serve.log"
    lines: list[re.Match[str]] = []
    for _ in range(100):  # bounded: the TFTP line comes when the worker has reported
        lines = [m for m in map(SERVED.search, log.read_text().splitlines()) if m]
        if len(lines) >= 3:
            break
        time.sleep(0.1)
    got = sorted((m[1], m[2], m[3], m[4], int(m[5])) for m in lines)
    assert got == sorted([
        ("tftp", "blob.bin", CLI, "n1", len(blob)),
        ("http", "blob.bin", CLI, "n1", len(blob)),
        ("http", "hosts/n1/dsas.conf", CLI, "n1", len(conf)),
    ]), log.read_text()[-3000:]
    text = log.read_text()
    assert " -> " + CLI not in text  # the old per-transfer start line is debug only
