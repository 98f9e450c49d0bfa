"""`dsas lb status` (issue 16) against unreachable directors: a silent port in a
namespace and a closed one, each named with a one-line reason and its read kept in
the state store (the parser and report units are in tests/unit/test_lb_status.py)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from lab.testing import Lab
from provision.balancer import reads as lbreads
from provision.state import StateStore
from tests.support.paths import FIXTURES, ROOT


def test_unreachable_directors_are_named_with_one_line(lab: Lab, tmp_path: Path) -> None:
    """lb1 accepts TCP on port 22 and never speaks; nothing listens for lb2."""
    ns = lab.netns("lbst")
    lab.bridge(ns, "br0", "198.18.0.11/24")
    ns.addr("br0", "198.18.0.12/24")
    silent = ns.popen([sys.executable, "-c", (
        "import socket, time\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('198.18.0.11', 22)); s.listen(4)\n"
        "c = []\n"
        "end = time.monotonic() + 120\n"
        "while time.monotonic() < end:\n"
        "    s.settimeout(1)\n"
        "    try: c.append(s.accept()[0])\n"
        "    except socket.timeout: pass\n")])
    ns.wait_port(22, "tcp")
    out = ns.run([str(ROOT / ".venv" / "bin" / "dsas"), "lb", "status", "-i",
                  str(FIXTURES / "small.yaml"),
                  "--state-dir", str(tmp_path / "state"), "--timeout", "2", "--json"],
                 check=False, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    rep = json.loads(out.stdout)
    reasons = {u["host"]: u["reason"] for u in rep["unreachable"]}
    assert set(reasons) == {"lb1", "lb2"}
    assert reasons["lb1"] == "unreachable: port 22 accepts but sends no SSH banner in 2 s"
    assert reasons["lb2"] == "unreachable: connection refused on port 22"
    assert all("\n" not in r for r in reasons.values())
    assert "Traceback" not in out.stderr, out.stderr
    # An unreachable read is kept too, as each director's latest, for the status page.
    store = StateStore(tmp_path / "state")
    reads = lbreads.latest(store)
    store.close()
    assert {d: (r["address"], r["error"], r["services"], r["vrrp"]) for d, r in reads.items()
            } == {"lb1": ("198.18.0.11", reasons["lb1"], [], []),
                  "lb2": ("198.18.0.12", reasons["lb2"], [], [])}
    first = reads["lb1"]["read_at"]
    text = ns.run([str(ROOT / ".venv" / "bin" / "dsas"), "lb", "status", "-i",
                   str(FIXTURES / "small.yaml"),
                   "--state-dir", str(tmp_path / "state"), "--timeout", "2"],
                  check=False, timeout=60)
    assert text.returncode == 1
    assert "unreachable: lb2 (198.18.0.12): unreachable: connection refused on port 22" \
        in text.stdout.splitlines()
    assert "Traceback" not in text.stderr, text.stderr
    store = StateStore(tmp_path / "state")
    assert store.query("SELECT COUNT(*) FROM lb_reads")[0][0] == 2  # replaced, not added
    assert lbreads.latest(store)["lb1"]["read_at"] > first
    store.close()
    lab.stop(silent)
    _ = socket  # the listener runs in the namespace, by PID
