"""The node side of the netboot, proven in QEMU: the Debian kernel + the netboot
initramfs boot against a stand-in master (busybox udhcpd, a small HTTP server
with the event API), fetch dsas.conf and the tiny image, and dsas-init makes
the guest its host: bond, VLAN, addresses, routes; a pulled cable is survived;
a wrong dsas.conf and a silent master fail loudly.

Direct kernel boot (-kernel/-initrd) replaces PXE here; the full PXE lab test
with `dsas serve` lives with the lead's lab tests.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.qemu import wait_shell
from lab.testing import Lab, read_until, wait_for
from provision.imaging.build import BuildResult
from tests.support.nodeboot import NodeLab, build_tiny, dsas_conf

MACS = ["52:54:00:18:00:01", "52:54:00:18:00:02"]
BOND_ADDR, VLAN_ADDR = "198.18.0.21", "198.18.2.21"
STAGES = ("initramfs", "dsas.conf", "image", "configured", "ready")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> BuildResult:
    return build_tiny(tmp_path_factory.mktemp("store") / "images")


@pytest.fixture
def node_lab(lab: Lab, tmp_path: Path, tiny: BuildResult) -> Iterator[NodeLab]:
    nl = NodeLab(lab, tmp_path, tiny.path.parent.parent)
    yield nl
    nl.close()


def test_guest_boots_into_its_host_and_survives_a_pulled_cable(
        node_lab: NodeLab, tiny: BuildResult) -> None:
    url = node_lab.host("n1", dsas_conf("n1", MACS, BOND_ADDR, VLAN_ADDR))
    guest = node_lab.guest("n1", MACS, tiny, f"dsas.url={url} dsas.mac={MACS[0]}")
    guest.start()
    ready = node_lab.wait_stage("n1", ("ready", "failed"), 90, guest)
    seconds = guest.elapsed()
    assert ready["stage"] == "ready", ready
    # the version the guest runs, from the manifest the initramfs verified (issue 23:
    # `dsas rollout` waits for it)
    assert ready.get("image") == f"tiny@{tiny.version}", ready
    print(f"\nn1: power-on to ready {seconds:.1f} s (TCG)")
    stages = [e["stage"] for e in node_lab.events("n1")]
    assert stages == list(STAGES), stages
    assert f"bond0={BOND_ADDR}/24" in ready["detail"] and f"bond0.2={VLAN_ADDR}/24" in ready[
        "detail"]
    console = guest.console()
    assert "dsas: released the DHCP lease on eth0" in console
    assert "dsas-init: ready:" in console

    shell = wait_shell(guest)
    status, bonding = shell.run("cat /proc/net/bonding/bond0")
    assert status == 0
    assert "Bonding Mode: fault-tolerance (active-backup)" in bonding
    assert "Slave Interface: eth0" in bonding and "Slave Interface: eth1" in bonding
    assert "Currently Active Slave: eth0" in bonding
    _, vlan = shell.run("ip -4 addr show dev bond0.2")
    assert f"inet {VLAN_ADDR}/24" in vlan
    _, eth0 = shell.run("ip -4 addr show dev eth0")
    assert "inet " not in eth0  # the DHCP address is gone: the host only has its own

    assert node_lab.ping(BOND_ADDR), "bond address does not answer"
    assert node_lab.ping(VLAN_ADDR), "VLAN address does not answer (through the 802.1Q port)"

    # Pull eth0's cable while pinging: the bond fails over to eth1.
    pinger = node_lab.ns.popen(["ping", "-n", "-c", "20", "-W", "1", BOND_ADDR],
                               stdout=subprocess.PIPE, text=True)
    read_until(pinger, lambda t: " bytes from " in t, 20, "a ping reply before the pull")
    guest.set_link(0, up=False)
    pinger.communicate(timeout=40)
    assert pinger.returncode == 0, "ping through the failover lost every reply"
    _, bonding = shell.run("grep 'Currently Active' /proc/net/bonding/bond0")
    assert "Currently Active Slave: eth1" in bonding
    assert node_lab.ping(BOND_ADDR, count=3, source_timeout=1)
    assert node_lab.ping(VLAN_ADDR, count=3, source_timeout=1)

    guest.set_link(0, up=True)
    wait_for(lambda: re.search(r"Slave Interface: eth0\nMII Status: up",
                               shell.run("cat /proc/net/bonding/bond0")[1]), 20,
             "the bond to see eth0's link again")
    assert node_lab.ping(BOND_ADDR, count=3, source_timeout=1)

    # dsas-init is re-runnable: nothing to change, still ready.
    status, out = shell.run("dsas-init", timeout=30)
    assert status == 0, out
    assert f"bond0: address {BOND_ADDR}/24 (already set)" in out
    assert "VLAN bond0.2: exists" in out
    shell.close()


def test_wrong_dsas_conf_and_silent_master_fail_loudly(
        node_lab: NodeLab, tiny: BuildResult) -> None:
    # An unknown NIC in the bond: dsas-init refuses, naming the key, reports failed.
    bad_macs = [MACS[0], "52:54:00:18:99:99"]
    url = node_lab.host("n2", dsas_conf("n2", MACS, BOND_ADDR, VLAN_ADDR, bond_macs=bad_macs))
    bad = node_lab.guest("n2", MACS, tiny, f"dsas.url={url} dsas.onfail=halt")
    # A master that does not answer: bounded retries, a clear message, failure.
    silent = node_lab.guest("n3", ["52:54:00:18:00:03", "52:54:00:18:00:04"], tiny,
                            "dsas.url=http://198.18.0.1:8081/hosts/n3/dsas.conf "
                            "dsas.tries=3 dsas.maxwait=2 dsas.onfail=halt")
    bad.start()
    silent.start()
    failed = node_lab.wait_stage("n2", ("failed", "ready"), 90, bad)
    assert failed["stage"] == "failed"
    assert failed["detail"].startswith("BOND_MACS[1]: no NIC has MAC 52:54:00:18:99:99"), failed
    bad.wait_for(r"dsas: BOOT FAILED: BOND_MACS\[1\]: no NIC has MAC 52:54:00:18:99:99", 10)
    assert "dsas-init: FAILED: BOND_MACS[1]" in bad.console()
    assert "switching root" not in bad.console()  # the initramfs stopped the boot
    assert [e["stage"] for e in node_lab.events("n2")] == [
        "initramfs", "dsas.conf", "image", "failed"]

    silent.wait_for(r"BOOT FAILED: cannot fetch dsas.conf", 60)
    console = silent.console()
    assert "the master does not answer for dsas.conf" in console
    assert "attempt 2/3" in console and "giving up on dsas.conf after 3 attempts" in console
    # Its events go to the same silent master: none arrive, and the console says so
    # (after "BOOT FAILED", once the report's wget has given up: up to 5 s).
    silent.wait_for(r"could not report stage 'failed'", 30)
    assert node_lab.events("n3") == []
