"""The load balancers, live (issue 16), in QEMU (TCG): two directors and two web
servers netboot from `dsas serve`, a client namespace on the outside VLAN stands
for the Internet.

    master netns  br0 198.18.0.1/22 (inside, untagged): `dsas serve` (DHCP, HTTP)
                  vlan2 (userspace 802.1Q port) + br2 198.19.2.1/24 (outside)
    client netns  198.19.2.50/24 on br2
    lvs1, lvs2    the `web` image (Debian: keepalived, ipvsadm, IPVS modules),
                  role lvs: bond0 inside, bond0.2 outside; VRRP pair, NAT
    w1, w2        the tiny image, role web: busybox httpd answering its own name;
                  dsas-init routes them via the pair's inside gateway VIP

The guests boot their kernel and initramfs directly (-kernel, with the command
line the renderer gives the host): the initramfs then does what a PXE-booted
one does -- DHCP from `dsas serve`, dsas.conf and the image over its HTTP, and
for the directors dsas-init fetches keepalived.conf from it. PXE itself is
proven by test_setup_vm.py; skipping iPXE saves minutes under TCG.

Figures (failover gap, requests lost) are printed, never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provision.lab.cluster import LabCluster
from provision.lab.qemu import Shell, wait_shell

from .lab import Netns
from .lvslab import (
    CLIENT_LOOP,
    DSAS,
    VIP,
    _rows,
    boot,
    lb_status,
    lvs_farm,
    publish_key,
    raw,
    requests,
    start_httpd,
    wait_until,
)

pytestmark = pytest.mark.lab

WEB = ("w1", "w2")

INVENTORY = """\
cluster:
  name: lab
  domain: lab.example
  master_address: 198.18.0.1
  masters: {primary: m01}
  http_port: 80
  kernel_args: console=ttyS0 panic=5 dsas.shell=hvc0
networks:
  inside: {cidr: 198.18.0.0/22, dns: [198.18.0.1]}
  outside: {cidr: 198.19.2.0/24, gateway: 198.19.2.1, vlan: 2}
hwtypes:
  vm: {nics: [eth0, eth1], modules: [virtio_net]}
images:
  tiny: {version: current}
  web: {version: current}
services:
  master: {units: [dsas-serve]}
  web: {units: [httpd]}
  lvs: {units: [keepalived]}
roles:
  master: {services: [master], networks: [inside], boot: disk, hwtype: vm}
  lvs:
    services: [lvs]
    networks: [inside, outside]
    image: web
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
  web:
    services: [web]
    networks: [inside]
    image: tiny
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
hosts:
  m01: {role: master, macs: ["52:54:00:18:00:01", "52:54:00:18:01:01"],
        addresses: {inside: 198.18.0.1}}
  lvs1: {role: lvs, macs: ["52:54:00:18:00:61", "52:54:00:18:01:61"],
         addresses: {inside: 198.18.0.61, outside: 198.19.2.61}}
  lvs2: {role: lvs, macs: ["52:54:00:18:00:62", "52:54:00:18:01:62"],
         addresses: {inside: 198.18.0.62, outside: 198.19.2.62}}
  w1: {role: web, macs: ["52:54:00:18:00:71", "52:54:00:18:01:71"],
       addresses: {inside: 198.18.1.71}}
  w2: {role: web, macs: ["52:54:00:18:00:72", "52:54:00:18:01:72"],
       addresses: {inside: 198.18.1.72}}
lvs_pairs:
  lb:
    hosts: {lvs1: active, lvs2: backup}
    virtual_router_id: 51
    advert_int: 1
    gateway_vips: {inside: 198.18.0.254}
virtual_services:
  www:
    vip: 198.19.2.10
    port: 80
    scheduler: rr
    forwarding: NAT
    role: web
    check: {type: HTTP_GET, path: /, connect_timeout: 1, retry: 1, delay_before_retry: 1}
"""


@pytest.fixture
def lvs_lab(tmp_path: Path) -> Iterator[tuple[LabCluster, Netns]]:
    with lvs_farm(tmp_path, INVENTORY) as farm:
        yield farm


@pytest.mark.timeout(1800)
def test_directors_balance_fail_over_and_drop_a_dead_web_server(
        lvs_lab: tuple[LabCluster, Netns]) -> None:
    c, client = lvs_lab
    state = publish_key(c)  # dsas's own key, published for the nodes
    c.start_serve()
    t0 = time.monotonic()
    guests = {n: boot(c, n, 1536 if n.startswith("lvs") else 256)
              for n in ("lvs1", "lvs2", *WEB)}
    shells: dict[str, Shell] = {}
    try:
        nodes = c.wait_stages(list(guests), ("ready", "failed"), 900)
        print(f"\nall four guests ready in {time.monotonic() - t0:.0f} s (TCG)")
        assert {n: s.stage for n, s in nodes.items() if n in guests} == {
            n: "ready" for n in guests}, {n: (s.stage, s.reason) for n, s in nodes.items()}
        for d in ("lvs1", "lvs2"):
            con = guests[d].console()
            assert "keepalived: " in con and "installed (sha256" in con, con[-3000:]

        # httpd on each web server, answering its own name
        shells.update({n: wait_shell(guests[n]) for n in WEB})
        pids = {}
        for n, sh in shells.items():
            st, out = sh.run(f"mkdir -p /www && echo {n} > /www/index.html")
            assert st == 0, out
            pids[n] = start_httpd(sh)

        def both_answer() -> bool:
            got = requests(client, 10, 0.05, 20)
            return {b for _, ok, b in got if ok} == set(WEB)

        wait_until(both_answer, 180, "answers from both web servers through the VIP", 2)
        got = requests(client, 60)
        names = [b for _, ok, b in got if ok]
        assert len(got) == 60 and all(ok for _, ok, _ in got), got
        assert set(names) == set(WEB), names
        print(f"60 requests through {VIP}: {names.count('w1')} w1, {names.count('w2')} w2, "
              "0 failed")

        # dsas lb status, over SSH with the host keys dsas trusts
        inv = str(c.inventory_path)
        for d in ("lvs1", "lvs2"):
            addr = str(c.inventory.hosts[d].primary_interface.address)
            wait_until(lambda a=addr: c.master.run(  # type: ignore[misc]
                ["bash", "-c", f"exec 3<>/dev/tcp/{a}/22"], check=False).returncode == 0,
                120, f"sshd on {d}")
            r = c.master.run([DSAS, "trust", d, "-y", "-i", inv, "--state-dir", str(state)],
                             check=False, timeout=60)
            assert r.returncode == 0, r.stdout + r.stderr
        rep = lb_status(c, state)
        assert rep["unreachable"] == [], rep
        assert {i["name"]: i["holders"] for i in rep["vrrp"]} == {
            "lb_inside": ["lvs1"], "lb_outside": ["lvs1"]}, rep["vrrp"]
        for d in rep["services"][0]["directors"]:
            assert [(r["host"], r["state"]) for r in d["reals"]] == [
                ("w1", "up"), ("w2", "up")], d
        raw(c, state, "lvs1", "ipvsadm -Ln", "ipvsadm-lvs1.txt")

        # httpd stops on w1: keepalived's check takes it out, then no request fails
        st, _ = shells["w1"].run(f"kill {pids['w1']}")
        assert st == 0
        t_stop = time.monotonic()

        def only_w2() -> bool:
            got = requests(client, 20, 0.05, 20)
            return all(ok and b == "w2" for _, ok, b in got)

        wait_until(only_w2, 120, "a pool without w1", 1)
        print(f"w1 out of the pool {time.monotonic() - t_stop:.1f} s after its httpd stopped")
        got = requests(client, 40)
        assert all(ok and b == "w2" for _, ok, b in got), got
        rep = lb_status(c, state)
        for d in rep["services"][0]["directors"]:
            assert [(r["host"], r["state"]) for r in d["reals"]] == [
                ("w1", "out"), ("w2", "up")], d
        raw(c, state, "lvs1", "ipvsadm -Ln", "ipvsadm-lvs1-w1-out.txt")
        pids["w1"] = start_httpd(shells["w1"])
        wait_until(both_answer, 120, "w1 back in the pool", 2)

        # the active director dies: the backup takes the VIPs
        (c.workdir / "loop.txt").write_text("")
        with (c.workdir / "loop.txt").open("w") as f:
            loop = client.popen([sys.executable, "-c", CLIENT_LOOP, VIP, "100000", "90", "0.1"],
                                stdout=f, stderr=subprocess.DEVNULL, text=True)
        wait_until(lambda: sum(ok for _, ok, _ in _rows(c.workdir / "loop.txt")) >= 20, 30,
                   "answers before the kill", 0.2)
        t_kill = time.monotonic()
        guests["lvs1"].stop()  # QEMU quits: the director is powered off

        def answers_after_kill() -> int:
            rows = _rows(c.workdir / "loop.txt")
            return sum(1 for t, ok, _ in rows if ok and t > t_kill + 0.5)

        wait_until(lambda: answers_after_kill() >= 30, 80, "answers after the failover", 1)
        c.lab.stop(loop)
        rows = _rows(c.workdir / "loop.txt")
        before = [t for t, ok, _ in rows if ok and t <= t_kill]
        after = [t for t, ok, _ in rows if ok and t > t_kill]
        lost = sum(1 for t, ok, _ in rows if not ok and t > (before[-1] if before else t_kill))
        gap = after[0] - before[-1]
        print(f"VRRP failover (advert_int 1): {gap:.2f} s from the last answer before the kill "
              f"to the first after; {lost} requests lost (one every 0.1 s, 0.8 s timeout)")
        assert after and before
        # no one flushed the client's ARP cache: the VIP now resolves to lvs2
        neigh = client.run(["ip", "neigh", "show", VIP]).stdout
        lvs2_mac = c.inventory.hosts["lvs2"].macs[0]
        assert lvs2_mac in neigh.lower(), neigh
        print(f"client's ARP entry for {VIP}: {neigh.strip()}")
        (c.workdir / "figures.json").write_text(json.dumps({"gap_s": gap, "lost": lost}))
        rep = lb_status(c, state, expect_rc=1)
        assert [u["host"] for u in rep["unreachable"]] == ["lvs1"], rep["unreachable"]
        print(f"dsas lb status after the failover: {rep['unreachable'][0]['reason']}")
        for sh in shells.values():
            sh.close()
        assert {i["name"]: i["holders"] for i in rep["vrrp"]} == {
            "lb_inside": ["lvs2"], "lb_outside": ["lvs2"]}, rep["vrrp"]
    except Exception:
        for sh in shells.values():
            sh.close()
        print(c.serve_log()[-3000:], file=sys.stderr)
        for n, g in guests.items():
            print(f"---- {n}\n{g.console()[-3000:]}", file=sys.stderr)
        raise
