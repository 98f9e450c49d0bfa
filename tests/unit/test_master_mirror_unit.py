"""The master pair's mirror (issue 18) over real channels on loopback: two Replicators
(127.0.0.1 the active, 127.0.0.2 the standby) with their Mirrors; the standby's trees
become the active's, verified; names that leave a tree are refused; a peer that is gone
makes the mirror stale, and a takeover with it is reported."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from provision.ha import mirror as mmod
from provision.ha.mirror import Mirror, MirrorError, Tree, trees
from provision.ha.pair import Me, Replicator, resolve
from provision.inventory import load
from provision.observability.metrics import Metrics
from provision.state import StateStore
from tests.support.master_support import pair_inventory

KEY = bytes(range(32))


@dataclass
class Side:
    """One master of the loopback pair."""

    me: Me
    dir: Path
    store: StateStore
    rep: Replicator
    mirror: Mirror

    @property
    def trees(self) -> dict[str, Tree]:
        return self.mirror.kinds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _side(tmp: Path, name: str, mine: str, peer: str, port: int) -> Side:
    inv_file = tmp / "cluster.yaml"
    if not inv_file.exists():
        inv_file.write_text(pair_inventory())
    me0 = resolve(load(inv_file), name)
    me = Me(me0.side, me0.name, IPv4Address(mine), me0.peer_side, me0.peer_name,
            IPv4Address(peer), me0.vip, me0.network, replace(me0.pair, port=port))
    d = tmp / name
    (d / "state").mkdir(parents=True)
    store = StateStore(d / "state")
    rep = Replicator(me, KEY, store, Metrics(), d / "state")
    m = Mirror(me, KEY, trees(d / "cluster.yaml", d / "boot", d / "state"), Metrics(),
               lambda: rep.active, lambda: rep.peer_status,
               displaced=d / "state" / "mirror-displaced")
    rep.mirror = m
    rep.start()
    return Side(me, d, store, rep, m)


@pytest.fixture
def loop_pair(tmp_path: Path) -> Iterator[tuple[Side, Side]]:
    port = _free_port()
    a = _side(tmp_path, "m01", "127.0.0.1", "127.0.0.2", port)
    b = _side(tmp_path, "m02", "127.0.0.2", "127.0.0.1", port)
    a.rep.active = True
    try:
        yield a, b
    finally:
        for s in (a, b):
            s.mirror.stop()
            s.rep.stop()
            s.store.close()


def _fill(root: Path) -> None:
    (root / "cluster.yaml").write_text("cluster: {name: a}\n")
    ssh = root / "state" / "ssh"
    ssh.mkdir(parents=True)
    (ssh / "known_hosts").write_text("198.18.0.11 ssh-ed25519 AAAA\n")
    img = root / "boot" / "images" / "base" / "v1"
    img.mkdir(parents=True)
    (img / "vmlinuz").write_bytes(os.urandom(3 * mmod.CHUNK + 17))  # several chunks
    (img / "manifest.json").write_text("{}\n")
    os.symlink("v1", root / "boot" / "images" / "base" / "current")
    (root / "boot" / "undionly.kpxe").write_bytes(b"loader")
    (root / "boot" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "boot" / "run.sh", 0o755)


def _same(a: Side, b: Side) -> None:
    h = mmod.Hasher()
    for kind, tree in a.trees.items():
        assert mmod.manifest(tree, h) == mmod.manifest(b.trees[kind], h), kind


def test_the_standby_gets_every_kind_verified_and_follows_each_change(
        loop_pair: tuple[Side, Side]) -> None:
    a, b = loop_pair
    _fill(a.dir)
    (b.dir / "boot").mkdir()
    (b.dir / "boot" / "old.cfg").write_text("only on the standby\n")
    changed: list[str] = []
    b.mirror.on_changed = changed.append
    assert b.mirror.sync()
    _same(a, b)
    assert not (b.dir / "boot" / "old.cfg").exists()
    assert os.readlink(b.dir / "boot" / "images" / "base" / "current") == "v1"
    assert (b.dir / "boot" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert sorted(changed) == ["boot", "images", "inventory", "known_hosts"]
    st = b.mirror.status()
    assert all(not k["stale"] and k["last_sync"] for k in st.values()), st
    assert st["images"]["bytes"] == 3 * mmod.CHUNK + 17 + 3
    # a new version, the current link moved, the old version removed
    new = a.dir / "boot" / "images" / "base" / "v2"
    new.mkdir()
    (new / "vmlinuz").write_bytes(b"v2 kernel")
    os.replace(a.dir / "boot" / "images" / "base" / "current", a.dir / "x")
    os.symlink("v2", a.dir / "boot" / "images" / "base" / "current")
    (a.dir / "x").unlink()
    for f in (a.dir / "boot" / "images" / "base" / "v1").iterdir():
        f.unlink()
    changed.clear()
    assert b.mirror.sync()
    _same(a, b)
    assert changed == ["images"]
    assert (b.dir / "boot" / "images" / "base" / "current" / "vmlinuz").read_bytes() == \
        b"v2 kernel"
    # the active's own status: it is the source, never stale
    assert all(k["role"] == "source" and not k["stale"] for k in a.mirror.status().values())


def test_a_peer_that_is_gone_or_not_active_leaves_the_mirror_stale_and_a_takeover_says_so(
        loop_pair: tuple[Side, Side]) -> None:
    a, b = loop_pair
    _fill(a.dir)
    a.rep.active = False
    assert not b.mirror.sync()  # both standby: nobody is the source
    assert "not the active master" in b.mirror.status()["inventory"]["why"]
    a.rep.active = True
    assert b.mirror.sync()
    (a.dir / "cluster.yaml").write_text("cluster: {name: b}\n")
    a.rep.stop()  # the active is gone
    assert not b.mirror.sync()
    st = b.mirror.status()
    assert all(k["stale"] for k in st.values()), st
    b.rep.active = True  # the standby takes over with it: reported, not silent
    b.mirror.tick()
    st = b.mirror.status()
    assert all(k["stale"] and k["role"] == "source" for k in st.values()), st
    assert (b.dir / "cluster.yaml").read_text() == "cluster: {name: a}\n"


@pytest.mark.parametrize("rel", ["../x", "/etc/passwd", "a/../../x", "images/base/v1/k",
                                 ".dsas-mirror-x", "a//b", ""])
def test_a_name_that_leaves_the_tree_is_refused(tmp_path: Path, rel: str) -> None:
    tree = Tree("boot", tmp_path, exclude=("images",))
    with pytest.raises(MirrorError):
        mmod._checked_rel(tree, rel)


@pytest.mark.parametrize("rel,target,ok", [
    ("base/current", "v1", True), ("base/current", "../base/v1", True),
    ("base/current", "../../etc", False), ("current", "/etc", False),
    ("current", "..", False)])
def test_a_symlink_may_point_only_inside_the_tree(tmp_path: Path, rel: str, target: str,
                                                  ok: bool) -> None:
    tree = Tree("images", tmp_path)
    if ok:
        assert mmod._checked_target(tree, rel, target) == target
    else:
        with pytest.raises(MirrorError):
            mmod._checked_target(tree, rel, target)


def test_the_status_page_line_says_role_sync_and_a_stale_mirror() -> None:
    from provision.ha.pair import state_line
    assert state_line({}) == "not reachable"
    assert state_line({"role": "active", "in_sync": True, "peer_reachable": True,
                       "mirror": {"boot": {"stale": False}}}) == "active, in sync"
    line = state_line({"role": "standby", "peer_reachable": False, "lag_updates": 0,
                       "mirror": {"boot": {"stale": True}, "images": {"stale": False}}})
    assert line == "standby, peer not reachable, mirror STALE: boot"
    assert state_line({"role": "standby", "peer_reachable": True,
                       "mirror": {"boot": {"stale": False}}}) == "standby, mirror in sync"


def test_a_local_change_the_mirror_undoes_is_kept_aside_not_lost(
        loop_pair: tuple[Side, Side]) -> None:
    """Published on the standby after the last sync (it was active, cut off): the
    mirror makes the tree the active's again, and keeps the standby's own files."""
    a, b = loop_pair
    _fill(a.dir)
    assert b.mirror.sync()
    mine = b.dir / "boot" / "images" / "base" / "v9"
    mine.mkdir()
    (mine / "vmlinuz").write_bytes(b"published on m02 alone")
    (b.dir / "cluster.yaml").write_text("cluster: {name: edited-on-m02}\n")
    assert b.mirror.sync()
    _same(a, b)
    kept = b.dir / "state" / "mirror-displaced"
    assert (kept / "images" / "base" / "v9" / "vmlinuz").read_bytes() == \
        b"published on m02 alone"
    assert (kept / "inventory" / "cluster.yaml").read_text() == \
        "cluster: {name: edited-on-m02}\n"
    # what was in sync and only removed or replaced by the active is not kept
    (a.dir / "boot" / "run.sh").unlink()
    assert b.mirror.sync()
    assert not (kept / "boot").exists()


def test_a_restarted_master_knows_when_its_mirror_was_last_in_sync(
        loop_pair: tuple[Side, Side]) -> None:
    a, b = loop_pair
    _fill(a.dir)
    b.mirror.state_file = b.dir / "state" / "mirror-state.json"
    assert b.mirror.sync()
    again = Mirror(b.me, KEY, list(b.trees.values()), Metrics(), lambda: False, dict,
                   state_file=b.mirror.state_file)
    st = again.status()
    assert all(k["last_sync"] == b.mirror.state[kind]["last_sync"] and not k["stale"]
               for kind, k in st.items()), st
    fresh = Mirror(b.me, KEY, list(b.trees.values()), Metrics(), lambda: False, dict)
    assert all(k["why"] == "never mirrored" for k in fresh.status().values())
