"""The DHCP service against hostile clients in the lab (issue 13): log injection through
client options, and a discovery flood of random MACs."""

from __future__ import annotations

import random
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.testing import Lab, Netns
from provision.protocol import dhcp_options as o
from tests.support.dhcp_lab import DSAS, Server, set_mac, udhcpc_once
from tests.support.dhcp_support import UNKNOWN_MAC
from tests.support.hostile import (
    LOG_LINE,
    dhcpclient_socket,
    discover,
    log_problems,
    random_mac,
    send_broadcast,
)
from tests.support.netns_thread import in_netns

FORGED = b"PXEClient\n2026-01-01 00:00:00,000 CRITICAL provision.services.dhcp: CRITICAL fake"


@pytest.fixture
def pair(lab: Lab, tmp_path: Path) -> Iterator[tuple[Server, Netns, str]]:
    srv, cli = lab.netns("dsrv"), lab.netns("dcli")
    sif, cif = lab.veth(srv, cli, "198.18.0.1/24", None)
    server = Server(lab, srv, sif, tmp_path)
    yield server, cli, cif
    server.stop()


def _wait_log(server: Server, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log():
            return
        time.sleep(0.1)
    pytest.fail(f"{text!r} never logged:\n{server.log()[-3000:]}")


@pytest.mark.parametrize("discovery", [False, True], ids=["unknown", "discovery"])
def test_control_characters_in_client_options_forge_no_log_line_or_table_row(
        pair: tuple[Server, Netns, str], tmp_path: Path, discovery: bool) -> None:
    server, cli, cif = pair
    server.args = ["--discovery"] if discovery else []
    server.start()
    sock = dhcpclient_socket(cli.name, cif)
    with sock:
        send_broadcast(sock, discover(UNKNOWN_MAC, {
            o.VENDOR_CLASS: FORGED, o.HOST_NAME: b"evil\r\nCRITICAL fake\x1b[2J",
            o.CLIENT_ARCH: o.u16(0)}))
        _wait_log(server, "machine mac=" + UNKNOWN_MAC)
    log = server.log()
    levels = [m.group(1) for m in map(LOG_LINE.match, log.splitlines()) if m]
    assert "CRITICAL" not in levels, log
    assert log_problems(tmp_path / "serve.log") == [], log
    assert "vendor=PXEClient\\x0a2026-01-01 00:00:00,000 CRITICAL" in log
    assert "hostname=evil\\x0d\\x0aCRITICAL fake\\x1b[2J" in log
    if not discovery:
        return
    server.stop()  # the sighting is on disk once the server stopped
    listing = subprocess.run([DSAS, "discovered", "--state-dir", str(tmp_path / "state")],
                             capture_output=True, text=True, timeout=30)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 3, listing.stdout  # header, rule, one machine
    assert lines[2].startswith(UNKNOWN_MAC) and "PXEClient\\x0a2026" in lines[2]
    assert "\x1b" not in listing.stdout and "\r" not in listing.stdout


FLOOD = 1000


def _metrics(ns: Netns) -> str:
    def get() -> str:
        with urllib.request.urlopen("http://198.18.0.1:8080/metrics", timeout=5) as r:
            return r.read().decode()
    return in_netns(ns.name, get)


def _metric(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def test_discovery_flood_leaves_a_lease_for_a_real_new_machine(
        pair: tuple[Server, Netns, str], tmp_path: Path) -> None:
    server, cli, cif = pair
    server.args = ["--discovery", "--only", "dhcp,http", "--http-port", "8080"]
    (tmp_path / "boot").mkdir(exist_ok=True)
    server.start()
    _wait(lambda: _metric(_metrics(server.ns), "dsas_dhcp_leases") >= 0, "/metrics")
    rng = random.Random(13)
    with dhcpclient_socket(cli.name, cif) as sock:
        for _ in range(FLOOD):  # a forged MAC each, as fast as the socket takes them
            send_broadcast(sock, discover(random_mac(rng)))
    received = 'dsas_dhcp_received_total{type="DISCOVER"}'
    _wait(lambda: _metric(_metrics(server.ns), received) >= FLOOD, "the flood to be read")
    set_mac(cli, cif, "52:54:00:00:ee:99")  # a real new machine, after the flood
    lease = udhcpc_once(cli, cif, tmp_path, tries=4)
    assert lease is not None, "no lease for a new machine after the flood"
    # The shortage is visible: rate-limited new MACs, and the free pool addresses.
    _wait(lambda: _metric(_metrics(server.ns), 'dsas_dhcp_pool_free{network="lan"}') >= 0,
          "dsas_dhcp_pool_free")
    page = _metrics(server.ns)
    limited = _metric(page, 'dsas_dhcp_dropped_total{reason="discovery_rate_limited"}')
    free = _metric(page, 'dsas_dhcp_pool_free{network="lan"}')
    assert limited >= FLOOD // 2 and free > 0, page
    assert "new machines rate-limited" in server.log()
    server.stop()
    listing = subprocess.run([DSAS, "discovered", "--state-dir", str(tmp_path / "state")],
                             capture_output=True, text=True, timeout=30)
    rows = listing.stdout.splitlines()[2:]
    assert len(rows) < FLOOD - limited + 2, len(rows)  # only the MACs that were answered
    assert any(r.startswith("52:54:00:00:ee:99") for r in rows)
    print(f"flood of {FLOOD}: {limited:.0f} rate-limited, {free:.0f} pool addresses free, "
          f"{len(rows)} rows in dsas discovered")


def _wait(pred: Callable[[], object], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded: 20 s
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")
