"""`dsas master join`'s checks before anything is written (issue 18): who may join in
whose place, the inventory edit, and the refusals (unknown host, this master, already
the peer, no address on the VIP's network, no trusted host key), each one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from provision.ha.join import JoinError, Remote, edit_inventory, plan
from provision.inventory import load, loads
from provision.inventory.edit import Document
from provision.sshtrust.sshconf import SshConfig
from tests.support.master_support import pair_inventory

DSAS = str(Path(sys.executable).with_name("dsas"))
OFF_NET = '  m04: {role: outer, macs: ["52:54:00:00:00:04"], addresses: {far: 198.18.5.4}}\n'


def test_the_host_takes_the_other_masters_side_and_the_edit_says_so() -> None:
    text = pair_inventory(third=True)
    p = plan(loads(text, "c.yaml"), "m01", "m03")
    assert (p.host, str(p.address), p.side, p.replaces, p.me) == \
        ("m03", "198.18.0.4", "secondary", "m02", "m01")
    p2 = plan(loads(text, "c.yaml"), "m02", "m03")  # run on the secondary: m03 is primary
    assert (p2.side, p2.replaces) == ("primary", "m01")
    doc = Document(text, "c.yaml")
    edit_inventory(doc, p)
    new = loads(doc.text(), "c.yaml")
    assert (new.cluster.primary_master, new.cluster.secondary_master) == ("m01", "m03")
    assert "secondary: m03" in doc.text() and "primary: m01" in doc.text()


@pytest.mark.parametrize("host,why", [
    ("nosuch", "no host 'nosuch' in the inventory"),
    ("m01", "m01 is this master"),
    ("m02", "m02 is already the secondary master"),
])
def test_join_refuses_what_cannot_join(host: str, why: str) -> None:
    with pytest.raises(JoinError, match=why):
        plan(loads(pair_inventory(third=True), "c.yaml"), "m01", host)


def test_a_host_with_no_address_on_the_vip_network_cannot_join(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    text = pair_inventory().replace(
        "hwtypes:", "  far: {cidr: 198.18.5.0/24, gateway: 198.18.5.254}\nhwtypes:").replace(
        "hosts:", "  outer: {services: [], networks: [far], image: base, hwtype: vm,\n"
                  "        bond: {mode: none}}\nhosts:")
    f.write_text(text + OFF_NET)
    with pytest.raises(JoinError, match="m04 has no address on lan"):
        plan(load(f), "m01", "m04")


def test_no_trusted_host_key_no_ssh(tmp_path: Path) -> None:
    from ipaddress import IPv4Address
    with pytest.raises(JoinError, match="dsas trust m03"):
        Remote(SshConfig(tmp_path), "m03", IPv4Address("198.18.0.4"))


def test_the_cli_says_why_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(pair_inventory(third=True))
    before = f.read_bytes()
    res = subprocess.run([DSAS, "master", "join", "m03", "--inventory", str(f), "--master",
                          "m01", "--state-dir", str(tmp_path / "state")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "dsas trust m03" in res.stderr, res.stderr
    assert f.read_bytes() == before


def test_assigning_the_masters_role_plans_the_join(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(pair_inventory(third=True))
    before = f.read_bytes()

    def dry(host: str, role: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([DSAS, "assign", host, role, "--inventory", str(f),
                               "--state-dir", str(tmp_path / "state"), "--dry-run"],
                              capture_output=True, text=True, timeout=60)

    res = dry("w1", "master")
    assert res.returncode == 0, res.stderr
    assert "then: w1 joins the master pair (`dsas master join w1`" in res.stdout
    as_json = subprocess.run([DSAS, "assign", "w1", "master", "--inventory", str(f),
                              "--state-dir", str(tmp_path / "state"), "--dry-run", "--json"],
                             capture_output=True, text=True, timeout=60)
    assert json.loads(as_json.stdout)["joins_master_pair"] is True
    assert "joins the master pair" not in dry("m03", "web").stdout  # not the masters' role
    assert f.read_bytes() == before
