"""Multicast pushes from boot (issue 21): the inventory's ``push: {multicast: true}``
becomes dsas.conf's PUSH_MULTICAST/UFTP_* keys, and dsas-init starts uftpd with them:
bound to the inside address, on dsas-push's one group and port, encrypted sessions only,
from the master only. dsas-init runs against a fake root (test_dsas_init_unit.py) with a
fake uftpd that logs its arguments and writes its pid file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provision.inventory.errors import InventoryError
from provision.inventory.load import loads as load_inventory_text
from provision.push.multicast import DEFAULT_GROUP, DEFAULT_PORT
from provision.render.engine import render_host
from tests.support.dsas_init_support import MACS, Machine, conf

FAKE_UFTPD = """#!/bin/sh
echo "uftpd $*" >> "$FAKE_LOG"
while [ $# -gt 0 ]; do [ "$1" = -P ] && echo 4242 > "$2"; shift; done
exit 0
"""

PUSH = {"PUSH_MULTICAST": "1", "UFTP_ADDRESS": "198.18.0.21", "UFTP_GROUP": "239.255.77.1",
        "UFTP_PORT": "17044", "UFTP_ROOT": "/srv"}


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path, {"eth0": MACS[0], "eth1": MACS[1]})
    (m.bin / "uftpd").write_text(FAKE_UFTPD)
    (m.bin / "uftpd").chmod(0o755)
    return m


def uftpd_calls(m: Machine) -> list[list[str]]:
    return [c.split()[1:] for c in m.commands() if c.startswith("uftpd ")]


def test_dsas_init_starts_uftpd_confined_to_the_push_group_and_the_master(machine):
    out = machine.run(conf(**PUSH))
    assert out.returncode == 0, out.stdout + out.stderr
    calls = uftpd_calls(machine)
    assert len(calls) == 1, machine.commands()
    argv = calls[0]
    opt = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i] in
           ("-I", "-M", "-p", "-D", "-S", "-K", "-P")}
    assert opt["-I"] == "198.18.0.21"  # the inside address only
    assert opt["-M"] == "239.255.77.1" and opt["-p"] == "17044"  # the one group and port
    assert "-E" in argv  # encrypted sessions only
    assert opt["-D"] == f"{machine.root}/srv" and (machine.root / "srv").is_dir()
    # uftpd refuses a server list on a group that is not source-specific: none here
    assert "-S" not in argv
    assert opt["-K"] == "ec:prime256v1"
    # where dsas-push may stage with it (multicast.start_script reads it)
    assert (machine.root / "run/dsas/uftpd.root").read_text() == "/srv\n"
    assert ("uftpd: listening on 239.255.77.1:17044 at 198.18.0.21 for any encrypted sender"
            in out.stdout)
    # a second run (a re-apply) finds it running and starts no other
    (machine.root / "proc" / "4242").mkdir()
    (machine.root / "proc" / "4242" / "comm").write_text("uftpd\n")
    out = machine.run(conf(**PUSH))
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(uftpd_calls(machine)) == 1 and "uftpd: running (pid 4242)" in out.stdout


def test_on_a_source_specific_group_uftpd_takes_the_master_only(machine):
    out = machine.run(conf(**{**PUSH, "UFTP_GROUP": "232.255.77.1"}))
    assert out.returncode == 0, out.stdout + out.stderr
    argv = uftpd_calls(machine)[0]
    assert argv[argv.index("-M") + 1] == "232.255.77.1"
    # its uftp id (the master's address in hex) and the address it must send from
    assert Path(argv[argv.index("-S") + 1]).read_text() == "0xC6120001|198.18.0.1\n"
    assert "for 198.18.0.1, into /srv" in out.stdout


def test_with_the_agent_uftpd_runs_push_agent_on_what_it_receives(machine):
    """PUSH_AGENT=1: uftpd's post-receive hook is DSAS_LIB's push-agent, whose settings
    (the keys allowed to sign orders: root's authorized_keys; the host key that signs
    its reports) dsas-init writes under /run/dsas."""
    out = machine.run(conf(**{**PUSH, "PUSH_AGENT": "1"}))
    assert out.returncode == 0, out.stdout + out.stderr
    argv = uftpd_calls(machine)[0]
    hook = Path(argv[argv.index("-s") + 1])
    assert hook.name == "push-agent" and os.access(hook, os.X_OK)
    settings = (machine.root / "run/dsas/push-agent.conf").read_text()
    assert f"AGENT_KEYS={machine.root}/root/.ssh/authorized_keys" in settings
    assert f"AGENT_HOSTKEY={machine.root}/etc/ssh/ssh_host_ed25519_key" in settings
    assert "orders run by push-agent" in out.stdout
    # without the key, no hook
    machine2 = machine
    (machine2.root / "run/dsas/uftpd.pid").unlink(missing_ok=True)
    out = machine2.run(conf(**PUSH))
    assert "-s" not in uftpd_calls(machine2)[-1]


def test_no_uftpd_unless_the_node_allows_multicast(machine):
    out = machine.run(conf(**{**PUSH, "PUSH_MULTICAST": ""}))
    assert out.returncode == 0, out.stdout + out.stderr
    assert uftpd_calls(machine) == [] and "dsas-init: uftpd" not in out.stdout


@pytest.mark.parametrize("key,value,reason", [
    ("UFTP_GROUP", "224.0.0.1", "is neither an administratively scoped"),
    ("UFTP_GROUP", "239.1.2", "is neither an administratively scoped"),
    ("UFTP_PORT", "70000", "is not a port"),
    ("UFTP_ADDRESS", "eth0", "is not an IPv4 address"),
    ("UFTP_ROOT", "srv; rm -rf /", "is not an absolute path"),
])
def test_a_wrong_uftp_key_stops_dsas_init_with_its_name(machine, key, value, reason):
    out = machine.run(conf(**{**PUSH, key: repr(value) if " " in value else value}))
    assert out.returncode != 0, out.stdout
    assert key in out.stdout + out.stderr and reason in out.stdout + out.stderr
    assert uftpd_calls(machine) == []


INVENTORY = """\
cluster: {{name: c, domain: c.example, master_address: 198.18.0.1, masters: {{primary: m1}}}}
networks:
  inside: {{cidr: 198.18.0.0/24, gateway: 198.18.0.254, dns: [198.18.0.1]}}
hwtypes:
  single: {{nics: [eth0]}}
images:
  tiny: {{version: "1"}}
services:
  master: {{}}
roles:
  master: {{services: [master], networks: [inside], hwtype: single, boot: disk}}
  web: {{networks: [inside], hwtype: single, image: tiny, bond: {{mode: none}}{role_push}}}
hosts:
  m1: {{role: master, macs: ["52:54:00:00:00:01"], addresses: {{inside: 198.18.0.1}},
       bond: {{mode: none}}}}
  w1: {{role: web, macs: ["52:54:00:00:00:02"], addresses: {{inside: 198.18.0.21}}}}
  w2: {{role: web, macs: ["52:54:00:00:00:03"], addresses: {{inside: 198.18.0.22}}{host_push}}}
"""


def keys(text: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in text.splitlines()
                if ln.startswith(("PUSH_", "UFTP_")))


def test_the_inventory_key_renders_the_uftp_keys_and_a_host_overrides_its_role():
    inv = load_inventory_text(INVENTORY.format(
        role_push=", push: {multicast: true, root: /srv/www}",
        host_push=", push: {multicast: false}"))
    assert keys(render_host(inv, inv.hosts["w1"], "dsas.conf")) == {
        "PUSH_MULTICAST": "1", "UFTP_ADDRESS": "198.18.0.21", "UFTP_GROUP": DEFAULT_GROUP,
        "UFTP_PORT": str(DEFAULT_PORT), "UFTP_ROOT": "/srv/www", "PUSH_AGENT": ""}
    assert keys(render_host(inv, inv.hosts["w2"], "dsas.conf")) == {
        "PUSH_MULTICAST": "", "PUSH_AGENT": ""}
    plain = load_inventory_text(INVENTORY.format(role_push="", host_push=""))
    assert keys(render_host(plain, plain.hosts["w1"], "dsas.conf")) == {
        "PUSH_MULTICAST": "", "PUSH_AGENT": ""}
    agent = load_inventory_text(INVENTORY.format(
        role_push=", push: {multicast: true, agent: true}", host_push=""))
    assert keys(render_host(agent, agent.hosts["w1"], "dsas.conf"))["PUSH_AGENT"] == "1"
    assert agent.hosts["w1"].push.agent


@pytest.mark.parametrize("push,where,reason", [
    ("push: {multicast: yes please}", "push.multicast", "must be true or false"),
    ("push: {multicast: true, root: srv}", "push.root", "an absolute path"),
    ("push: {multicast: true, root: '/srv/$(reboot)'}", "push.root", "an absolute path"),
    ("push: {unicast: true}", "push", "unknown key (allowed: agent, multicast, root)"),
    ("push: {agent: true}", "push.agent", "needs multicast: true"),
    ("push: {multicast: true, agent: 1}", "push.agent", "must be true or false"),
])
def test_a_wrong_push_key_is_refused_by_the_loader(push, where, reason):
    with pytest.raises(InventoryError) as e:
        load_inventory_text(INVENTORY.format(role_push="", host_push=", " + push))
    assert f"hosts.w2.{where}" in str(e.value) and reason in str(e.value), str(e.value)
