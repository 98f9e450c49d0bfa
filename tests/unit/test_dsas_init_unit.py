"""dsas-init at the shell level: a fake /sys, /proc and /etc under DSAS_ROOT, and
fake `ip`, `modprobe`, `hostname`, `swapon`, `mount` on PATH that log what they
were asked to do. The QEMU tests (test_nodeboot_vm.py) prove it on a real kernel;
these check the key handling: what each key turns into, and that a wrong key
stops the run with its name before anything is changed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.dsas_init_support import (
    DSAS_INIT,
    FAKE,
    MACS,
    Machine,
    conf,
)
from tests.support.paths import ROOT


def test_applies_hostname_modules_bond_vlan_addresses_routes_dns(machine: Machine) -> None:
    out = machine.run(conf())
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = machine.commands()
    assert "hostname n1" in cmds
    assert "modprobe virtio_net" in cmds
    assert machine.bonding("mode") == "active-backup"
    assert machine.bonding("miimon") == "100" and machine.bonding("primary") == "eth0"
    assert "modprobe 8021q" in cmds
    assert "ip link add link bond0 name bond0.2 type vlan id 2" in cmds
    assert "ip addr add 198.18.0.21/24 brd + dev bond0" in cmds
    assert "ip addr add 198.18.2.21/24 brd + dev bond0.2" in cmds
    assert "ip route replace default via 198.18.0.1 dev bond0" in cmds
    assert "ip route replace 198.18.2.0/24 dev bond0.2 table 101" in cmds
    assert "ip rule add from 198.18.2.21 table 101" in cmds
    resolv = (machine.root / "etc" / "resolv.conf").read_text()
    assert "search lab.test\nnameserver 198.18.0.1\n" in resolv
    assert (machine.root / "etc" / "hostname").read_text() == "n1\n"
    assert "198.18.0.21 n1.lab.test n1" in (machine.root / "etc" / "hosts").read_text()
    assert "dsas-init: service apache2: not in this image, not started" in out.stdout
    assert "dsas-init: ready: bond0=198.18.0.21/24 bond0.2=198.18.2.21/24" in out.stdout


def test_nics_are_matched_by_mac_not_by_name(tmp_path: Path) -> None:
    # The kernel calls them ens4/ens3 (swapped order); dsas.conf says eth0/eth1 by MAC.
    m = Machine(tmp_path, {"ens3": MACS[1], "ens4": MACS[0]})
    text = conf(BOND_NAME="", IFACE0="eth0", IFACE1="eth0.2")
    out = m.run(text)
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = m.commands()
    assert "ip addr add 198.18.0.21/24 brd + dev ens4" in cmds
    assert "ip link add link ens4 name ens4.2 type vlan id 2" in cmds
    assert "ip addr add 198.18.2.21/24 brd + dev ens4.2" in cmds
    assert "NICs by MAC: eth0=ens4 eth1=ens3" in out.stdout


def test_bond_with_arp_monitoring(machine: Machine) -> None:
    out = machine.run(conf(BOND_ARP_IP_TARGET="(198.18.0.1 198.18.0.2)", BOND_ARP_INTERVAL="200",
                           BOND_PRIMARY=""))
    assert out.returncode == 0, out.stdout + out.stderr
    assert machine.bonding("miimon") == "0" and machine.bonding("arp_interval") == "200"
    assert "arp_ip_target 198.18.0.1 198.18.0.2 every 200ms" in out.stdout


@pytest.mark.parametrize("changes,key,reason", [
    ({"BOND_MACS": f"({MACS[0]} 52:54:00:18:99:99)"}, "BOND_MACS[1]",
     "no NIC has MAC 52:54:00:18:99:99"),
    ({"NIC_MACS": f"({MACS[0]} 52:54:00:18:99:98)"}, "NIC_MACS[1]", "no NIC has MAC"),
    ({"BOND_MACS": f"({MACS[0]})"}, "BOND_MACS", "1 MACs for 2 NICs"),
    ({"BOND_MODE": "fastest"}, "BOND_MODE", "'fastest' is not a bonding mode"),
    ({"BOND_PRIMARY": "eth7"}, "BOND_PRIMARY", "'eth7' is not one of BOND_SLAVES"),
    ({"BOND_ARP_IP_TARGET": "(198.18.0.1)", "BOND_ARP_INTERVAL": "0"}, "BOND_ARP_INTERVAL",
     "needs an interval"),
    ({"IPADDRESS0": "198.18.0.300/24"}, "IPADDRESS0", "is not an address"),
    ({"IPADDRESS1": "198.18.2.21"}, "IPADDRESS1", "is not an address"),
    ({"VLAN1": "3"}, "VLAN1", "VLAN 3 but IFACE1=bond0.2 is VLAN 2"),
    ({"IFACE1": "bond1.2"}, "IFACE1", "'bond1' is neither the bond"),
    ({"GATEWAY[0]": "gw"}, "GATEWAY[0]", "'gw' is not an IPv4 address"),
    ({"DNS_SERVERS": "(198.18.0.1 nameserver)"}, "DNS_SERVERS[1]", "not an IPv4 address"),
    ({"SWDEVICE": "/dev/sdz2"}, "SWDEVICE", "/dev/sdz2: no such block device"),
    ({"SYSTEMNAME": "'bad_name'"}, "SYSTEMNAME", "not a valid host name"),
])
def test_a_wrong_key_fails_loudly_naming_it_before_any_change(
        machine: Machine, changes: dict[str, str], key: str, reason: str) -> None:
    out = machine.run(conf(**changes))
    assert out.returncode == 1
    line = next(ln for ln in out.stdout.splitlines() if "FAILED" in ln)
    assert line.startswith(f"dsas-init: FAILED: {key}: "), out.stdout
    assert reason in line, line
    assert machine.commands() == []  # validation comes before every change


def test_module_options_are_words_given_to_modprobe(machine: Machine) -> None:
    (machine.root / "sys" / "module" / "e1000e").mkdir()
    (machine.root / "etc" / "dsas.conf").write_text(
        conf(MODULES="('e1000 debug=1 copybreak=*' 'e1000e IntMode=1' virtio_net)"))
    (machine.root / "copybreak=globbed").write_text("")  # what copybreak=* would match
    out = subprocess.run(["bash", str(DSAS_INIT)], env=machine.env(), cwd=machine.root,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "modprobe e1000 debug=1 copybreak=*" in machine.commands()  # not globbed
    assert "module e1000 loaded with debug=1 copybreak=*" in out.stdout
    assert "module e1000e: already loaded (options 'IntMode=1' apply at next boot)" in out.stdout
    assert "module virtio_net loaded\n" in out.stdout


def test_not_bash_is_refused_naming_the_file(machine: Machine) -> None:
    out = machine.run(conf() + "MODULES=(unclosed\n")
    assert out.returncode == 1 and "dsas.conf: not valid bash" in out.stdout


def test_check_only_changes_nothing(machine: Machine) -> None:
    out = machine.run(conf(), "--check")
    assert out.returncode == 0 and "check only: nothing changed" in out.stdout
    assert machine.commands() == [] and not (machine.root / "etc" / "hostname").exists()


def test_rerun_changes_only_what_differs(machine: Machine) -> None:
    first = machine.run(conf())
    assert first.returncode == 0
    # The kernel now shows the bond as configured and the addresses as set.
    (machine.root / "sys/class/net/bond0/bonding/slaves").write_text("eth0 eth1\n")
    (machine.root / "sys/class/net/bond0.2").mkdir()
    (machine.bin / "ip").write_text(FAKE.replace("exit 0", """case "$*" in
  "-4 -o addr show dev bond0") echo "4: bond0 inet 198.18.0.21/24 brd + scope global" ;;
  "-4 -o addr show dev bond0.2") echo "5: bond0.2 inet 198.18.9.9/24 scope global" ;;
esac
exit 0"""))
    machine.log.write_text("")
    out = machine.run(conf())
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = machine.commands()
    assert "bond0: address 198.18.0.21/24 (already set)" in out.stdout
    assert "VLAN bond0.2: exists" in out.stdout
    assert "ip addr del 198.18.9.9/24 dev bond0.2" in cmds  # a stale address goes
    assert "ip addr add 198.18.2.21/24 brd + dev bond0.2" in cmds
    assert not any(c.startswith("ip addr add 198.18.0.21") for c in cmds)


def test_the_renderers_dsas_conf_is_understood(tmp_path: Path) -> None:
    """dsas.conf exactly as provision.render writes it for the lab inventory."""
    from provision.inventory import load
    from provision.render import render_host

    inv = load(ROOT / "etc" / "dsas" / "lab.yaml")
    w101 = inv.hosts["w101"]
    m = Machine(tmp_path / "w101", {"eth0": w101.macs[0], "eth1": w101.macs[1]})
    out = m.run(render_host(inv, w101, "dsas.conf"))
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = m.commands()
    assert "module bonding: already loaded (options 'mode=active-backup miimon=100 " \
        "primary=eth0' apply at next boot)" in out.stdout
    assert "modprobe 8021q" in cmds
    assert "ip addr add 198.19.2.11/24 brd + dev bond0.2" in cmds
    assert "ip route replace default via 198.19.2.1 dev bond0.2" in cmds  # first gateway

    # w109's second MAC is a typo in the inventory: the guest's NIC is :01:19.
    w109 = inv.hosts["w109"]
    m = Machine(tmp_path / "w109", {"eth0": w109.macs[0], "eth1": "52:54:00:18:01:19"})
    out = m.run(render_host(inv, w109, "dsas.conf"))
    assert out.returncode == 1
    assert "dsas-init: FAILED: BOND_MACS[1]: no NIC has MAC 52:54:00:18:01:99" in out.stdout
    assert "NIC_MACS[1]" not in out.stdout  # the same MAC is reported once
