"""The rendered keepalived.conf passes the real `keepalived --config-test`.

keepalived checks that the VRRP interfaces exist; the host kernel has no
bonding or 8021q, so the test gives a namespace veths named bond0 and bond0.2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.testing import Lab, require_tool
from provision.inventory import Inventory
from provision.render import render_keepalived
from tests.support.paths import FIXTURES


@pytest.mark.parametrize("host", ["lvs1", "lvs2"])
def test_keepalived_accepts_rendered_config(lab: Lab, example: Inventory, host: str,
                                            tmp_path: Path) -> None:
    keepalived = require_tool("keepalived")
    ns = lab.netns("ka")
    for dev in ("bond0", "bond0.2"):
        ns.run(["ip", "link", "add", dev, "type", "veth", "peer", "name", f"p{dev}"])
    conf = tmp_path / "keepalived.conf"
    conf.write_text(render_keepalived(example, example.hosts[host]))
    out = ns.run([keepalived, "--config-test", "-f", str(conf)], check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_keepalived_accepts_a_pair_with_one_vrrp_instance(lab: Lab, tmp_path: Path) -> None:
    """One network of VIPs: no sync group (keepalived refuses a group of one)."""
    from provision.inventory import load

    keepalived = require_tool("keepalived")
    inv = load(FIXTURES / "small.yaml")
    ns = lab.netns("ka")
    ns.run(["ip", "link", "add", "bond0.2", "type", "veth", "peer", "name", "pbond0.2"])
    conf = tmp_path / "keepalived.conf"
    conf.write_text(render_keepalived(inv, inv.hosts["lb1"]))
    out = ns.run([keepalived, "--config-test", "-f", str(conf)], check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_keepalived_rejects_a_broken_config(lab: Lab, tmp_path: Path) -> None:
    """The check above can fail: a config with a bad keyword is refused."""
    keepalived = require_tool("keepalived")
    ns = lab.netns("ka")
    conf = tmp_path / "keepalived.conf"
    conf.write_text("virtual_server 198.18.0.9 80 {\n    lb_algo nosuch\n}\n")
    out = ns.run([keepalived, "--config-test", "-f", str(conf)], check=False)
    assert out.returncode != 0


@pytest.mark.parametrize("extra", ["    advert_int: 0.3\n", "    preempt: false\n",
                                   "    preempt_delay: 10\n    advert_int: 0.05\n"],
                         ids=["vrrp3-0.3s", "nopreempt", "preempt-delay-vrrp3"])
def test_keepalived_accepts_preempt_and_vrrp3(lab: Lab, tmp_path: Path, extra: str) -> None:
    """nopreempt, preempt_delay and VRRPv3 (version 3, centisecond advert_int) as
    rendered pass the real config test on both directors."""
    from provision.inventory import loads

    keepalived = require_tool("keepalived")
    text = (FIXTURES / "small.yaml").read_text()
    inv = loads(text.replace("    virtual_router_id: 7\n", f"    virtual_router_id: 7\n{extra}"),
                "small.yaml")
    ns = lab.netns("ka")
    ns.run(["ip", "link", "add", "bond0.2", "type", "veth", "peer", "name", "pbond0.2"])
    for h in ("lb1", "lb2"):
        conf = tmp_path / f"{h}.conf"
        conf.write_text(render_keepalived(inv, inv.hosts[h]))
        out = ns.run([keepalived, "--config-test", "-f", str(conf)], check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "WARNING" not in out.stdout + out.stderr, out.stdout + out.stderr
