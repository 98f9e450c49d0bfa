"""`dsas lb status` (issue 16): the ipvsadm parser on real output, the report, and
unreachable directors named with a one-line reason (a silent port in a namespace),
and each director's read kept in the state store (an unreachable one too)."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest

from lab.testing import Lab
from provision.distribute import lbreads
from provision.distribute.lbstatus import DirectorView, parse_ipvsadm, parse_report, status
from provision.inventory import load
from provision.state import StateStore
from tests.support.paths import ROOT

SMALL = ROOT / "tests" / "fixtures" / "small.yaml"
# `ipvsadm -Ln` captured on director lvs1 of test_lvs_vm.py (Debian bookworm's
# ipvsadm on its 6.1 kernel): both real servers in, then w1 out after its httpd
# stopped and keepalived's HTTP_GET check failed.
IPVSADM = (ROOT / "tests" / "fixtures" / "ipvsadm-Ln.txt").read_text()
IPVSADM_ONE_OUT = (ROOT / "tests" / "fixtures" / "ipvsadm-Ln-one-out.txt").read_text()


def test_parse_real_ipvsadm_output() -> None:
    (svc,) = parse_ipvsadm(IPVSADM)
    assert (svc.protocol, svc.vip, svc.port, svc.scheduler) == ("TCP", "198.19.2.10", 80, "rr")
    assert [(r.address, r.port, r.forward, r.weight, r.active, r.inactive)
            for r in svc.reals] == [("198.18.1.71", 80, "NAT", 1, 0, 32),
                                    ("198.18.1.72", 80, "NAT", 1, 0, 32)]
    (svc,) = parse_ipvsadm(IPVSADM_ONE_OUT)
    assert [(r.address, r.inactive) for r in svc.reals] == [("198.18.1.72", 102)]


def test_parse_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="unexpected ipvsadm line"):
        parse_ipvsadm("TCP  198.19.2.10:80 wlc\n  => garbage\n")


def test_report_states_and_vrrp_holder() -> None:
    inv = load(SMALL)
    text = ("=IPVS\nIP Virtual Server version 1.2.1 (size=4096)\n"
            "Prot LocalAddress:Port Scheduler Flags\n"
            "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
            "TCP  198.19.2.10:80 wlc\n"
            "  -> 198.18.0.21:80                Masq    1      3          7\n"
            "=RC 0\n=ADDR\n"
            "2: bond0    inet 198.18.0.11/24 brd 198.18.0.255 scope global bond0\n"
            "3: bond0.2    inet 198.19.2.11/24 scope global bond0.2\n"
            "3: bond0.2    inet 198.19.2.10/24 scope global secondary bond0.2\n")
    lb1 = parse_report("lb1", "198.18.0.11", text)
    lb2 = DirectorView("lb2", "198.18.0.12", error="unreachable (timed out)")
    rep = status(inv, [lb1, lb2])
    (www,) = rep["services"]
    d1, d2 = www["directors"]
    assert [(r["host"], r["state"], r["weight"], r["active"], r["inactive"])
            for r in d1["reals"]] == [("w1", "up", 1, 3, 7), ("w2", "out", None, None, None)]
    assert d2 == {"host": "lb2", "error": "unreachable (timed out)"}
    (vrrp,) = rep["vrrp"]
    assert vrrp["holders"] == ["lb1"] and vrrp["unknown"] == ["lb2"] and vrrp["vrid"] == 7
    assert rep["unreachable"] == [{"host": "lb2", "address": "198.18.0.12",
                                   "reason": "unreachable (timed out)"}]
    # no ipvsadm on the director: said so, not a traceback
    bad = parse_report("lb1", "x", "=IPVS\nsh: ipvsadm: not found\n=RC 127\n=ADDR\n")
    assert bad.error == "ipvsadm -Ln: sh: ipvsadm: not found"


@pytest.mark.lab
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
    out = ns.run([str(ROOT / ".venv" / "bin" / "dsas"), "lb", "status", "-i", str(SMALL),
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
    text = ns.run([str(ROOT / ".venv" / "bin" / "dsas"), "lb", "status", "-i", str(SMALL),
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
