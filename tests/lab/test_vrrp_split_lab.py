"""Two directors that were both MASTER (their adverts lost between them) agree again,
and the client's ARP entry for the VIP ends at the one that keeps the VIPs.

The real keepalived (VRRP only, ``--vrrp``: the host kernel has no IPVS) runs the
keepalived.conf dsas renders for each director, in namespaces on two bridges (veths
named bond0 and bond0.2, as the config names them). ebtables on the bridges drops
VRRP between them: the backup's master-down timer runs out, both hold the VIPs and
both send gratuitous ARP, the backup's last. When the adverts flow again the backup
steps down silently; unless someone ARPs again, the client keeps sending to a director
that no longer has the VIP. This test shows it without the fix (the client stays at
the MAC of lvs2, which has no VIP). It fits the first failovers of 8.0-8.6 s that the
VM test saw with three directors: 3.6 s to the take-over plus keepalived's 5 s
garp_master_delay before its second set of gratuitous ARPs; lvs2 and the new director
w2 had priorities 100 and 99, master-down timers 4 ms apart, and in TCG guests both
could become MASTER.

dsas renders ``vrrp_higher_prio_send_advert`` (the one stepping down sends one more
advert first) and ``vrrp_garp_lower_prio_repeat`` (a MASTER that hears a lower
priority sends gratuitous ARP again), keepalived's own remedy for exactly this.
The client sends nothing during the test: its ARP entry can only change by what the
directors send.
"""

from __future__ import annotations

import time
from pathlib import Path

from lab.lvs import INVENTORY, VIP
from lab.testing import Lab, require_root, require_tool
from lab.vrrp import GARP_DELAY, client_mac, director_lab, has_vip, wait
from provision.inventory import load
from provision.render import render_keepalived


def test_split_masters_heal_and_the_clients_arp_follows_the_one_that_stays(
        lab: Lab, tmp_path: Path) -> None:
    require_root()
    keepalived = require_tool("keepalived")
    ebtables = require_tool("ebtables")
    (tmp_path / "cluster.yaml").write_text(INVENTORY)
    inv = load(tmp_path / "cluster.yaml")
    sw, routers, client = director_lab(lab, inv, tmp_path)
    for d in routers.values():
        d.write(render_keepalived(inv, inv.hosts[d.name]))
        d.start(keepalived)
    d1, d2 = routers["lvs1"], routers["lvs2"]
    r1, mac1, r2, mac2 = d1.ns, d1.mac, d2.ns, d2.mac
    wait(lambda: has_vip(r1), "VIP on lvs1")
    time.sleep(GARP_DELAY + 1)  # lvs1's second set of gratuitous ARPs is behind us
    client.run(["ping", "-c", "1", "-W", "2", VIP])
    assert client_mac(client) == mac1
    assert not has_vip(r2)

    drop = ["-p", "IPv4", "--ip-proto", "112", "-j", "DROP"]
    sw.run([ebtables, "-A", "FORWARD", *drop])
    try:
        wait(lambda: has_vip(r2), "VIP on lvs2 too (both MASTER)")
        # lvs2's gratuitous ARP is the last the client heard
        wait(lambda: client_mac(client) == mac2, "the client's entry at lvs2")
        time.sleep(GARP_DELAY + 1)  # and lvs2's second set
        assert has_vip(r1) and client_mac(client) == mac2
    finally:
        sw.run([ebtables, "-D", "FORWARD", *drop])
    wait(lambda: not has_vip(r2), "lvs2 stepping down")
    assert has_vip(r1)
    try:
        wait(lambda: client_mac(client) == mac1, "the client's entry back at lvs1 "
             "(gratuitous ARP after the split)", timeout=GARP_DELAY - 1)
    except AssertionError as e:
        raise AssertionError(f"{e}; client has {client_mac(client)}, lvs1 {mac1}, lvs2 {mac2}"
                             f"\n{d1.log()[-2000:]}\n{d2.log()[-2000:]}") from None
