"""Two directors running the real keepalived (VRRP only) on the configs dsas renders,
in namespaces on two bridges, and a client on the outside one (the VRRP lab tests).

The host kernel has no IPVS, so keepalived runs ``--vrrp`` and the config loses its
``lvs_sync_daemon`` line (keepalived's VRRP process dies without IPVS). The veths are
named bond0 and bond0.2, as the rendered config names them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.lvs import CLIENT, VIP
from lab.netns import Lab, Netns
from provision.inventory.model import Inventory

BOUND = 20.0  # s for any one state to be reached
GARP_DELAY = 5  # keepalived's default garp_master_delay: its second set of gratuitous ARPs


def wait(ok: Callable[[], bool], what: str, timeout: float = BOUND) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"no {what} in {timeout:.0f} s"
        time.sleep(0.1)


def has_vip(ns: Netns) -> bool:
    return f"inet {VIP}/" in ns.run(["ip", "-4", "addr", "show"]).stdout


def client_mac(client: Netns) -> str:
    out = client.run(["ip", "neigh", "show", VIP]).stdout.split()
    return out[out.index("lladdr") + 1].lower() if "lladdr" in out else ""


@dataclass
class Director:
    """One director's namespace, its outside MAC and its keepalived."""

    name: str
    ns: Netns
    mac: str
    dir: Path
    proc: subprocess.Popen[str] | None = None

    @property
    def conf(self) -> Path:
        return self.dir / "keepalived.conf"

    def write(self, text: str) -> None:
        self.conf.write_text("".join(line for line in text.splitlines(True)
                                     if "lvs_sync_daemon" not in line))

    def start(self, keepalived: str) -> None:
        with (self.dir / "log").open("a") as log:
            self.proc = self.ns.popen(
                [keepalived, "--vrrp", "--dont-fork", "--log-console", "--log-detail",
                 "-f", str(self.conf), "-p", str(self.dir / "k.pid"),
                 "-r", str(self.dir / "v.pid")], stdout=log, stderr=subprocess.STDOUT,
                text=True)

    def reload(self) -> None:
        """SIGHUP to keepalived's main process: it reads the config again."""
        os.kill(int((self.dir / "k.pid").read_text()), signal.SIGHUP)

    def log(self) -> str:
        return (self.dir / "log").read_text()


def director_lab(lab: Lab, inv: Inventory, tmp_path: Path,
                 names: tuple[str, ...] = ("lvs1", "lvs2")) -> tuple[Netns, dict[str, Director],
                                                                      Netns]:
    """The switch (bridges brin and brout), the directors with their inventory
    addresses (no keepalived started yet) and the client on brout."""
    sw = lab.netns("sw")
    lab.bridge(sw, "brin")
    lab.bridge(sw, "brout")
    directors = {}
    for name in names:
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
        d = tmp_path / name
        d.mkdir()
        directors[name] = Director(name, ns, mac, d)
    client = lab.netns("client")
    lab.plug(sw, "brout", client, f"{CLIENT}/24")
    return sw, directors, client
