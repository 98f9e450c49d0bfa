"""Rendering: golden files for every template, dsas.conf read back by real bash, refusals."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import jinja2
import pytest

from lab.testing import require_tool
from provision.inventory import Inventory
from provision.policy.dns import records
from provision.render import (
    RenderError,
    reload_templates,
    render_discovery_ipxe,
    render_host,
    render_keepalived,
    render_pxelinux_default,
    render_zone,
)
from provision.render.engine import kernel_cmdline
from tests.support.paths import FIXTURES

GOLDEN = FIXTURES / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

CASES = [
    ("w101", "dsas.conf"), ("w108", "dsas.conf"), ("lvs1", "dsas.conf"), ("db1", "dsas.conf"),
    ("w101", "ipxe"), ("w101", "pxelinux"), ("lvs1", "keepalived"), ("lvs2", "keepalived"),
]


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1)"


@pytest.mark.parametrize("host,what", CASES, ids=[f"{h}-{w}" for h, w in CASES])
def test_golden_host_files(example: Inventory, host: str, what: str) -> None:
    example = replace(example, source="etc/dsas/cluster.yaml")
    golden(f"{host}.{what}", render_host(example, example.hosts[host], what))


def test_golden_cluster_files(example: Inventory) -> None:
    golden("zone", render_zone(example))
    golden("pxelinux.default", render_pxelinux_default(example))
    golden("discovery.ipxe", render_discovery_ipxe(example))


def source(conf: str, script: str) -> str:
    bash = require_tool("bash")
    out = subprocess.run([bash, "-euc", f"source /dev/stdin <<'EOF'\n{conf}\nEOF\n{script}"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_dsas_conf_sources_in_bash_and_reads_back(example: Inventory) -> None:
    lvs1 = example.hosts["lvs1"]
    conf = render_host(example, lvs1, "dsas.conf")
    out = source(conf, r'''
printf '%s\n' "$SYSTEMNAME" "$ROLE" "$HWTYPE" "$IPADDRESS0" "$IFACE0" "${GATEWAY[0]}" \
  "$IPADDRESS1" "$IFACE1" "$VLAN1" "${GATEWAY[1]}" "${#MODULES[@]}" "${MODULES[4]}" \
  "$BOND_MODE" "$BOND_PRIMARY" "${BOND_ARP_IP_TARGET[*]}" "${BOND_SLAVES[*]}" \
  "${BOND_MACS[*]}" "${SERVICES[*]}" "${SERVICE_UNITS[*]}" "${DNS_SERVERS[*]}" \
  "$BTDEVICE" "$SWDEVICE" "[$DBDEVICE]" "$FSDEVICE" "$MASTER_ADDRESS" "$IMAGE" "$DOMAIN"
''').splitlines()
    assert out == [
        "lvs1", "lvs", "S6014HT", "198.18.0.11/22", "bond0", "198.18.0.254",
        "203.0.113.11/24", "bond0.2", "2", "203.0.113.1", "5",
        "bonding mode=active-backup arp_interval=1000 arp_ip_target=198.18.0.1,198.18.0.2 "
        "primary=eth0",
        "active-backup", "eth0", "198.18.0.1 198.18.0.2", "eth0 eth1",
        "52:54:00:00:00:11 52:54:00:00:10:11", "lvs", "keepalived",
        "198.18.0.1 198.18.0.2", "/dev/sda1", "/dev/sda2", "[]", "/dev/sda3", "198.18.0.1",
        "base", "farm.example",
    ]


def test_every_hosts_dsas_conf_sources_cleanly(example: Inventory) -> None:
    for h in example.hosts.values():
        out = source(render_host(example, h, "dsas.conf"), 'echo "$SYSTEMNAME $IPADDRESS0"')
        assert out.strip() == f"{h.name} {h.primary_interface.cidr}"


def test_kernel_command_line_refuses_metacharacters(example: Inventory) -> None:
    w101 = example.hosts["w101"]
    assert "\n" not in kernel_cmdline(example, w101)
    for bad in ["quiet\nreboot", "a;b", "x=$(id)", "`id`", "a|b", "x>y"]:
        host = replace(w101, kernel_args=bad)
        with pytest.raises(RenderError, match="forbidden characters"):
            render_host(example, host, "ipxe")


def test_template_override_directory(example: Inventory, tmp_path: Path) -> None:
    (tmp_path / "boot.ipxe.j2").write_text("#!ipxe\n# custom for {{ host.name }}\n")
    text = render_host(example, example.hosts["w102"], "ipxe", templates=tmp_path)
    assert text == "#!ipxe\n# custom for w102\n"
    # other templates still come from the package
    assert "SYSTEMNAME=w102" in render_host(example, example.hosts["w102"], "dsas.conf",
                                            templates=tmp_path)


def test_renders_share_one_environment_until_the_templates_are_reloaded(
        example: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dsas serve` renders on every request: the Environment (and its compiled
    templates) is built once per directory, and read again only on reload."""
    built: list[object] = []

    class Counting(jinja2.Environment):
        def __init__(self, *args: object, **kw: object) -> None:
            built.append(kw.get("loader"))
            super().__init__(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(jinja2, "Environment", Counting)
    reload_templates()
    (tmp_path / "pxelinux-default.cfg.j2").write_text("ONE {{ inv.cluster.name }}\n")
    w101 = example.hosts["w101"]
    for _ in range(3):
        assert render_pxelinux_default(example, tmp_path) == "ONE example\n"
        assert "SYSTEMNAME=w101" in render_host(example, w101, "dsas.conf", tmp_path)
    assert len(built) == 1  # one directory, one Environment, for six renders
    render_pxelinux_default(example)
    render_pxelinux_default(example)
    assert len(built) == 2  # the packaged templates alone: a second one
    (tmp_path / "pxelinux-default.cfg.j2").write_text("TWO {{ inv.cluster.name }}\n")
    (tmp_path / "boot.ipxe.j2").write_text("#!ipxe\n# new {{ host.name }}\n")
    assert render_pxelinux_default(example, tmp_path) == "ONE example\n"  # until reload
    reload_templates()
    assert render_pxelinux_default(example, tmp_path) == "TWO example\n"
    assert render_host(example, w101, "ipxe", tmp_path) == "#!ipxe\n# new w101\n"
    assert len(built) == 3


def test_undefined_variable_in_a_template_is_an_error(example: Inventory, tmp_path: Path) -> None:
    (tmp_path / "dsas.conf.j2").write_text("X={{ host.no_such_field }}\n")
    with pytest.raises(RenderError, match="no_such_field"):
        render_host(example, example.hosts["w101"], "dsas.conf", templates=tmp_path)


def test_keepalived_only_for_lvs_hosts(example: Inventory) -> None:
    with pytest.raises(RenderError, match="not in an LVS pair"):
        render_keepalived(example, example.hosts["w101"])
    active = render_keepalived(example, example.hosts["lvs1"])
    backup = render_keepalived(example, example.hosts["lvs2"])
    assert "state MASTER" in active and "priority 150" in active
    assert "state BACKUP" in backup and "priority 100" in backup
    assert active.count("real_server 198.18.1.") == 8 * 3  # www, www-tls, shop


def test_dns_records_cover_every_address_and_vip(example: Inventory) -> None:
    recs = records(example)
    a = {(r.name, r.rdata) for r in recs if r.rtype == "A"}
    ptr = {(r.name, r.rdata.rstrip(".")) for r in recs if r.rtype == "PTR"}
    for h in example.hosts.values():
        for i, itf in enumerate(h.interfaces):
            fq = f"{h.name}.farm.example" if i == 0 else f"{h.name}.{itf.network.name}.farm.example"
            assert (fq, str(itf.address)) in a
            rev = ".".join(reversed(str(itf.address).split("."))) + ".in-addr.arpa"
            assert (rev, fq) in ptr
    for vs in example.virtual_services.values():
        assert (f"{vs.name}.farm.example", str(vs.vip)) in a
    assert sum(1 for n, _ in a if n == "web.farm.example") == 8


def _small(extra: str) -> Inventory:
    from provision.inventory import loads

    text = (FIXTURES / "small.yaml").read_text()
    return loads(text.replace("    virtual_router_id: 7\n", f"    virtual_router_id: 7\n{extra}"),
                 "small.yaml")


def test_keepalived_preempt_settings() -> None:
    """Preempt (the default): the active starts MASTER. preempt: false renders
    nopreempt, and preempt_delay a delay; both need state BACKUP on every director."""
    inv = _small("")
    assert "state MASTER" in render_keepalived(inv, inv.hosts["lb1"])
    assert "preempt" not in render_keepalived(inv, inv.hosts["lb1"])
    inv = _small("    preempt: false\n")
    for h in ("lb1", "lb2"):
        conf = render_keepalived(inv, inv.hosts[h])
        assert "state BACKUP" in conf and "nopreempt" in conf and "state MASTER" not in conf
    inv = _small("    preempt_delay: 15\n")
    for h in ("lb1", "lb2"):
        conf = render_keepalived(inv, inv.hosts[h])
        assert "state BACKUP" in conf and "preempt_delay 15" in conf and "nopreempt" not in conf
    assert "priority 150" in render_keepalived(inv, inv.hosts["lb1"])


def test_keepalived_takeover_override_renders_priority_254_with_preempt() -> None:
    """A director taking the VIPs from one leaving the pair (`dsas assign`'s handover):
    priority 254, preempt even in a nopreempt or preempt_delay pair, the pools as
    they are; the other directors and the pools are untouched by the row."""
    from provision.balancer.members import Override

    take = {("lb2", "lb"): Override("lb2", "lb", "takeover", "198.18.0.12", "lb1 leaves"),
            ("w1", "web"): Override("w1", "web", "drain", "198.18.0.21", "assign run 1")}
    for extra in ("", "    preempt: false\n", "    preempt_delay: 15\n"):
        inv = _small(extra)
        conf = render_keepalived(inv, inv.hosts["lb2"], overrides=take)
        assert "priority 254\n" in conf and "priority 100" not in conf, conf
        assert "nopreempt" not in conf and "preempt_delay" not in conf, conf
        assert "state BACKUP" in conf and "taking the VIPs over" in conf
        plain = render_keepalived(inv, inv.hosts["lb2"], overrides={k: v for k, v in take.items()
                                                                   if k[0] == "w1"})
        assert "priority 100\n" in plain and "taking the VIPs over" not in plain
        # the same pools (w1 drained) either way, and lb1 as it was
        assert [ln for ln in conf.splitlines() if "weight" in ln] == \
            [ln for ln in plain.splitlines() if "weight" in ln]
        assert render_keepalived(inv, inv.hosts["lb1"], overrides=take) == \
            render_keepalived(inv, inv.hosts["lb1"], overrides={k: v for k, v in take.items()
                                                              if k[0] == "w1"})
    with pytest.raises(Exception, match=r"priority.*253"):
        _small("    priority: {active: 254, backup: 100}\n")


def test_keepalived_sub_second_advert_is_vrrp3() -> None:
    inv = _small("    advert_int: 0.3\n")
    assert inv.lvs_pairs["lb"].advert_int == 0.3
    conf = render_keepalived(inv, inv.hosts["lb2"])
    assert "    version 3\n    advert_int 0.3\n" in conf
    inv = _small("    advert_int: 2\n")
    conf = render_keepalived(inv, inv.hosts["lb2"])
    assert "advert_int 2\n" in conf and "version 3" not in conf
    inv = _small("    advert_int: 1.5\n")
    assert "version 3" in render_keepalived(inv, inv.hosts["lb1"])


def test_a_second_backup_joins_the_pair_20_priorities_lower() -> None:
    """A host moved to the lvs role joins the pair as a further backup, 20 priorities
    lower: one lower, the two backups' master-down timers are 4 ms apart and both take
    the VIPs when the holder dies (a CI run saw it); a backup priority too low for the
    step is refused with the lowest that works."""
    from provision.inventory import InventoryError, loads

    text = (FIXTURES / "small.yaml").read_text().replace(
        "  w2: {role: web, macs: [\"52:54:00:12:00:22\", \"52:54:00:12:01:22\"], "
        "addresses: {inside: 198.18.0.22}}",
        "  w2: {role: lvs, macs: [\"52:54:00:12:00:22\", \"52:54:00:12:01:22\"], "
        "addresses: {inside: 198.18.0.22, outside: 198.19.2.22}}").replace(
        "hosts: {lb1: active, lb2: backup}", "hosts: {lb1: active, lb2: backup, w2: backup}")
    assert "w2: backup" in text and "w2: {role: lvs" in text
    inv = loads(text, "small.yaml")
    pair = inv.lvs_pairs["lb"]
    assert pair.directors == ("lb1", "lb2", "w2")
    assert [pair.priority_of(h) for h in pair.directors] == [150, 100, 80]
    conf = render_keepalived(inv, inv.hosts["w2"])
    assert "state BACKUP" in conf and "priority 80" in conf
    assert [h.name for h, _, _ in inv.lvs_hosts()] == ["lb1", "lb2", "w2"]
    low = text.replace("    virtual_router_id: 7\n",
                       "    virtual_router_id: 7\n    priority: {active: 150, backup: 15}\n")
    with pytest.raises(InventoryError, match=r"2 backups need priorities 15 down to -5 "
                       r"\(each 20 lower\); raise the backup priority to at least 21"):
        loads(low, "small.yaml")
    ok = loads(low.replace("backup: 15}", "backup: 21}"), "small.yaml").lvs_pairs["lb"]
    assert [ok.priority_of(h) for h in ok.directors] == [150, 21, 1]
