"""dsas-init at the shell level: a fake /sys, /proc and /etc under DSAS_ROOT, and
fake `ip`, `modprobe`, `hostname`, `swapon`, `mount` on PATH that log what they
were asked to do. The QEMU tests (test_nodeboot_vm.py) prove it on a real kernel;
these check the key handling: what each key turns into, and that a wrong key
stops the run with its name before anything is changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .lab import Lab
from .nodeboot import dsas_conf

ROOT = Path(__file__).resolve().parent.parent
DSAS_INIT = ROOT / "boot-scripts" / "dsas-init"
DSAS_LIB = ROOT / "boot-scripts" / "lib"  # common.sh, /usr/lib/dsas in an image
MACS = ["52:54:00:18:00:01", "52:54:00:18:00:02"]

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$FAKE_LOG"
exit 0
"""


class Machine:
    """A fake machine: NICs (kernel name -> MAC) and a bonding driver's sysfs."""

    def __init__(self, tmp: Path, nics: dict[str, str]):
        self.root = tmp / "root"
        self.bin = tmp / "bin"
        self.log = tmp / "commands.log"
        tmp.mkdir(parents=True, exist_ok=True)
        self.log.write_text("")
        for d in ("etc", "proc", "run/dsas", "dev", "sys/module", "bin"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "proc" / "cmdline").write_text("console=ttyS0\n")
        (self.root / "proc" / "mounts").write_text("tmpfs / tmpfs rw 0 0\n")
        (self.root / "proc" / "swaps").write_text("Filename Type Size Used Priority\n")
        for name, mac in nics.items():
            d = self.root / "sys" / "class" / "net" / name
            d.mkdir(parents=True)
            (d / "address").write_text(mac + "\n")
            (d / "type").write_text("1\n")
            (d / "device").mkdir()
        bond = self.root / "sys" / "class" / "net" / "bond0" / "bonding"
        bond.mkdir(parents=True)
        for f, v in (("mode", "balance-rr 0"), ("slaves", ""), ("miimon", "0"),
                     ("arp_interval", "0"), ("arp_ip_target", ""), ("primary", ""),
                     ("active_slave", "")):
            (bond / f).write_text(v + "\n")
        (self.root / "sys" / "class" / "net" / "bonding_masters").write_text("bond0\n")
        (self.root / "sys" / "module" / "bonding").mkdir()
        self.bin.mkdir()
        for tool in ("ip", "modprobe", "hostname", "swapon", "mount", "vconfig"):
            (self.bin / tool).write_text(FAKE)
            (self.bin / tool).chmod(0o755)

    def env(self, master: str = "") -> dict[str, str]:
        """dsas-init's environment: the fakes first on PATH, this machine's root."""
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "DSAS_ROOT": str(self.root),
                "DSAS_LIB": str(DSAS_LIB), "FAKE_LOG": str(self.log), "DSAS_MASTER": master}

    def run(self, conf: str, *args: str, master: str = "") -> subprocess.CompletedProcess[str]:
        (self.root / "etc" / "dsas.conf").write_text(conf)
        return subprocess.run(["bash", str(DSAS_INIT), *args], env=self.env(master),
                              capture_output=True, text=True, timeout=30)

    def commands(self) -> list[str]:
        return self.log.read_text().splitlines()

    def bonding(self, f: str) -> str:
        return (self.root / "sys/class/net/bond0/bonding" / f).read_text().strip()


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path, {"eth0": MACS[0], "eth1": MACS[1]})


def conf(**changes: str) -> str:
    text = dsas_conf("n1", MACS, "198.18.0.21", "198.18.2.21")
    for key, value in changes.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key}=")]
        text = "\n".join(lines) + f"\n{key}={value}\n"
    return text


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


def test_storage_and_services(machine: Machine) -> None:
    for dev in ("sdb1", "sdb2"):
        os.mknod(machine.root / "dev" / dev, 0o600 | 0o060000, os.makedev(7, 200))
    initd = machine.root / "etc" / "init.d"
    initd.mkdir()
    (initd / "apache2").write_text(FAKE.replace("$(basename \"$0\")", "apache2"))
    (initd / "apache2").chmod(0o755)
    text = conf(SWDEVICE="/dev/sdb1", DBDEVICE="/dev/sdb2", DBMOUNT="/var/lib/db",
                DBFSTYPE="ext4", SERVICE_UNITS="(apache2 tomcat-shop)")
    out = machine.run(text)
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = machine.commands()
    assert "swapon /dev/sdb1" in cmds
    assert "mount -t ext4 /dev/sdb2 /var/lib/db" in cmds
    assert "apache2 start" in cmds
    assert "dsas-init: service tomcat-shop: not in this image, not started" in out.stdout


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


@pytest.mark.lab
def test_failure_is_reported_to_the_master_over_http(lab: Lab, machine: Machine,
                                                     tmp_path: Path) -> None:
    """The `failed` event really reaches an HTTP server (in a lab namespace)."""
    ns = lab.netns("initrep")
    lab.bridge(ns, "br0", "198.18.40.1/24")
    events = tmp_path / "events.jsonl"
    events.write_text("")
    www = tmp_path / "www"
    www.mkdir()
    ns.popen([sys.executable, str(ROOT / "tests" / "fake_master.py"), str(www), str(events),
              "198.18.40.1", "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ns.wait_port(8080, "tcp")
    (machine.root / "etc" / "dsas.conf").write_text(conf(BOND_MODE="fastest"))
    env = machine.env("http://198.18.40.1:8080")
    out = ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash", str(DSAS_INIT)],
                 check=False)
    assert out.returncode == 1
    got = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(got) == 1 and got[0]["host"] == "n1" and got[0]["stage"] == "failed"
    assert got[0]["detail"].startswith("BOND_MODE: 'fastest' is not a bonding mode")


@pytest.mark.lab
def test_ready_report_sends_the_host_key_with_this_boots_token(lab: Lab, machine: Machine,
                                                               tmp_path: Path) -> None:
    """The ready report carries the SSH host key and, with it, the boot id and token the
    master put in dsas.conf (DSAS_BOOT_ID, DSAS_BOOT_TOKEN); without them, the key alone."""
    ns = lab.netns("inittok")
    lab.bridge(ns, "br0", "198.18.41.1/24")
    events = tmp_path / "events.jsonl"
    events.write_text("")
    www = tmp_path / "www"
    www.mkdir()
    ns.popen([sys.executable, str(ROOT / "tests" / "fake_master.py"), str(www), str(events),
              "198.18.41.1", "8080"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ns.wait_port(8080, "tcp")
    (machine.root / "etc" / "ssh").mkdir()
    (machine.root / "etc/ssh/ssh_host_ed25519_key.pub").write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey root@n1\n")
    token = "0123456789abcdef0123456789abcdef"
    env = machine.env("http://198.18.41.1:8080")
    for extra in ({"DSAS_BOOT_ID": "65a1b2c3-0123456789ab", "DSAS_BOOT_TOKEN": token}, {}):
        (machine.root / "etc" / "dsas.conf").write_text(conf(**extra))
        out = ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash", str(DSAS_INIT)],
                     check=False)
        assert out.returncode == 0, out.stdout + out.stderr
    got = [json.loads(line) for line in events.read_text().splitlines()]
    ready = [e for e in got if e["stage"] == "ready"]
    assert len(ready) == 2
    assert ready[0]["ssh_key"] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey"
    assert ready[0]["boot_id"] == "65a1b2c3-0123456789ab" and ready[0]["token"] == token
    assert "token" not in ready[1] and "boot_id" not in ready[1]  # a re-run reset the keys
    assert ready[1]["ssh_key"] == ready[0]["ssh_key"]


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
