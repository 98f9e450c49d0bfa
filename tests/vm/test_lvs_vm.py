"""The load balancers, live (issue 16), in QEMU (TCG): two directors and two web
servers netboot from `dsas serve`, a client namespace on the outside VLAN stands
for the Internet.

    master netns  br0 198.18.0.1/22 (inside, untagged): `dsas serve` (DHCP, HTTP)
                  vlan2 (userspace 802.1Q port) + br2 198.19.2.1/24 (outside)
    client netns  198.19.2.50/24 on br2
    lvs1, lvs2    the tiny-lvs image (busybox, Debian's keepalived, ipvsadm, sshd,
                  the kernel's IPVS modules), role lvs: bond0 inside, bond0.2
                  outside; VRRP pair, NAT
    w1, w2        the same image, role web: busybox httpd answering its own name;
                  dsas-init routes them via the pair's inside gateway VIP

The directors are read with `dsas lb status` and reloaded with `dsas lb reload`
over SSH (host keys scanned by `dsas trust`), as in production. The web servers
run the director image too, so that `dsas assign w2 lvs` is a live move (drain,
deliver, reapply, rebalance over SSH) that must succeed.

tiny-lvs, not the web image, because `python -m bench lvsboot` measured it 7x
faster to ready under TCG (270 s against 1,883 s); the web image booted as a
director is what that bench measures.

The guests boot their kernel and initramfs directly (-kernel, with the command
line the renderer gives the host): the initramfs then does what a PXE-booted
one does -- DHCP from `dsas serve`, dsas.conf and the image over its HTTP, and
for the directors dsas-init fetches keepalived.conf from it. PXE itself is
proven by test_setup_vm.py; skipping iPXE saves minutes under TCG.

Figures (failover gap, requests lost) are printed, never asserted.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.cluster import LabCluster
from lab.lvs import (
    CLIENT,
    DSAS,
    INVENTORY,
    VIP,
    WEB,
    boot,
    client_rows,
    edit_inventory,
    fail_over,
    lb_status,
    loop_on_vip,
    lvs_farm,
    print_lab,
    publish_key,
    raw,
    reboot_as,
    requests,
    start_httpd,
    tiny_directors,
    trust,
    wait_ready_since,
    wait_until,
)
from lab.netns import Netns
from lab.qemu import Shell, wait_shell
from provision.inventory import load

MEMORY = 384  # MiB, every guest: the web servers become directors


@pytest.fixture
def lvs_lab(tmp_path: Path) -> Iterator[tuple[LabCluster, Netns]]:
    web = "    networks: [inside]\n    image: tiny"
    inv = tiny_directors(INVENTORY).replace(f"{web}\n", f"{web}-lvs\n")
    assert inv.count("image: tiny-lvs") == 2
    with lvs_farm(tmp_path, inv, ("tiny", "tiny-lvs")) as farm:
        yield farm


def pools(rep: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """director -> [(real server, state)] of the one virtual service, from lb status."""
    (vs,) = rep["services"]
    return {d["host"]: [(r["host"], r["state"]) for r in d["reals"]]
            for d in vs["directors"] if "error" not in d}


def wait_pools(c: LabCluster, state: Path, want: list[tuple[str, str]],
               timeout: float = 60) -> None:
    """Until `dsas lb status` shows `want` as the pool on both directors (bounded)."""
    expect = {d: want for d in ("lvs1", "lvs2")}
    deadline = time.monotonic() + timeout
    while (seen := pools(lb_status(c, state))) != expect:
        assert time.monotonic() < deadline, f"pools {seen} after {timeout:.0f} s, not {expect}"
        time.sleep(2)


def holders(rep: dict[str, Any]) -> dict[str, list[str]]:
    return {i["name"]: i["holders"] for i in rep["vrrp"]}


def settled(c: LabCluster, state: Path, want: str, expect_rc: int = 0,
            within: float = 10) -> dict[str, Any]:
    """dsas lb status once ``want`` alone holds both VIPs, or the last one after
    ``within`` s (the caller asserts). A backup whose master-down timer fired beside the
    new holder's holds a VIP until that holder's next advert reaches it: VRRP settles in
    an advert interval, and a status taken in between shows two holders. Any such
    moment is printed, with how long it lasted."""
    t0 = time.monotonic()
    seen = []
    rep = lb_status(c, state, expect_rc)
    while holders(rep) != {"lb_inside": [want], "lb_outside": [want]} \
            and time.monotonic() - t0 < within:
        seen.append(holders(rep))
        time.sleep(1)
        rep = lb_status(c, state, expect_rc)
    if seen:
        print(f"VRRP holders {seen} before {holders(rep)}, "
              f"{time.monotonic() - t0:.1f} s after the first status")
    return rep


def lb_reload(c: LabCluster, state: Path) -> str:
    r = c.master.run([DSAS, "lb", "reload", "-i", str(c.inventory_path), "--state-dir",
                      str(state), "--timeout", "5"], check=False, timeout=300)
    print(f"dsas lb reload:\n{r.stdout}{r.stderr}")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.timeout(4800)
@pytest.mark.parametrize("preempt", [False, True], ids=["nopreempt", "preempt"])
def test_directors_balance_drop_a_dead_web_server_fail_over_and_a_web_server_becomes_one(
        lvs_lab: tuple[LabCluster, Netns], preempt: bool) -> None:
    """Issue 16: four guests netboot; requests through the VIP reach both web servers;
    `dsas lb status` reads each director's IPVS table and who holds the VIPs, and
    `dsas lb reload` reloads them; httpd stops on w1 and keepalived's check takes it
    out of the pool, then it comes back; the pair's preempt is set in the inventory;
    `dsas assign w2 lvs` moves w2 live (drain, deliver, reapply, rebalance) and it joins
    VRRP as a backup, the VIPs staying where they are; the active director dies and the
    backup takes the VIPs (the client's ARP entry follows); the old active comes back
    and w2 reboots (still a director: its role is the inventory's) side by side under a
    client loop, and the VIPs stay (preempt false) or return (true); then the VIP
    holder dies twice (with preempt, lvs2 dies as the backup) and the VIPs are on
    lvs1, then on the former web server."""
    c, client = lvs_lab
    state = publish_key(c)  # dsas's own key: every node fetches it for root at boot
    inv = str(c.inventory_path)
    c.start_serve()
    t0_wall = time.time()
    guests = {n: boot(c, n, MEMORY) for n in ("lvs1", "lvs2", *WEB)}
    shells: dict[str, Shell] = {}
    try:
        for n in guests:
            print(f"{n} ({c.inventory.hosts[n].image}): ready "
                  f"{wait_ready_since(c, n, t0_wall, 1500):.0f} s after power-on")
        for n, g in guests.items():
            con = g.console()
            assert "ssh: root's authorized_keys from" in con, con[-3000:]
            if n.startswith("lvs"):
                assert "keepalived: " in con and "installed (sha256" in con, con[-3000:]
        shells.update({n: wait_shell(guests[n]) for n in guests})
        pids = {}
        for n in WEB:
            st, said = shells[n].run(f"mkdir -p /www && echo {n} > /www/index.html")
            assert st == 0, said
            pids[n] = start_httpd(shells[n])

        def both_answer() -> bool:
            return {b for _, ok, b in requests(client, 10, 0.05, 20) if ok} == set(WEB)

        wait_until(both_answer, 180, "answers from both web servers through the VIP", 2)
        got = requests(client, 60)
        names = [b for _, ok, b in got if ok]
        assert len(got) == 60 and all(ok for _, ok, _ in got), got
        assert set(names) == set(WEB), names
        print(f"60 requests through {VIP}: {names.count('w1')} w1, {names.count('w2')} w2, "
              "0 failed")

        # dsas trust (a key scan: each boot makes its own host key; w2's from its ready
        # report, made before dsas-init ran: the assign's deliver verifies it), then
        # the directors as `dsas lb status` reads them over SSH, and `dsas lb reload`
        for n in ("lvs1", "lvs2", "w1"):
            trust(c, state, n)
        r = c.master.run([DSAS, "trust", "w2", "--from-boot-report", "-y", "-i", inv,
                          "--state-dir", str(state)], check=False, timeout=60)
        print(f"dsas trust w2 --from-boot-report: {r.stdout}{r.stderr}")
        assert r.returncode == 0 and "w2" in r.stdout, r.stdout + r.stderr
        rep = lb_status(c, state)
        assert rep["unreachable"] == [], rep
        assert holders(rep) == {"lb_inside": ["lvs1"], "lb_outside": ["lvs1"]}, rep["vrrp"]
        assert pools(rep) == {d: [("w1", "up"), ("w2", "up")] for d in ("lvs1", "lvs2")}, rep
        for d in rep["services"][0]["directors"]:
            assert d["in_ipvs"] and d["scheduler"] == "rr", d
            for r in d["reals"]:
                assert r["weight"] >= 1 and r["active"] >= 0 and r["inactive"] >= 0, r
        raw(c, state, "lvs1", "ipvsadm -Ln", "ipvsadm-lvs1.txt")
        # IPVS connection sync: the active's master daemon, the backup's backup daemon; the
        # backup carries no client traffic, so the client's connections in its table came
        # from the sync (a NAT connection in flight survives the VIPs moving)
        assert "master sync daemon" in raw(c, state, "lvs1", "ipvsadm -L --daemon")
        assert "backup sync daemon" in raw(c, state, "lvs2", "ipvsadm -L --daemon")
        assert CLIENT in raw(c, state, "lvs2", "ipvsadm -Lnc", "ipvsadm-lvs2-synced.txt")
        reloaded = lb_reload(c, state)
        for d in ("lvs1", "lvs2"):
            assert re.search(rf"^{d} \(\S+\): reloaded: keepalived: \S+ unchanged", reloaded,
                             re.M), reloaded
        assert holder(shells, c) == "lvs1"

        # httpd stops on w1: keepalived's check takes it out, then no request fails
        st, _ = shells["w1"].run(f"kill {pids['w1']}")
        assert st == 0
        t_stop = time.monotonic()

        def only_w2() -> bool:
            return all(ok and b == "w2" for _, ok, b in requests(client, 20, 0.05, 20))

        wait_until(only_w2, 120, "a pool without w1", 1)
        print(f"w1 out of the pool {time.monotonic() - t_stop:.1f} s after its httpd stopped")
        got = requests(client, 40)
        assert all(ok and b == "w2" for _, ok, b in got), got
        # each director runs its own checker: the backup's may see w1 go a delay_loop later
        wait_pools(c, state, [("w1", "out"), ("w2", "up")])
        raw(c, state, "lvs1", "ipvsadm -Ln", "ipvsadm-lvs1-w1-out.txt")
        pids["w1"] = start_httpd(shells["w1"])
        wait_until(both_answer, 120, "w1 back in the pool", 2)
        wait_pools(c, state, [("w1", "up"), ("w2", "up")])

        # preempt in the inventory; w2 becomes a director live, under a client loop
        edit_inventory(c, state, lambda t: t.replace(
            "    advert_int: 1\n", f"    advert_int: 1\n    preempt: {str(preempt).lower()}\n"))
        assert c.inventory.lvs_pairs["lb"].preempt is preempt
        loop, out = loop_on_vip(c, client, "loop-assign", 3000, seq=True)
        t_assign = time.monotonic()
        r = c.master.run([DSAS, "assign", "w2", "lvs", "--yes", "-i", inv, "--state-dir",
                          str(state), "--timeout", "10", "--drain-timeout", "30",
                          "--ready-timeout", "600", "--check-timeout", "120"],
                         check=False, timeout=900)
        took = time.monotonic() - t_assign
        c.lab.stop(loop)
        print(f"---- dsas assign w2 lvs: rc {r.returncode} in {took:.0f} s\n"
              f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "the live steps (live):" in r.stdout, r.stdout  # one image: no reboot
        for step in ("drain", "deliver", "reapply", "rebalance"):
            assert re.search(rf"^  {step}: done\b", r.stdout, re.M), r.stdout
        rows = client_rows(out)
        assign_lost = sum(1 for _, ok, _ in rows if not ok)
        print(f"during dsas assign w2 lvs: {assign_lost} of {len(rows)} requests lost "
              f"{sorted({b for _, ok, b in rows if not ok})}")
        c.inventory = load(c.inventory_path)
        assert c.inventory.hosts["w2"].role.name == "lvs"
        assert c.inventory.lvs_pairs["lb"].directors == ("lvs1", "lvs2", "w2")
        states = vrrp_states(shells["w2"])
        print(f"w2's keepalived after the assign: {states}")
        assert states == {"lb_inside": "BACKUP", "lb_outside": "BACKUP"}, states
        # w2's keepalived puts w1 in its pool once its own first health check passes
        # (alpha): "out" until then
        wait_until(lambda: pools(lb_status(c, state)) == {
            d: [("w1", "up")] for d in ("lvs1", "lvs2", "w2")}, 120,
            "w1 up in the pool of every director, w2's too", 5)
        rep = lb_status(c, state)
        assert rep["unreachable"] == [], rep
        assert holders(rep) == {"lb_inside": ["lvs1"], "lb_outside": ["lvs1"]}, rep["vrrp"]
        assert holder(shells, c) == "lvs1"

        # the active director dies: the backup takes the VIPs (gratuitous ARP: the
        # client's ARP entry follows, nobody flushes it)
        gap, lost = fail_over(c, client, guests, "lvs1", "lvs2")
        shells.pop("lvs1").close()
        print(f"VRRP failover lvs1 -> lvs2 (advert_int 1): {gap:.2f} s from the last answer "
              f"before the kill to the first after; {lost} requests lost")
        print(f"client's ARP entry for {VIP}: "
              f"{client.run(['ip', 'neigh', 'show', VIP]).stdout.strip()}")
        rep = settled(c, state, "lvs2", expect_rc=1)
        assert [u["host"] for u in rep["unreachable"]] == ["lvs1"], rep["unreachable"]
        print(f"dsas lb status after the failover: {rep['unreachable'][0]['reason']}")
        assert holders(rep) == {"lb_inside": ["lvs2"], "lb_outside": ["lvs2"]}, rep["vrrp"]
        assert holder(shells, c) == "lvs2"

        # lvs1 comes back and w2 reboots (a director still: netbooted, its role is the
        # inventory's), side by side under a client loop on the VIP
        pair = c.inventory.lvs_pairs["lb"]
        shells.pop("w2").close()
        guests["w2"].stop()
        loop, out = loop_on_vip(c, client, "loop-back", 3000, seq=True)
        t_wall = time.time()
        for n in ("lvs1", "w2"):
            guests[n] = reboot_as(c, n, guests[n], MEMORY)
        boot_s = {n: wait_ready_since(c, n, t_wall, 1500) for n in ("lvs1", "w2")}
        shells.update({n: wait_shell(guests[n]) for n in ("lvs1", "w2")})
        for n in ("lvs1", "w2"):
            trust(c, state, n)  # a new host key this boot
        time.sleep(3 * float(pair.advert_int) + pair.preempt_delay + 10)
        c.lab.stop(loop)
        rows = client_rows(out)
        back_lost = sum(1 for _, ok, _ in rows if not ok)
        stays = "lvs1" if pair.preempt else "lvs2"
        rep = settled(c, state, stays)
        print(f"lvs1 back and w2 rebooted (preempt {pair.preempt}): VIPs on "
              f"{holders(rep)['lb_inside']}; {back_lost} of {len(rows)} requests (one at a "
              f"time) lost during their boot {sorted({b for _, ok, b in rows if not ok})}; "
              "ready " + ", ".join(f"{n} {t:.0f} s" for n, t in boot_s.items())
              + " after power-on")
        assert rep["unreachable"] == [], rep
        assert holders(rep) == {"lb_inside": [stays], "lb_outside": [stays]}, rep["vrrp"]
        assert holder(shells, c) == stays
        for n in ("lvs1", "w2"):
            con = guests[n].console()
            assert "keepalived: " in con and "installed (sha256" in con, con[-3000:]
            conf = raw(c, state, n, "cat /etc/keepalived/keepalived.conf", f"keepalived-{n}.conf")
            assert ("nopreempt" in conf) is not preempt, conf
            assert ("state MASTER" in conf) is (preempt and n == "lvs1"), conf
        assert "priority 80" in raw(c, state, "w2", "grep priority /etc/keepalived/keepalived.conf")
        states = vrrp_states(shells["w2"])
        print(f"w2's keepalived after its reboot: {states}")
        assert states == {"lb_inside": "BACKUP", "lb_outside": "BACKUP"}, states
        lvs1_state = "MASTER" if preempt else "BACKUP"
        assert vrrp_states(shells["lvs1"]) == {"lb_inside": lvs1_state, "lb_outside": lvs1_state}

        gap2, lost2 = fail_over(c, client, guests, "lvs2", "lvs1")
        shells.pop("lvs2").close()
        print(f"lvs2 ({'the backup' if preempt else 'the VIP holder'}) dies, VIPs on lvs1: "
              f"{gap2:.2f} s, {lost2} requests lost")
        rep = settled(c, state, "lvs1", expect_rc=1)
        assert [u["host"] for u in rep["unreachable"]] == ["lvs2"], rep["unreachable"]
        assert holders(rep) == {"lb_inside": ["lvs1"], "lb_outside": ["lvs1"]}, rep["vrrp"]
        gap3, lost3 = fail_over(c, client, guests, "lvs1", "w2")
        shells.pop("lvs1").close()
        print(f"failover lvs1 -> w2 (the web server made a director): {gap3:.2f} s, "
              f"{lost3} requests lost")
        rep = settled(c, state, "w2", expect_rc=1)
        assert sorted(u["host"] for u in rep["unreachable"]) == ["lvs1", "lvs2"], rep
        assert holders(rep) == {"lb_inside": ["w2"], "lb_outside": ["w2"]}, rep["vrrp"]
        assert vrrp_states(shells["w2"]) == {"lb_inside": "MASTER", "lb_outside": "MASTER"}
        got = requests(client, 40)
        assert all(ok and b == "w1" for _, ok, b in got), got
        (c.workdir / "figures.json").write_text(json.dumps({
            "gap_s": gap, "lost": lost, "assign_s": took, "assign_lost": assign_lost,
            "return_lost": back_lost, "boot_s": boot_s, "gap2_s": gap2, "lost2": lost2,
            "gap3_s": gap3, "lost3": lost3}))
    except Exception:
        print_lab(c, guests)
        raise
    finally:
        for sh in shells.values():
            sh.close()

def holder(shells: dict[str, Shell], c: LabCluster) -> str | None:
    """The one director (of those with a shell) that has the VIP and the gateway VIP."""
    gw = str(c.inventory.lvs_pairs["lb"].gateway_vips["inside"])
    have = []
    for n, sh in shells.items():
        if c.inventory.hosts[n].role.name != "lvs":
            continue
        st, out = sh.run("ip -o -4 addr show")
        assert st == 0, out
        if f" {VIP}/" in out and f" {gw}/" in out:
            have.append(n)
    assert len(have) <= 1, have
    return have[0] if have else None


def vrrp_states(sh: Shell) -> dict[str, str]:
    """keepalived's own view: SIGUSR1 makes it dump its state to /tmp/keepalived.data
    (only the instance and state lines come back: the whole dump over hvc0 took over
    the shell's 20 s under load)."""
    st, out = sh.run("rm -f /tmp/keepalived.data; kill -USR1 $(cat /run/keepalived.pid); "
                     "for i in 1 2 3 4 5 6 7 8 9 10; do [ -s /tmp/keepalived.data ] && break; "
                     "sleep 0.5; done; grep -E '^ *(VRRP Instance|State) = ' "
                     "/tmp/keepalived.data")
    assert st == 0, out
    states: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        m = re.match(r"\s*VRRP Instance = (\S+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"\s*State = (\S+)", line)
        if m and name and name not in states:
            states[name] = m.group(1)
    return states
