"""What real machines boot today, proven with real firmware (OVMF) against `dsas serve`:

    w104   OVMF HTTP boot only (QEMU: no PXE boot options): DHCP gives the URL of
           ipxe.efi, HTTPClient echoed; no TFTP at all (a capture of its MAC shows none)
    w105   OVMF with Secure Boot on and Microsoft's keys (OVMF_VARS_4M.ms.fd), loader
           grub-secure: signed shim -> signed GRUB -> per-host grub.cfg -> signed kernel
    w106   the same Secure Boot firmware given the unsigned ipxe.efi: refused
    w101   BIOS (SeaBIOS + iPXE ROM), w103 OVMF PXE -> ipxe.efi: the existing paths, for
           the power-on-to-ready figures of every path in the same run; w101 is also
           dual-stack (its IPv6 address from dsas.conf answers ping; DNS has AAAA/PTR)
    w107   OVMF PXE over IPv6: DHCPv6 gives its inventory address and the option 59 URL
    w108   IPv6 only (netboot6; the master's bridge drops every IPv4/ARP frame of its
           MACs): OVMF PXEv6 -> DHCPv6 -> ipxe.efi by TFTP over IPv6 -> RA (M) and
           DHCPv6 in iPXE -> boot.ipxe, kernel, initrd over HTTP over IPv6 -> the
           initramfs's dsas.ip6 address -> dsas.conf, image -> dsas-init -> ready,
           every report from its IPv6 address

At most two guests run at once (the machine has 2 cores shared with other work).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from lab.clone import tiny_boot_root
from lab.cluster import LabCluster
from lab.testing import Lab, require_root, require_tool
from provision.inventory import load
from tests.support.paths import ROOT

LAB_INVENTORY = ROOT / "etc" / "dsas" / "lab.yaml"
EXTRA_HOSTS = """
  w104:                           # OVMF HTTP boot
    role: web
    macs: ["52:54:00:18:00:14", "52:54:00:18:01:14"]
    addresses: {inside: 198.18.1.14, outside: 198.19.2.14}
  w105:                           # Secure Boot through Debian's signed shim and GRUB
    role: web
    loader: grub-secure
    macs: ["52:54:00:18:00:15", "52:54:00:18:01:15"]
    addresses: {inside: 198.18.1.15, outside: 198.19.2.15}
  w106:                           # Secure Boot firmware, but handed the unsigned ipxe.efi
    role: web
    macs: ["52:54:00:18:00:16", "52:54:00:18:01:16"]
    addresses: {inside: 198.18.1.16, outside: 198.19.2.16}
  w107:                           # OVMF PXE over IPv6 (DHCPv6)
    role: web
    macs: ["52:54:00:18:00:17", "52:54:00:18:01:17"]
    addresses: {inside: 198.18.1.17, outside: 198.19.2.17}
    addresses6: {inside: "2001:db8:18::17"}
  w108:                           # IPv6 only: OVMF PXEv6 -> ipxe.efi -> ready
    role: web
    netboot6: true
    macs: ["52:54:00:18:00:18", "52:54:00:18:01:18"]
    addresses: {inside: 198.18.1.18, outside: 198.19.2.18}
    addresses6: {inside: "2001:db8:18::18"}
"""
PATHS = {"w101": "bios", "w103": "uefi", "w104": "uefi-http", "w105": "uefi-secure"}
LABELS = {**PATHS, "w108": "uefi-pxe6, IPv6 only"}
PREFIX6, MASTER_V6, W101_V6 = "2001:db8:18::/64", "2001:db8:18::1/64", "2001:db8:18::11"
TIMINGS: list[str] = []  # printed in the terminal summary (conftest)
READY: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    require_root()
    for tool in ("qemu-system-x86_64", "curl", "tcpdump"):
        require_tool(tool)
    work = tmp_path_factory.mktemp("firmware")
    boot = work / "boot"
    tiny_boot_root(boot)
    inv_path = work / "lab.yaml"
    # w101 is dual-stack: the inside network has an IPv6 prefix, w101 an address on it
    text = LAB_INVENTORY.read_text().replace(
        "  master_address: 198.18.0.1\n",
        f'  master_address: 198.18.0.1\n  master_address6: "{MASTER_V6.split("/")[0]}"\n',
        1).replace(
        "cidr: 198.18.0.0/22\n", f'cidr: 198.18.0.0/22\n    ipv6: "{PREFIX6}"\n', 1).replace(
        "addresses: {inside: 198.18.1.11, outside: 198.19.2.11}\n",
        "addresses: {inside: 198.18.1.11, outside: 198.19.2.11}\n"
        f'    addresses6: {{inside: "{W101_V6}"}}\n', 1)
    inv_path.write_text(text + EXTRA_HOSTS)
    inv = load(inv_path)
    with Lab() as lab:
        c = LabCluster(lab, inv, inv_path, work, boot,
                       ["-v", "--only", "dhcp,tftp,http,dns,ra,dhcp6"])
        c.setup_network()
        c.master.run(["ip", "-6", "addr", "add", MASTER_V6, "dev", "br0", "nodad"])
        c.start_serve()
        for name, firmware in {**PATHS, "w106": "uefi-secure", "w107": "uefi-pxe6",
                               "w108": "uefi-pxe6"}.items():
            c.add_guest(name, list(inv.hosts[name].macs), firmware)
        no_ipv4(c, inv.hosts["w108"].macs)
        yield c
        c.stop()


def no_ipv4(c: LabCluster, macs: tuple[str, ...]) -> None:
    """IPv4 off on these MACs' link: the master's bridge drops their IPv4 and ARP frames
    (tagged too), both ways; IPv6 passes."""
    ebtables = require_tool("ebtables")
    for mac in macs:
        for chain, who in (("INPUT", "-s"), ("FORWARD", "-s"), ("FORWARD", "-d"),
                           ("OUTPUT", "-d")):
            for proto in (["-p", "IPv4"], ["-p", "ARP"], ["-p", "802_1Q", "--vlan-encap", "IPv4"],
                          ["-p", "802_1Q", "--vlan-encap", "ARP"]):
                c.master.run([ebtables, "-A", chain, who, mac, *proto, "-j", "DROP"])


def boot(c: LabCluster, names: list[str], timeout: float = 360, keep: tuple[str, ...] = ()
         ) -> None:
    """Power on ``names`` together (at most two) and wait until each reports ready/failed;
    then power them off, except those in ``keep``."""
    assert len(names) <= 2
    for n in names:
        c.guests[n].start()

    def note(nodes: dict) -> None:  # type: ignore[type-arg]
        for n in names:
            st = nodes.get(n)
            if st is not None and st.stage in ("ready", "failed") and n not in READY:
                READY[n] = c.guests[n].elapsed()

    try:
        c.wait_stages(names, ("ready", "failed"), timeout, on_poll=note)
    except Exception:
        print(c.serve_log()[-5000:], file=sys.stderr)
        for n in names:
            print(f"---- {n}\n{c.guests[n].console()[-3000:]}", file=sys.stderr)
        raise
    finally:
        for n in names:
            if n not in keep or n not in READY:
                c.guests[n].stop()
    for n in names:
        TIMINGS.append(f"firmware: {n} ({LABELS[n]}) power-on to ready {READY[n]:.1f} s "
                       f"({len(names)} TCG guests at once; the machine is shared and loaded)")


@pytest.fixture(scope="module")
def modern(cluster: LabCluster) -> dict[str, str]:
    """w104 (HTTP boot) and w105 (Secure Boot) boot together; w104's frames are captured."""
    pcap = cluster.workdir / "w104.pcap"
    mac = cluster.inventory.hosts["w104"].macs[0]
    with (cluster.workdir / "tcpdump.err").open("wb") as err:
        dump = cluster.master.popen(["tcpdump", "-i", "br0", "-n", "-U", "-w", str(pcap),
                                     "ether", "host", mac], stdout=subprocess.DEVNULL,
                                    stderr=err)
    deadline = time.monotonic() + 10
    while "listening on" not in (cluster.workdir / "tcpdump.err").read_text():
        assert time.monotonic() < deadline and dump.poll() is None, "tcpdump did not start"
        time.sleep(0.1)
    try:
        boot(cluster, ["w104", "w105"])
    finally:
        cluster.lab.stop(dump)
    out = cluster.master.run(["tcpdump", "-n", "-r", str(pcap)], check=False, timeout=60)
    return {"capture": out.stdout}


def test_uefi_http_boot_reaches_ready_without_tftp(cluster: LabCluster,
                                                  modern: dict[str, str]) -> None:
    assert cluster.nodes()["w104"].stage == "ready"
    log = cluster.serve_log()
    assert re.search(r"dhcp ACK 198\.18\.1\.14 host=w104 .*file=http://198\.18\.0\.1/ipxe\.efi",
                     log), "OVMF's HTTP boot was not answered with ipxe.efi's URL"
    assert re.search(r"dhcp ACK 198\.18\.1\.14 host=w104 .*file=http://198\.18\.0\.1/hosts/"
                     r"w104/boot\.ipxe", log), "ipxe.efi did not follow"
    capture = modern["capture"]
    assert "198.18.0.1.80: " in capture or "198.18.0.1.http: " in capture, capture[-2000:]
    tftp = [line for line in capture.splitlines() if re.search(r"\.(69|tftp)[: ]", line)]
    assert tftp == [], tftp[:5]
    assert not re.search(r"tftp: (?:served|refused) \S+ (?:to|from) 198\.18\.1\.14\b", log)
    assert "HTTP" in cluster.guests["w104"].console()  # OVMF: ">>Start HTTP Boot over IPv4"


def test_secure_boot_through_signed_shim_and_grub_reaches_ready(
        cluster: LabCluster, modern: dict[str, str]) -> None:
    assert cluster.nodes()["w105"].stage == "ready"
    log = cluster.serve_log()
    assert re.search(r"dhcp ACK 198\.18\.1\.15 host=w105 .*file=shimx64\.efi", log)
    assert re.search(r"tftp: served shimx64\.efi to 198\.18\.1\.15", log), log[-3000:]
    assert re.search(r"tftp: served grubx64\.efi to 198\.18\.1\.15", log)
    assert re.search(r"tftp: served grub/grub\.cfg to 198\.18\.1\.15 \(host=w105\)", log)
    assert re.search(r"tftp: served images/tiny/\S+/vmlinuz to 198\.18\.1\.15", log)
    assert "ipxe.efi to 198.18.1.15" not in log and "host=w105 .*boot.ipxe" not in log
    console = cluster.guests["w105"].console()
    assert "Secure boot enabled" in console, console[-3000:]  # the kernel says so


def test_secure_boot_refuses_the_unsigned_ipxe_efi(cluster: LabCluster) -> None:
    g = cluster.guests["w106"]
    g.start()
    try:
        refusal = g.wait_for(r"failed to (?:load|start) Boot\S+ .*"
                             r"(?:Access Denied|Security Violation)", 240)
        print(f"\nw106: firmware refused: {refusal.group(0)}")
        log = cluster.serve_log()
        # The firmware fetched ipxe.efi, then refused to run it: no iPXE DHCP, no script.
        assert re.search(r"tftp: served ipxe\.efi to 198\.18\.1\.16", log)
        assert not re.search(r"host=w106 .*boot\.ipxe", log)
        assert "iPXE" not in g.console()
    finally:
        g.stop()
    assert cluster.nodes().get("w106") is None or cluster.nodes()["w106"].stage is None


def test_power_on_to_ready_of_every_path(cluster: LabCluster, modern: dict[str, str]) -> None:
    """The existing BIOS and UEFI-PXE paths, in the same run, for comparison (printed)."""
    boot(cluster, ["w101", "w103"], keep=("w101",))  # w101 stays on for the next test
    for name in PATHS:
        assert cluster.nodes()[name].stage == "ready", name
    for line in TIMINGS:
        print(line)


def test_dual_stack_guest_answers_on_both_addresses_and_dns_has_both(
        cluster: LabCluster) -> None:
    """w101 (booted above) has its inventory IPv6 address from dsas.conf, applied by
    dsas-init; the master's DNS answers AAAA and the ip6.arpa PTR for it."""
    g = cluster.guests["w101"]
    if not g.running():  # this test alone (-k): boot it
        boot(cluster, ["w101"], keep=("w101",))
    try:
        assert cluster.nodes()["w101"].stage == "ready"
        assert f"bond0={W101_V6}/64" in (cluster.nodes()["w101"].reason or "")
        for argv in (["ping", "-n", "-c", "2", "-W", "2", "198.18.1.11"],
                     ["ping", "-6", "-n", "-c", "2", "-W", "2", W101_V6]):
            ok = False
            for _ in range(5):  # DAD: the address is tentative for about a second
                out = cluster.master.run(argv, check=False, timeout=20)
                if out.returncode == 0:
                    ok = True
                    break
            assert ok, f"{argv[-1]}: {out.stdout}"
    finally:
        g.stop()
    dig = ["dig", "+short", "+time=2", "+tries=2", "@198.18.0.1"]
    out = cluster.master.run([*dig, "AAAA", "w101.lab.example"], timeout=20)
    assert out.stdout.split() == [W101_V6]
    out = cluster.master.run([*dig, "-x", W101_V6], timeout=20)
    assert out.stdout.split() == ["w101.lab.example."]


def test_ovmf_pxe_over_ipv6_gets_its_address_and_boot_url_by_dhcpv6(
        cluster: LabCluster) -> None:
    """Real firmware over DHCPv6: OVMF's PXEv6 gets w107's inventory address and the
    option 59 URL of ipxe.efi (w108 boots on from there, IPv6 only)."""
    g = cluster.guests["w107"]
    g.start()
    try:
        g.wait_for(r"(?i)Station IP address is 2001:DB8:18:0:0:0:0:17\s+Server IP address is "
                   r"2001:DB8:18:0:0:0:0:1\s+NBP filename is ipxe\.efi", 180)
        log = cluster.serve_log()
        reply = re.search(r"dhcp6 REPLY 2001:db8:18::17 host=w107 mac=52:54:00:18:00:17 "
                          r"\(for REQUEST\) boot=tftp://\[2001:db8:18::1\]/ipxe\.efi", log)
        assert reply, log[-3000:]
        # PXEv4 is off: nothing asked DHCPv4 before (OVMF falls back to HTTPv4 later)
        assert "dhcp ACK 198.18.1.17" not in log[: reply.start()]
    finally:
        g.stop()


def test_ipv6_only_guest_netboots_through_ovmf_pxe6_and_ipxe_to_ready(
        cluster: LabCluster) -> None:
    """w108 has no IPv4 on its link: every step of its boot is over IPv6."""
    boot(cluster, ["w108"], timeout=480)
    st = cluster.nodes()["w108"]
    assert st.stage == "ready", (st.stage, st.reason)
    assert "bond0=2001:db8:18::18/64" in (st.reason or "")
    log = cluster.serve_log()
    steps = [
        r"dhcp6 REPLY 2001:db8:18::18 host=w108 mac=52:54:00:18:00:18 \(for REQUEST\) "
        r"boot=tftp://\[2001:db8:18::1\]/ipxe\.efi",
        r"tftp: served ipxe\.efi to 2001:db8:18::18 \(host=w108\)",
        r"dhcp6 REPLY 2001:db8:18::18 host=w108 mac=52:54:00:18:00:18 \(for \w+\) "
        r"boot=http://\[2001:db8:18::1\]/hosts/w108/boot\.ipxe",
        r"http: served hosts/w108/boot\.ipxe to 2001:db8:18::18",
        r"http: served images/tiny/\S+/vmlinuz to 2001:db8:18::18",
        r"http: served hosts/w108/dsas\.conf to 2001:db8:18::18",
        r"http: node w108 reports ready: [^\n]* \(from 2001:db8:18::18\)",
    ]
    at, when = 0, []
    for step in steps:  # in this order
        m = re.compile(step).search(log, at)
        assert m, f"missing, after what came before: {step}\n{log[at:at + 3000]}"
        start = log.rfind("\n", 0, m.start()) + 1
        end = log.find("\n", m.end())
        when.append((log[start:start + 23], log[m.start():end if end >= 0 else None][:110]))
        at = m.end()
    print("\nw108 (the master's log times):")
    for stamp, what in when:
        print(f"  {stamp[11:]}  {what}")
    # nothing reached the master over IPv4 (w108's reports name its static IPv4
    # addresses from dsas.conf: dsas-init sets them, the bridge drops their frames)
    assert not re.search(r"(?:to|from) 198\.18\.1\.18\b|dhcp \w+ 198\.18\.1\.18\b", log)
    assert [line for line in log.splitlines()
            if re.search(r"52:54:00:18:0[01]:18", line) and "dhcp6" not in line] == []
    out = cluster.master.run(["ebtables", "-L", "INPUT", "--Lc"], check=False, timeout=20)
    print(f"\nw108: ebtables INPUT drops (its IPv4/ARP frames):\n{out.stdout}")
    for line in TIMINGS:
        if line.startswith("firmware: w108"):
            print(line)
