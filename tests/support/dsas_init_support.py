"""dsas-init run against a fake node root (``Machine``, the ``machine`` fixture,
registered in tests/conftest.py) and its dsas.conf."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.nodeboot import dsas_conf
from tests.support.paths import ROOT

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
