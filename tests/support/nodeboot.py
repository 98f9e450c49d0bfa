"""Helpers for the node-boot tests: the tiny image, a stand-in master in a lab
namespace (busybox udhcpd + tests/support/fake_master.py + an 802.1Q port for VLAN 2),
direct-kernel-boot QEMU guests, and a shell on the guest's second serial port.

    namespace:  br0 198.18.0.1/24 (DHCP pool .100-.150, HTTP on :80)
                vlan2 198.18.2.1/24 (untagged side of the userspace 802.1Q port)
    guest:      two virtio NICs on taps in br0, fixed MACs; console on ttyS0 (log file),
                a root shell on hvc0 (virtconsole, unix socket) via dsas.shell=hvc0
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab import vlan
from lab.qemu import Guest, GuestSpec
from lab.testing import Lab, Netns, require_tool
from provision.imaging.build import Builder, BuildResult, default_recipes_dir
from provision.imaging.store import ImageStore
from tests.support.paths import SUPPORT

MASTER = "198.18.0.1"
VLAN_GATEWAY = "198.18.2.1"


def build_tiny(store_root: Path) -> BuildResult:
    store = ImageStore(store_root)
    return Builder(default_recipes_dir(), store, store_root / ".cache").build("tiny")


def dsas_conf(name: str, macs: list[str], addr: str, vlan_addr: str,
              bond_macs: list[str] | None = None) -> str:
    """A hand-written dsas.conf in the renderer's format (provision/render/templates)."""
    bond = bond_macs if bond_macs is not None else macs
    return f"""# test dsas.conf for {name}
SYSTEMNAME='{name}'
DOMAIN='lab.test'
FQDN='{name}.lab.test'
ROLE='web'
SERVICES=('httpd')
SERVICE_UNITS=('apache2')
MASTER_ADDRESS={MASTER}
MASTER_URL='http://{MASTER}'
BOOT_MODE=netboot
IMAGE='tiny'
IMAGE_VERSION='current'
IPADDRESS0={addr}/24
IFACE0=bond0
NETWORK0=inside
VLAN0=
GATEWAY[0]={MASTER}
IPADDRESS1={vlan_addr}/24
IFACE1=bond0.2
NETWORK1=outside
VLAN1=2
GATEWAY[1]={VLAN_GATEWAY}
DNS_SERVERS=({MASTER})
DNS_SEARCH='lab.test'
HWTYPE='vm'
NICS=(eth0 eth1)
NIC_MACS=({' '.join(macs)})
MODULES=('virtio_net')
BOND_NAME=bond0
BOND_MODE=active-backup
BOND_MIIMON=100
BOND_PRIMARY=eth0
BOND_ARP_IP_TARGET=()
BOND_ARP_INTERVAL=0
BOND_SLAVES=(eth0 eth1)
BOND_MACS=({' '.join(bond)})
BTDEVICE=
SWDEVICE=
DBDEVICE=
FSDEVICE=
"""


def _wait(ok: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        time.sleep(0.1)


class NodeLab:
    """The stand-in master: bridge, DHCP, HTTP + event log, VLAN 2 port."""

    def __init__(self, lab: Lab, workdir: Path, store_root: Path):
        for t in ("busybox", "qemu-system-x86_64", "ping"):
            require_tool(t)
        self.lab, self.workdir = lab, workdir
        self.www = workdir / "www"
        (self.www / "hosts").mkdir(parents=True)
        (self.www / "images").symlink_to(store_root)
        self.events_file = workdir / "events.jsonl"
        self.events_file.write_text("")
        self.guests: list[Guest] = []
        self.ns: Netns = lab.netns("nodeboot")
        lab.bridge(self.ns, "br0", f"{MASTER}/24")
        self._vlan_port()
        self._dhcp()
        self._http()

    def _vlan_port(self) -> None:
        port, trunk = self.lab.veth(self.ns, self.ns)
        self.ns.run(["ip", "link", "set", port, "master", "br0"])
        self.ns.popen(vlan.relay_argv(trunk, "vlan2", 2),
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: self.ns.run(["ip", "link", "show", "vlan2"], check=False).returncode == 0,
              10, "VLAN port vlan2")
        self.ns.addr("vlan2", f"{VLAN_GATEWAY}/24")
        self.ns.up("vlan2")

    def _dhcp(self) -> None:
        leases = self.workdir / "udhcpd.leases"
        leases.write_text("")
        conf = self.workdir / "udhcpd.conf"
        conf.write_text(
            "start 198.18.0.100\nend 198.18.0.150\ninterface br0\n"
            f"lease_file {leases}\noption subnet 255.255.255.0\noption lease 600\n"
        )
        with (self.workdir / "udhcpd.log").open("wb") as log:
            self.ns.popen(["busybox", "udhcpd", "-f", str(conf)], stdout=log,
                          stderr=subprocess.STDOUT)
        self.ns.wait_port(67, "udp")

    def _http(self) -> None:
        with (self.workdir / "http.log").open("wb") as log:
            self.ns.popen([sys.executable, str(SUPPORT / "fake_master.py"),
                           str(self.www), str(self.events_file), MASTER, "80"],
                          stdout=log, stderr=subprocess.STDOUT)
        self.ns.wait_port(80, "tcp")

    def host(self, name: str, conf: str) -> str:
        d = self.www / "hosts" / name
        d.mkdir(parents=True)
        (d / "dsas.conf").write_text(conf)
        return f"http://{MASTER}/hosts/{name}/dsas.conf"

    def events(self, host: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(line) for line in self.events_file.read_text().splitlines() if line]
        return [e for e in out if host is None or e.get("host") == host]

    def wait_stage(self, host: str, stages: tuple[str, ...], timeout: float,
                   guest: Guest | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events(host):
                if e["stage"] in stages:
                    return e
            if time.monotonic() > deadline or (guest is not None and not guest.running()):
                tail = guest.console()[-2500:] if guest else ""
                raise TimeoutError(f"{host}: no {stages} event in {timeout:.0f}s; events "
                                   f"{[e['stage'] for e in self.events(host)]}\n{tail}")
            time.sleep(0.25)

    def guest(self, name: str, macs: list[str], image: BuildResult, append: str) -> Guest:
        taps = [self.lab.tap(self.ns, "br0") for _ in macs]
        spec = GuestSpec(
            name, macs, memory_mib=512, kernel=image.path / "vmlinuz",
            initrd=image.path / "initrd.img",
            append=f"console=ttyS0 dsas.shell=hvc0 {append}", shell=True,
        )
        guest = Guest(self.lab, self.ns, spec, taps, self.workdir / "guests")
        self.guests.append(guest)
        return guest

    def close(self) -> None:
        """Stop the guests by PID."""
        for guest in self.guests:
            guest.stop()

    def ping(self, address: str, count: int = 2, source_timeout: int = 2) -> bool:
        out = self.ns.run(["ping", "-n", "-c", str(count), "-W", str(source_timeout), address],
                          check=False, timeout=count * source_timeout + 10)
        return out.returncode == 0
