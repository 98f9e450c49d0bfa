"""`dsas serve --only ra`: a real router-discovery client (rdisc6) gets a zero-lifetime RA."""

from __future__ import annotations

import sys

from lab.testing import Lab, require_tool, wait_for
from provision.services.ra import is_router_solicitation, router_advertisement
from tests.support.paths import FIXTURES


def test_codec() -> None:
    ra = router_advertisement()
    assert ra[0] == 134 and len(ra) == 16
    assert ra[4] == 0 and ra[6:8] == b"\x00\x00"  # no M/O flags, router lifetime 0
    assert is_router_solicitation(bytes([133, 0, 0, 0, 0, 0, 0, 0]))
    assert not is_router_solicitation(bytes([133, 0, 0]))
    assert not is_router_solicitation(bytes([135, 0, 0, 0, 0, 0, 0, 0]))


def test_router_solicitation_is_answered(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rdisc6 = require_tool("rdisc6")
    srv, cli = lab.netns("ra"), lab.netns("rac")
    lab.bridge(srv, "br0", "198.18.0.1/24")
    ifc = lab.plug(srv, "br0", cli, "198.18.0.9/24")
    # Link-local addresses finish duplicate address detection (no longer "tentative").
    for ns, dev in ((srv, "br0"), (cli, ifc)):
        wait_for(lambda ns=ns, dev=dev: "inet6 fe80" in (a := ns.run(
            ["ip", "-6", "addr", "show", "dev", dev], check=False).stdout) and "tentative"
            not in a, 15, f"DAD on {dev}")
    serve = srv.popen([sys.executable, "-m", "provision", "serve", "--only", "ra",
                       "--interface", "br0", "-i", str(FIXTURES / "small.yaml"),
                       "--state-dir", str(tmp_path / "state")])
    out = None
    for _ in range(20):  # the service needs a moment to bind
        out = cli.run([rdisc6, "-1", "-w", "500", ifc], check=False, timeout=10)
        if out.returncode == 0:
            break
    assert serve.poll() is None
    assert out is not None and out.returncode == 0, out.stdout + out.stderr
    assert "Router lifetime" in out.stdout and "0 (0x00000000) seconds" in out.stdout
    assert "Prefix" not in out.stdout
