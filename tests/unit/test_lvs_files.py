"""A director's keepalived.conf, served by the boot tree like dsas.conf (issue 16)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from provision.inventory import load
from provision.policy.boottree import BootTree, Refused
from provision.render import render_host
from tests.support.paths import FIXTURES

SMALL = FIXTURES / "small.yaml"


@pytest.fixture
def tree(tmp_path: Path) -> BootTree:
    return BootTree(tmp_path, load(SMALL))


def test_director_gets_its_keepalived_conf_and_checksum(tree: BootTree) -> None:
    inv = tree.inventory
    f = tree.lookup("hosts/lb1/keepalived.conf", peer="198.18.0.11")
    assert f.data == render_host(inv, inv.hosts["lb1"], "keepalived").encode()
    assert b"state MASTER" in f.data and b"virtual_server 198.19.2.10 80" in f.data
    s = tree.lookup("hosts/lb1/keepalived.conf.sha256", peer="198.18.0.11")
    assert s.data == f"{hashlib.sha256(f.data).hexdigest()}  keepalived.conf\n".encode()
    # the backup's file differs, and an admin on an unlisted address may read it
    b = tree.lookup("hosts/lb2/keepalived.conf")
    assert b"state BACKUP" in b.data


def test_not_a_director_and_other_hosts_are_refused(tree: BootTree) -> None:
    with pytest.raises(Refused) as e:
        tree.lookup("hosts/w1/keepalived.conf")
    assert e.value.reason.key == "not_found" and "no LVS pair" in e.value.message
    with pytest.raises(Refused) as e:
        tree.lookup("hosts/ghost/keepalived.conf.sha256")
    assert e.value.reason.key == "not_in_inventory"
    # a web server may not read the director's VRRP password
    with pytest.raises(Refused) as e:
        tree.lookup("hosts/lb1/keepalived.conf", peer="198.18.0.21")
    assert e.value.reason.key == "other_host" and e.value.reason.http_status == 403
