"""`dsas-init reapply` (issue 17) at the shell level, on the fake machine of
test_dsas_init_unit.py: the old role's units stop, the delivered dsas.conf.new
replaces dsas.conf (the old kept as .prev), a network the new role has not is
taken down, the new role's units must start, and a bad new file changes nothing.
The QEMU test (test_assign_vm.py) proves it on a real node."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.dsas_init_support import DSAS_INIT, MACS, Machine, conf

UNIT = """#!/bin/sh
echo "unit $(basename "$0") $1" >> "$FAKE_LOG"
[ "$(basename "$0")" != broken ] || [ "$1" != start ]
"""


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path, {"eth0": MACS[0], "eth1": MACS[1]})
    for u in ("rsyslog", "apache2", "broken"):
        f = m.root / "etc" / "init.d" / u
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(UNIT)
        f.chmod(0o755)
    return m


def reapply(m: Machine, old: str, new: str) -> subprocess.CompletedProcess[str]:
    (m.root / "etc" / "dsas.conf").write_text(old)
    (m.root / "etc" / "dsas.conf.new").write_text(new)
    env = m.env()
    return subprocess.run(["bash", str(DSAS_INIT), "reapply"], env=env, capture_output=True,
                          text=True, timeout=30)


def test_reapply_stops_the_old_role_replaces_the_conf_and_starts_the_new_role(
        machine: Machine) -> None:
    old = conf(ROLE="log", SERVICE_UNITS="(rsyslog)")
    # the new role has no outside network: IPADDRESS1/IFACE1/VLAN1 gone
    new = "\n".join(ln for ln in conf(ROLE="web", SERVICE_UNITS="(apache2)").splitlines()
                    if not ln.startswith(("IPADDRESS1=", "IFACE1=", "VLAN1="))) + "\n"
    (machine.root / "sys" / "class" / "net" / "bond0.2").mkdir()
    out = reapply(machine, old, new)
    assert out.returncode == 0, out.stdout + out.stderr
    cmds = machine.commands()
    assert cmds.index("unit rsyslog stop") < cmds.index("unit apache2 start")
    assert "unit apache2 stop" not in cmds and "unit rsyslog start" not in cmds
    assert (machine.root / "etc" / "dsas.conf").read_text() == new
    assert (machine.root / "etc" / "dsas.conf.prev").read_text() == old
    assert not (machine.root / "etc" / "dsas.conf.new").exists()
    assert "ip addr flush dev bond0.2" in cmds and "ip link del bond0.2" in cmds
    assert "dsas-init: service rsyslog: stopped (not in role web)" in out.stdout
    assert "dsas-init: ready: role web: bond0=198.18.0.21/24" in out.stdout


def test_a_new_role_whose_service_fails_is_reported_failed(machine: Machine) -> None:
    out = reapply(machine, conf(SERVICE_UNITS="(rsyslog)"), conf(SERVICE_UNITS="(broken)"))
    assert out.returncode == 1
    assert "FAILED: SERVICE_UNITS[0]: broken: failed to start" in out.stdout, out.stdout
    out = reapply(machine, conf(SERVICE_UNITS="(rsyslog)"), conf(SERVICE_UNITS="(nosuch)"))
    assert out.returncode == 1
    assert "FAILED: SERVICE_UNITS[0]: nosuch: not in this image" in out.stdout, out.stdout


def test_a_bad_new_conf_changes_nothing(machine: Machine) -> None:
    old = conf(SERVICE_UNITS="(rsyslog)")
    out = reapply(machine, old, conf(SERVICE_UNITS="(apache2)", NIC_MACS="(52:54:00:99:99:99)"))
    assert out.returncode == 1 and "FAILED: NIC_MACS" in out.stdout, out.stdout
    assert not any(c.startswith("unit ") for c in machine.commands())
    assert (machine.root / "etc" / "dsas.conf").read_text() == old
    out = reapply(machine, old, "ROLE=(\n")
    assert out.returncode == 1 and "not valid bash" in out.stdout
    (machine.root / "etc" / "dsas.conf.new").unlink()
    env = machine.env()
    out = subprocess.run(["bash", str(DSAS_INIT), "reapply"], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "no new dsas.conf delivered" in out.stdout
