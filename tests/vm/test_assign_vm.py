"""`dsas assign`, live, in QEMU (TCG) (issue 17): one farm of two directors, a web
server and a spare, all of the `web` image (Debian: sshd, lighttpd, keepalived),
netbooted from `dsas serve`; a client loop on the VIP counts every failure.

    lvs1, lvs2  role lvs: VRRP pair, NAT, the VIP 198.19.2.10 on the outside VLAN
    w1          role web (lighttpd answering its own name)
    s1          role spare (no service, no pool)
    s9          role spare, in the inventory only: no machine answers for it

(a) s1 becomes web live: it joins the pool once keepalived's check passes, answers
    through the VIP, and the client sees no failure;
(b) w1 leaves the pool to spare: drained first (weight 0 on both directors, 0 active
    connections), no failure;
(c) s9 to web fails at deliver, with the reason, and the pool is unchanged;
(d) w1 back to web with a broken lighttpd: its report says failed, the inventory is
    reverted, w1 gets its spare dsas.conf back, the pool is unchanged;
(e) w1 (a spare) becomes a director live: it joins the pair as a backup;
(f) lvs1, the active director, becomes web: lvs2 takes the VIPs first (handover: a
    reload at priority 254 while lvs1 still holds them, then lvs1 stops), lvs1 joins
    the pool; no request fails outside the handover's VIP switch;
(g) lvs2 is powered off: w1, the web server made a director, takes the VIPs.

Figures (time from `dsas assign` to the first answer in the new role) are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.assign import GUESTS, INVENTORY
from lab.cluster import LabCluster
from lab.lvs import (
    DSAS,
    VIP,
    Loop,
    boot,
    fail_over,
    lb_status,
    lvs_farm,
    publish_key,
    raw,
    trust,
    wait_until,
)
from lab.netns import Netns
from provision.inventory import load


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[tuple[LabCluster, Netns]]:
    with lvs_farm(tmp_path, INVENTORY, images=("web",)) as f:
        yield f


def assign(c: LabCluster, state: Path, *args: str, timeout: float = 900,
           ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    r = c.master.run([DSAS, "assign", *args, "--yes", "--json", "-i", str(c.inventory_path),
                      "--state-dir", str(state), "--timeout", "10", "--drain-timeout", "30",
                      "--ready-timeout", "300", "--check-timeout", "120"],
                     check=False, timeout=timeout)
    print(f"---- dsas assign {' '.join(args)}: rc {r.returncode}\n{r.stderr}")
    doc = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    return r, doc


def pool(c: LabCluster, state: Path) -> dict[str, list[tuple[str, str]]]:
    """director -> [(real server, state)] of www, as `dsas lb status` reads IPVS."""
    rep = lb_status(c, state)
    return {d["host"]: [(r["host"] or r["address"], r["state"]) for r in d["reals"]]
            for d in rep["services"][0]["directors"]}


def in_ipvs(c: LabCluster, state: Path) -> dict[str, set[str]]:
    """director -> the real servers IPVS has for www (any weight)."""
    return {d: {h for h, st in rs if st in ("up", "weight 0", "draining")}
            for d, rs in pool(c, state).items()}


@pytest.mark.timeout(5400)
def test_assign_moves_hosts_live_with_no_failed_request(farm: tuple[LabCluster, Netns]
                                                        ) -> None:
    c, client = farm
    state = publish_key(c)
    c.start_serve()
    t0 = time.monotonic()
    guests = {n: boot(c, n, 1536) for n in GUESTS}
    loops: list[Loop] = []
    try:
        nodes = c.wait_stages(list(guests), ("ready", "failed"), 3000)  # TCG, shared CPUs
        print(f"\nall {len(guests)} guests ready in {time.monotonic() - t0:.0f} s (TCG)")
        assert {n: s.stage for n, s in nodes.items() if n in guests} == {
            n: "ready" for n in guests}, {n: (s.stage, s.reason) for n, s in nodes.items()}
        for n in GUESTS:
            trust(c, state, n)
        for n in ("w1", "s1"):  # lighttpd answers with the host's own name
            raw(c, state, n, f"echo {n} > /var/www/html/index.html")

        def answers(n: int = 20) -> set[str]:
            from lab.lvs import requests
            return {b for _, ok, b in requests(client, n, 0.05, 20) if ok}

        wait_until(lambda: answers() == {"w1"}, 240, "w1 alone answering through the VIP", 2)
        assert in_ipvs(c, state) == {"lvs1": {"w1"}, "lvs2": {"w1"}}

        # (a) more capacity: s1 becomes web, live; the client loop runs throughout
        loop = Loop(c, client, "loop-ab")
        loops.append(loop)
        wait_until(lambda: sum(ok for _, ok, _ in loop.rows()) >= 20, 60, "the loop's answers",
                   0.5)
        t_a = time.monotonic()
        r, doc = assign(c, state, "s1", "web")
        assert r.returncode == 0 and doc["ok"], (r.stderr, doc)
        assert [s["step"] for s in doc["steps"]] == ["drain", "deliver", "reapply",
                                                     "rebalance"], doc["steps"]
        took = time.monotonic() - t_a
        wait_until(lambda: any(ok and b == "s1" and t > t_a for t, ok, b in loop.rows()), 60,
                   "s1 answering through the VIP")
        first = min(t for t, ok, b in loop.rows() if ok and b == "s1" and t > t_a)
        print(f"(a) s1 spare -> web: dsas assign took {took:.1f} s "
              f"(steps {doc['seconds']}); first answer from s1 {first - t_a:.1f} s after "
              "the command started")
        assert in_ipvs(c, state) == {"lvs1": {"w1", "s1"}, "lvs2": {"w1", "s1"}}

        # a rolling push over the web role: each host drained, pushed, put back
        site = c.workdir / "site"
        site.mkdir()
        (site / "v.txt").write_text("v2\n")
        n0, t_p = len(loop.rows()), time.monotonic()
        r = c.master.run([DSAS + "-push", str(site), "--role", "web", "--to", "/srv/site",
                          "--rolling", "1", "--yes", "-i", str(c.inventory_path),
                          "--state-dir", str(state)], check=False, timeout=900)
        print(f"---- dsas-push --rolling 1: rc {r.returncode}\n{r.stdout}\n{r.stderr}")
        assert r.returncode == 0, r.stderr
        assert "batch 2/2: s1" in r.stderr and r.stderr.count("0 active connections") == 2
        for n in ("w1", "s1"):
            assert raw(c, state, n, "cat /srv/site/v.txt").strip() == "v2"
        pushed = loop.rows()[n0:]
        print(f"rolling push (2 batches of 1): {time.monotonic() - t_p:.1f} s, "
              f"{len(pushed)} requests, {sum(not ok for _, ok, _ in pushed)} failed")
        assert in_ipvs(c, state) == {"lvs1": {"w1", "s1"}, "lvs2": {"w1", "s1"}}

        # (b) a web server leaves the pool to another role: drained first
        t_b = time.monotonic()
        r, doc = assign(c, state, "w1", "spare")
        assert r.returncode == 0 and doc["ok"], (r.stderr, doc)
        drain = next(s for s in doc["steps"] if s["step"] == "drain")
        assert drain["status"] == "done" and "0 active connections" in drain["detail"], drain
        print(f"(b) w1 web -> spare: dsas assign took {time.monotonic() - t_b:.1f} s "
              f"(steps {doc['seconds']}); drain: {drain['detail']}")
        wait_until(lambda: all(b == "s1" for t, ok, b in loop.rows()[-20:] if ok), 60,
                   "s1 alone answering")
        assert in_ipvs(c, state) == {"lvs1": {"s1"}, "lvs2": {"s1"}}
        time.sleep(3)
        rows = loop.stop()
        failed = [(t, b) for t, ok, b in rows if not ok]
        after_b = [b for t, ok, b in rows if ok and t > time.monotonic() - 2.5]
        print(f"(a)+(b): {len(rows)} requests through {VIP}, {len(failed)} failed; "
              f"w1 {sum(b == 'w1' for _, ok, b in rows if ok)}, "
              f"s1 {sum(b == 's1' for _, ok, b in rows if ok)}")
        assert failed == [], failed[:10]
        assert set(after_b) <= {"s1"}, after_b

        # (c) an unreachable host: fails at deliver, with the reason; the inventory is
        # reverted and the pool unchanged
        loop = Loop(c, client, "loop-cd")
        loops.append(loop)
        before_c = c.inventory_path.read_bytes()
        r, doc = assign(c, state, "s9", "web")
        assert r.returncode == 1 and doc["failed_step"] == "deliver", (r.stderr, doc)
        assert "s9 (198.18.1.89) unreachable" in doc["reason"], doc["reason"]
        assert "step deliver failed" in r.stderr and doc["restored"] is True
        assert doc["reverted"] is True and c.inventory_path.read_bytes() == before_c
        assert in_ipvs(c, state) == {"lvs1": {"s1"}, "lvs2": {"s1"}}
        print(f"(c) s9 -> web: {doc['reason']}")

        # (d) the new role fails on the node: the inventory is reverted, the host gets
        # its old role back (its old dsas.conf re-applied), the pool is unchanged
        raw(c, state, "w1", "echo 'server.port = \"broken' >> /etc/lighttpd/lighttpd.conf")
        r, doc = assign(c, state, "w1", "web")
        assert r.returncode == 1 and doc["failed_step"] == "reapply", (r.stderr, doc)
        assert "w1 reports failed: SERVICE_UNITS[0]: lighttpd" in doc["reason"], doc["reason"]
        assert doc["reverted"] and doc["host_back"] and doc["restored"], doc["steps"]
        assert load(c.inventory_path).hosts["w1"].role.name == "spare"
        assert raw(c, state, "w1", "grep ^ROLE= /etc/dsas.conf").strip() == "ROLE=spare"
        assert in_ipvs(c, state) == {"lvs1": {"s1"}, "lvs2": {"s1"}}
        print(f"(d) w1 -> web with a broken lighttpd: {doc['reason']}; put back: "
              + next(s["detail"] for s in doc["steps"] if s["step"] == "host-back"))
        rows = loop.stop()
        failed = [(t, b) for t, ok, b in rows if not ok]
        print(f"(c)+(d): {len(rows)} requests through {VIP}, {len(failed)} failed")
        assert failed == [], failed[:10]

        # (e) a web server becomes a director, live: w1 joins the pair as a backup,
        # runs keepalived with the pair's virtual services
        loop = Loop(c, client, "loop-ef")
        loops.append(loop)
        t_e = time.monotonic()
        r, doc = assign(c, state, "w1", "lvs")
        assert r.returncode == 0 and doc["ok"], (r.stderr, doc)
        assert load(c.inventory_path).lvs_pairs["lb"].directors == ("lvs1", "lvs2", "w1")
        reb = next(s for s in doc["steps"] if s["step"] == "rebalance")
        assert "a director of LVS pair lb" in reb["detail"], reb
        print(f"(e) w1 spare -> lvs: {time.monotonic() - t_e:.1f} s (steps {doc['seconds']}); "
              f"{reb['detail']}")
        # keepalived's alpha: s1 is up on w1 once w1's own health check passed
        wait_until(lambda: in_ipvs(c, state) == {"lvs1": {"s1"}, "lvs2": {"s1"},
                                                 "w1": {"s1"}}, 60, "s1 up on w1's IPVS", 2)

        # (f) a director moves: lvs1 (the active) becomes web; lvs2 takes the VIPs
        # first (handover), then lvs1 re-applies as a web server and joins the pool
        raw(c, state, "lvs1", "mkdir -p /var/www/html && echo lvs1 > /var/www/html/index.html")
        t_f = time.monotonic()
        r, doc = assign(c, state, "lvs1", "web")
        assert r.returncode == 0 and doc["ok"], (r.stderr, doc)
        assert [s["step"] for s in doc["steps"]] == ["drain", "handover", "deliver", "reapply",
                                                     "rebalance"], doc["steps"]
        hand = next(s for s in doc["steps"] if s["step"] == "handover")
        assert "lvs2 took the VIPs" in hand["detail"] and "priority 254" in hand["detail"], hand
        assert load(c.inventory_path).lvs_pairs["lb"].directors == ("lvs2", "w1")
        print(f"(f) lvs1 lvs -> web: {time.monotonic() - t_f:.1f} s (steps {doc['seconds']}); "
              f"{hand['detail']}")
        assert in_ipvs(c, state) == {"lvs2": {"s1", "lvs1"}, "w1": {"s1", "lvs1"}}
        wait_until(lambda: any(ok and b == "lvs1" and t > t_f for t, ok, b in loop.rows()), 60,
                   "lvs1 answering through the VIP")
        rows = loop.stop()
        failed = [(t, b) for t, ok, b in rows if not ok]
        print(f"(e)+(f): {len(rows)} requests through {VIP}, {len(failed)} failed "
              f"(the VIPs moved from lvs1 to lvs2 during (f))")
        # when they failed, against the steps of (f): the handover's VRRP switch, or the
        # rebalance's reload (priorities change), or lvs1's re-apply (it was the NAT gateway)
        at, marks = t_f, []
        for s in doc["steps"]:
            at += doc["seconds"].get(s["step"], 0.0)
            marks.append(f"{s['step']} ends +{at - t_f:.1f}")
        print("(f) failed at +s: " + " ".join(f"{t - t_f:.1f}" for t, _ in failed if t > t_f)
              + " (" + ", ".join(marks) + ")")
        holders = {i["name"]: i["holders"] for i in lb_status(c, state)["vrrp"]}
        assert holders == {"lb_inside": ["lvs2"], "lb_outside": ["lvs2"]}, holders
        # lvs2 took the VIPs while lvs1 still held them, then lvs1's keepalived stopped:
        # no moment without a holder (stopping lvs1 first lost 7 of 549 in its skew).
        # Nothing fails outside the handover; in it, a NAT connection lvs1 opened in
        # the moment before the switch (not yet synced to lvs2) can miss its reply and
        # wait out TCP's 1 s retransmission, past the loop's 0.8 s (0 of 835 and 1 of
        # 613 in two runs): printed, not asserted; tests/lab/test_vrrp_handover_lab.py
        # holds the handover to at most 2 of 600 pings against 17 the old way
        hand_end = t_f + doc["seconds"].get("drain", 0.0) + doc["seconds"]["handover"]
        outside = [(t, b) for t, b in failed if not t_f <= t <= hand_end]
        print(f"(f) during the handover: {len(failed) - len(outside)} failed")
        assert outside == [], (outside[:10], marks)
        # and the rebalance gave lvs2 its own priority back (the take-over's is gone)
        assert "priority 150" in raw(c, state, "lvs2", "grep priority /etc/keepalived/"
                                                       "keepalived.conf")

        # (g) the web server made a director takes the VIPs when the active is powered off
        gap, lost = fail_over(c, client, guests, "lvs2", "w1")
        print(f"(g) lvs2 powered off: w1 holds the VIPs; {gap:.2f} s without an answer, "
              f"{lost} requests lost")
        j = c.master.run([DSAS, "assign", "--journal", "w1", "-i", str(c.inventory_path),
                          "--state-dir", str(state)], check=False, timeout=60).stdout
        print(j)
    except Exception:
        for lp in loops:
            if lp.proc.poll() is None:
                lp.stop()
        print(c.serve_log()[-4000:], file=sys.stderr)
        for n, g in guests.items():
            print(f"---- {n}\n{g.console()[-3000:]}", file=sys.stderr)
        raise
