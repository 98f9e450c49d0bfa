"""The DHCP service against hostile clients in the lab (issue 13): log injection through
client options, and a discovery flood of random MACs."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.protocol import dhcp_options as o

from .dhcp_support import UNKNOWN_MAC
from .hostile import LOG_LINE, dhcp_client_socket, discover, log_problems, send_broadcast
from .lab import Lab, Netns
from .test_dhcp_lab import DSAS, Server

pytestmark = pytest.mark.lab

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
    sock = dhcp_client_socket(cli.name, cif)
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
