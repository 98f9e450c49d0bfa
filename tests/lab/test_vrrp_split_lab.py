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

import subprocess
import time
from pathlib import Path

from lab.lvs import CLIENT, INVENTORY, VIP
from lab.netns import Netns
from lab.testing import Lab, require_root, require_tool
from provision.inventory import load
from provision.render import render_keepalived

BOUND = 20.0  # s for any one state to be reached
GARP_DELAY = 5  # keepalived's default garp_master_delay: its second set of gratuitous ARPs


def wait(ok, what: str, timeout: float = BOUND) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s"
        time.sleep(0.1)


def has_vip(ns: Netns) -> bool:
    return f"inet {VIP}/" in ns.run(["ip", "-4", "addr", "show"]).stdout


def client_mac(client: Netns) -> str:
    out = client.run(["ip", "neigh", "show", VIP]).stdout.split()
    return out[out.index("lladdr") + 1].lower() if "lladdr" in out else ""


def test_split_masters_heal_and_the_clients_arp_follows_the_one_that_stays(
        lab: Lab, tmp_path: Path) -> None:
    require_root()
    keepalived = require_tool("keepalived")
    ebtables = require_tool("ebtables")
    (tmp_path / "cluster.yaml").write_text(INVENTORY)
    inv = load(tmp_path / "cluster.yaml")
    sw = lab.netns("sw")
    lab.bridge(sw, "brin")
    lab.bridge(sw, "brout")
    routers: dict[str, tuple[Netns, str]] = {}
    for name in ("lvs1", "lvs2"):
        host = inv.hosts[name]
        ns = lab.netns(name)
        for br, dev, net in (("brin", "bond0", "inside"), ("brout", "bond0.2", "outside")):
            inner = lab.plug(sw, br, ns)
            ns.run(["ip", "link", "set", inner, "down"])
            ns.run(["ip", "link", "set", inner, "name", dev])
            addr = host.interface_on(net)
            assert addr is not None
            ns.run(["ip", "addr", "add", f"{addr.address}/{addr.network.prefixlen}", "dev", dev])
            ns.run(["ip", "link", "set", dev, "up"])
        mac = ns.run(["cat", "/sys/class/net/bond0.2/address"]).stdout.strip().lower()
        conf = tmp_path / f"{name}.conf"
        # less the IPVS sync daemon: the host kernel has no IPVS (keepalived's VRRP
        # process dies without it)
        conf.write_text("".join(line for line in render_keepalived(inv, host).splitlines(True)
                                if "lvs_sync_daemon" not in line))
        routers[name] = (ns, mac)
    client = lab.netns("client")
    lab.plug(sw, "brout", client, f"{CLIENT}/24")
    for name, (ns, _) in routers.items():
        d = tmp_path / name
        d.mkdir()
        with (d / "log").open("w") as log:
            ns.popen([keepalived, "--vrrp", "--dont-fork", "--log-console", "--log-detail",
                      "-f", str(tmp_path / f"{name}.conf"), "-p", str(d / "k.pid"),
                      "-r", str(d / "v.pid")], stdout=log, stderr=subprocess.STDOUT)
    (r1, mac1), (r2, mac2) = routers["lvs1"], routers["lvs2"]
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
    logs = {n: (tmp_path / n / "log").read_text() for n in routers}
    try:
        wait(lambda: client_mac(client) == mac1, "the client's entry back at lvs1 "
             "(gratuitous ARP after the split)", timeout=GARP_DELAY - 1)
    except AssertionError as e:
        raise AssertionError(f"{e}; client has {client_mac(client)}, lvs1 {mac1}, lvs2 {mac2}"
                             f"\n{logs['lvs1'][-2000:]}\n{logs['lvs2'][-2000:]}") from None
