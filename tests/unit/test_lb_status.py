"""`dsas lb status` (issue 16): the ipvsadm parser on real output and the report;
unreachable directors (a silent port in a namespace) are in tests/lab/test_lb_status_lab.py."""

from __future__ import annotations

import pytest

from provision.balancer.status import DirectorView, parse_ipvsadm, parse_report, status
from provision.inventory import load
from tests.support.paths import FIXTURES, ROOT

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
    inv = load(FIXTURES / "small.yaml")
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




def test_drained_and_held_servers_are_told_from_failed_checks() -> None:
    """A server dsas drained shows as draining (weight 0, its connections), one it holds
    out of the pool as held, not as "out" (a failed health check) (issue 17)."""
    from provision.balancer.members import Override

    inv = load(FIXTURES / "small.yaml")
    text = ("=IPVS\nTCP  198.19.2.10:80 wlc\n"
            "  -> 198.18.0.21:80                Masq    0      3          7\n"
            "  -> 198.18.0.31:80                Masq    1      0          0\n"
            "=RC 0\n=ADDR\n")
    lb1 = parse_report("lb1", "198.18.0.11", text)

    def states(overrides: dict[tuple[str, str], Override]) -> list[tuple[str | None, str]]:
        (www,) = status(inv, [lb1], overrides)["services"]
        return [(r["host"], r["state"]) for r in www["directors"][0]["reals"]]

    # no override: a weight 0 dsas did not set, a missing server whose check fails
    assert states({}) == [("w1", "weight 0"), ("w2", "out"),
                          (None, "unknown to the inventory")]
    ov = {("w1", "web"): Override("w1", "web", "drain", "198.18.0.21", "assign run 1"),
          ("w2", "web"): Override("w2", "web", "hold", "198.18.0.22", "assign run 2"),
          ("x9", "web"): Override("x9", "web", "keep", "198.18.0.31", "assign run 3")}
    assert states(ov) == [("w1", "draining"), ("x9", "up"), ("w2", "held")]
    (www,) = status(inv, [lb1], ov)["services"]
    assert www["directors"][0]["reals"][0]["active"] == 3
