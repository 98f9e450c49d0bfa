"""LVS direct routing (issue 16) on the guests' real kernel: the directors forward the
client's packets to the real servers' MACs, and the real servers answer the client
themselves, from the VIP they hold on lo.

The lab of test_lvs_vm (lab/lvs.py) with the virtual service's ``forwarding: DR``:
no gateway VIP; the inside network's gateway is the master namespace (a second
address), which routes
to the outside bridge (the Internet, as the client sees it). dsas-init gives each web
server the VIP on lo with arp_ignore/arp_announce from its own dsas.conf
(LVS_DR_VIPS); keepalived on the directors sets up IPVS with ``lb_kind DR``.

What shows it is direct routing and not NAT: on the inside bridge, every SYN-ACK from
the VIP to the client comes from a web server's MAC (a director never sends one), the
directors' IPVS tables say "Route", and no web server answers ARP for the VIP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cluster import LabCluster
from lab.lvs import (
    CLIENT,
    INVENTORY,
    VIP,
    WEB,
    boot,
    capture_vrrp,
    lvs_farm,
    print_lab,
    publish_key,
    requests,
    start_httpd,
    tiny_directors,
    wait_ready_since,
    wait_until,
)
from lab.netns import Netns
from lab.qemu import Shell, wait_shell

MEMORY = 384  # MiB
ROUTER = "198.18.0.2"  # the inside network's gateway: a second address of the master netns


def dr_inventory() -> str:
    inv = tiny_directors(INVENTORY)
    for old, new in (
            ("    forwarding: NAT\n", "    forwarding: DR\n"),
            ("    gateway_vips: {inside: 198.18.0.254}\n", ""),
            ("  inside: {cidr: 198.18.0.0/22, dns: [198.18.0.1]}\n",
             f"  inside: {{cidr: 198.18.0.0/22, gateway: {ROUTER}, dns: [198.18.0.1]}}\n")):
        assert inv.count(old) == 1, old
        inv = inv.replace(old, new)
    return inv


@pytest.fixture
def dr_lab(tmp_path: Path) -> Iterator[tuple[LabCluster, Netns]]:
    with lvs_farm(tmp_path, dr_inventory(), ("tiny", "tiny-lvs")) as farm:
        yield farm


@pytest.mark.timeout(3600)
def test_direct_routing_real_servers_answer_the_client_from_the_vip_on_lo(
        dr_lab: tuple[LabCluster, Netns]) -> None:
    c, client = dr_lab
    assert c.inventory.virtual_services["www"].forwarding == "DR"
    publish_key(c)
    # the master namespace is the inside network's gateway: it routes the real servers'
    # answers (source VIP) to the outside bridge
    c.master.run(["ip", "addr", "add", f"{ROUTER}/22", "dev", "br0"])
    c.master.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
    c.start_serve()
    t0 = time.time()
    guests = {n: boot(c, n, MEMORY) for n in ("lvs1", "lvs2", *WEB)}
    shells: dict[str, Shell] = {}
    try:
        for n in guests:
            print(f"{n}: ready {wait_ready_since(c, n, t0, 1500):.0f} s after power-on")
        shells.update({n: wait_shell(guests[n]) for n in guests})
        for n in WEB:
            con = guests[n].console()
            assert f"LVS-DR real server: VIP {VIP} on lo" in con, con[-3000:]
            st, out = shells[n].run("ip -4 addr show dev lo; "
                                    "cat /proc/sys/net/ipv4/conf/all/arp_ignore "
                                    "/proc/sys/net/ipv4/conf/all/arp_announce")
            assert st == 0 and f"inet {VIP}/32" in out, out
            assert out.split()[-2:] == ["1", "2"], out
            st, said = shells[n].run(f"mkdir -p /www && echo {n} > /www/index.html")
            assert st == 0, said
            start_httpd(shells[n])

        def both_answer() -> bool:
            return {b for _, ok, b in requests(client, 10, 0.05, 20) if ok} == set(WEB)

        wait_until(both_answer, 180, "answers from both web servers through the VIP", 2)
        for d in ("lvs1", "lvs2"):
            st, table = shells[d].run("ipvsadm -Ln")
            print(f"---- {d}: ipvsadm -Ln\n{table}")
            reals = re.findall(r"->\s+(\S+):80\s+(\S+)", table)
            assert st == 0 and {a for a, _ in reals} == {
                str(c.inventory.hosts[w].primary_interface.address) for w in WEB}, table
            assert {fwd for _, fwd in reals} == {"Route"}, table

        caps = capture_vrrp(c, "dr")
        got = requests(client, 60)
        for p, _ in caps.values():
            c.lab.stop(p)
        names = [b for _, ok, b in got if ok]
        assert len(got) == 60 and all(ok for _, ok, _ in got), got
        assert set(names) == set(WEB), names
        print(f"60 requests through {VIP} (DR): {names.count('w1')} w1, "
              f"{names.count('w2')} w2, 0 failed")

        # who sent the SYN-ACKs from the VIP to the client, on the inside bridge
        macs = {m.lower(): h.name for h in c.inventory.hosts.values() for m in h.macs}
        senders: dict[str, int] = {}
        for line in caps["br0"][1].read_text().splitlines():
            f = line.split()
            if len(f) > 1 and f" {VIP}.80 > {CLIENT}." in line and "[S.]" in line:
                who = macs.get(f[1].lower(), f[1])
                senders[who] = senders.get(who, 0) + 1
        print(f"SYN-ACKs from {VIP} on the inside bridge, by sender: {senders}")
        assert set(senders) == set(WEB), senders
        # and no web server answered ARP for the VIP (arp_ignore): the client's entry
        # is a director's
        neigh = client.run(["ip", "neigh", "show", VIP]).stdout.lower()
        holder_macs = {m for d in ("lvs1", "lvs2") for m in c.inventory.hosts[d].macs}
        assert any(m in neigh for m in holder_macs), neigh
    except Exception:
        print_lab(c, guests)
        raise
    finally:
        for sh in shells.values():
            sh.close()
