"""The inventory loader: the example loads, lookups work, and every rule rejects bad input."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from provision.inventory import Inventory, InventoryError, load, loads, normalize_mac
from tests.support.paths import EXAMPLE, FIXTURES

BAD = sorted((FIXTURES / "bad").glob("*.yaml"))


def test_example_cluster_is_the_seed_farm(example: Inventory) -> None:
    roles = {r: len(example.hosts_of_role(r)) for r in example.roles}
    assert roles == {"master": 2, "lvs": 2, "web": 8, "db": 3, "log": 2}
    assert example.networks["outside"].vlan == 2
    assert example.networks["inside"].vlan is None
    assert [m.name for m in example.masters] == ["m01", "m02"]
    pair = example.lvs_pairs["lb"]
    assert (pair.active, pair.backup) == ("lvs1", "lvs2")


def test_lookups_by_mac_ip_and_role(example: Inventory) -> None:
    assert example.host_by_mac("52-54-00-00-01-03").name == "w103"  # type: ignore[union-attr]
    assert example.host_by_mac("52:54:00:00:11:03").name == "w103"  # type: ignore[union-attr]
    assert example.host_by_mac("52:54:00:ff:ff:ff") is None
    assert example.host_by_ip("203.0.113.12").name == "lvs2"  # type: ignore[union-attr]
    assert example.host_by_ip("not an address") is None
    net = example.network_of(ipaddress.IPv4Address("198.18.1.7"))
    assert net is not None and net.name == "inside"


def test_hosts_inherit_from_role_and_override(example: Inventory) -> None:
    w101, w108, lvs1 = example.hosts["w101"], example.hosts["w108"], example.hosts["lvs1"]
    assert w101.bond.primary == "eth0" and w108.bond.primary == "eth1"
    assert w108.bond.mode == "active-backup" and w108.bond.miimon == 100
    assert lvs1.bond.miimon == 0 and lvs1.bond.arp_interval == 1000
    assert [str(a) for a in lvs1.bond.arp_ip_target] == ["198.18.0.1", "198.18.0.2"]
    assert [i.device for i in lvs1.interfaces] == ["bond0", "bond0.2"]
    assert w101.hwtype.name == "S6014HT" and w101.image == "web"
    assert example.hosts["db1"].hwtype.partition("db").device == "/dev/sdb1"  # type: ignore


@pytest.mark.parametrize("raw,want", [
    ("52:54:00:AB:cd:01", "52:54:00:ab:cd:01"),
    ("52-54-00-ab-cd-01", "52:54:00:ab:cd:01"),
    ("525400abcd01", "52:54:00:ab:cd:01"),
])
def test_normalize_mac(raw: str, want: str) -> None:
    assert normalize_mac(raw) == want


@pytest.mark.parametrize("raw", ["52:54:00:ab:cd", "52:54:00:ab:cd:0g", "", "5254.00ab.cd01.ff"])
def test_normalize_mac_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_mac(raw)


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_each_rule_rejects_its_fixture(path: Path) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(InventoryError) as info:
        load(path)
    messages = [str(p) for p in info.value.problems]
    assert any(expect in m for m in messages), messages
    # every problem names the file and a line
    for p in info.value.problems:
        assert p.file == str(path)
        assert p.line is not None and p.line > 1, p


def test_a_fixture_for_every_rule_of_the_issue() -> None:
    names = {p.stem for p in BAD}
    for rule in ["duplicate-host", "duplicate-mac", "duplicate-address", "duplicate-vip",
                 "malformed-mac", "malformed-address", "address-outside-network",
                 "address-is-network", "address-is-broadcast", "gateway-outside-network",
                 "unknown-role", "unknown-network", "unknown-hwtype", "unknown-service",
                 "vlan-out-of-range", "virtual-service-role-without-hosts", "bond-too-few-nics",
                 "lvs-two-actives", "lvs-no-active", "unknown-key",
                 # issue 16: the load-balancer layer
                 "vip-outside-networks", "duplicate-virtual-router-id",
                 "lvs-host-without-lvs-service", "check-http-get-without-path",
                 "check-misc-without-command", "check-without-type",
                 "lvs-preempt-not-boolean", "lvs-preempt-delay-without-preempt",
                 "lvs-preempt-delay-out-of-range", "lvs-advert-int-finer-than-centiseconds",
                 "lvs-advert-int-not-a-number", "lvs-subsecond-advert-with-auth"]:
        assert rule in names


def test_every_error_is_reported_at_once() -> None:
    text = (FIXTURES / "small.yaml").read_text()
    text = text.replace("vlan: 2", "vlan: 9999")
    text = text.replace("52:54:00:12:00:22", "52:54:00:12:00:21")
    text = text.replace("w1: {role: web,", "w1: {role: wbe,")
    text = text.replace("    port: 80\n", "    port: 80\n    shceduler: rr\n")
    with pytest.raises(InventoryError) as info:
        loads(text, "multi.yaml")
    keys = {p.key for p in info.value.problems}
    assert {"networks.outside.vlan", "hosts.w1.role",
            "virtual_services.www.shceduler"} <= keys
    assert str(info.value).count("multi.yaml:") == len(info.value.problems)


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(InventoryError) as info:
        loads("cluster:\n  name: [unclosed\nnetworks: {}\n", "broken.yaml")
    (p,) = info.value.problems
    assert p.file == "broken.yaml" and p.line is not None and "YAML syntax" in p.reason


def test_missing_file_and_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InventoryError, match="no such file"):
        load(tmp_path / "nope.yaml")
    monkeypatch.setenv("DSAS_INVENTORY", str(EXAMPLE))
    assert load(None).cluster.name == "example"


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(InventoryError, match="must be a YAML mapping"):
        loads("- just\n- a list\n")


# -- root causes once (issue 14), size cap, bad bytes --------------------------------------


def test_a_bad_cidr_is_reported_once_not_by_everything_on_that_network() -> None:
    text = EXAMPLE.read_text().replace("cidr: 198.18.0.0/22", "cidr: 198.18.0.0/33")
    with pytest.raises(InventoryError) as info:
        loads(text, "c.yaml")
    assert [p.key for p in info.value.problems] == ["networks.inside.cidr"]  # was 26 problems


def test_consequences_are_dropped_but_other_mistakes_still_reported() -> None:
    text = (FIXTURES / "small.yaml").read_text().replace("cidr: 198.18.0.0/24",
                                                         "cidr: 198.18.0.0/33")
    text = text.replace('w1: {role: web, macs: ["52:54:00:12:00:21"',
                        'w1: {role: web, macs: ["52:54:00:12:00:2x"')
    text = text.replace("image: tiny}\nhosts:", "image: huge}\nhosts:")  # web: unknown image
    with pytest.raises(InventoryError) as info:
        loads(text, "c.yaml")
    assert [p.key for p in info.value.problems] == [
        "networks.inside.cidr", "roles.web.image", "hosts.w1.macs[0]"]


def test_a_bad_vlan_does_not_also_make_the_network_untagged() -> None:
    text = (FIXTURES / "small.yaml").read_text().replace("vlan: 2", "vlan: 5000")
    with pytest.raises(InventoryError) as info:
        loads(text, "c.yaml")
    (p,) = info.value.problems  # was also: "outside and inside are both untagged"
    assert p.key == "networks.outside.vlan" and "5000 is outside 1-4094" in p.reason


def test_a_refused_host_is_not_reported_again_where_it_is_named() -> None:
    text = (FIXTURES / "small.yaml").read_text().replace(
        "addresses: {inside: 198.18.0.11, outside: 198.19.2.11}",
        "addresses: {inside: 198.18.0.11, outside: 198.19.3.11}")
    with pytest.raises(InventoryError) as info:
        loads(text, "c.yaml")
    # lb1 is refused; the LVS pair naming it says nothing more
    assert [p.key for p in info.value.problems] == ["hosts.lb1.addresses.outside"]


def test_files_over_the_size_cap_are_refused(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(EXAMPLE.read_text() + "#" * (10 << 20) + "\n")  # 10 MB: 11.6 s, 264 MB
    with pytest.raises(InventoryError) as info:
        load(big)
    (p,) = info.value.problems
    assert "10.0 MiB is over the 4.0 MiB limit" in p.reason and "DSAS_INVENTORY_MAX_BYTES" \
        in p.reason
    monkeypatch.setenv("DSAS_INVENTORY_MAX_BYTES", str(1000))
    with pytest.raises(InventoryError, match="over the 1000 bytes limit"):
        load(EXAMPLE)
    with pytest.raises(InventoryError, match="over the 1000 bytes limit"):
        loads(EXAMPLE.read_text())
    monkeypatch.setenv("DSAS_INVENTORY_MAX_BYTES", str(EXAMPLE.stat().st_size))
    assert load(EXAMPLE).cluster.name == "example"  # exactly at the cap: read
    monkeypatch.setenv("DSAS_INVENTORY_MAX_BYTES", "lots")
    with pytest.raises(InventoryError, match="DSAS_INVENTORY_MAX_BYTES: must be a positive"):
        load(EXAMPLE)


def test_a_non_utf8_byte_names_its_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(EXAMPLE.read_bytes().replace(b"name: example", b"name: caf\xe9", 1))
    line = next(i for i, ln in enumerate(path.read_bytes().splitlines(), 1) if b"\xe9" in ln)
    with pytest.raises(InventoryError) as info:
        load(path)
    (p,) = info.value.problems
    assert p.line == line and "not UTF-8: byte 0xe9 at column 12" in p.reason


def test_control_characters_are_an_error_with_a_line_not_a_traceback() -> None:
    with pytest.raises(InventoryError) as info:
        loads("cluster:\n  name: a\x01b\n", "ctl.yaml")
    (p,) = info.value.problems
    assert p.line == 2 and "unacceptable character" in p.reason
