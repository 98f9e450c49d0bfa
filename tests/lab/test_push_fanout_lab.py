"""dsas-push --transfer fanout against real nodes: namespaces with sshd on a bridge.

The master rsyncs to the first ``--fanout-width`` nodes; every other node gets the
release from its parent (rsync over SSH between the nodes, with the push's key and
the host key the master verified), then is verified against the master's manifest
and switched. A node whose parent failed is completed from the master.

With width 2 and six nodes the tree is: n01, n02 from the master; n03, n04 from
n01; n05, n06 from n02.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from lab.testing import require_tool, wait_for
from tests.support.push_lab import PushLab, assert_ok, make_lab, release_of, snapshot, write_tree

FANOUT = ["--role", "web", "--delete", "--transfer", "fanout", "--fanout-width", "2", "-v"]
PARENT = {"n03": "n01", "n04": "n01", "n05": "n02", "n06": "n02"}


def fanout_lab(lab, tmp_path: Path) -> PushLab:  # noqa: ANN001
    require_tool("tc")
    return make_lab(lab, tmp_path, count=6, tmpfs_mib=64)


def site_tree(root: Path, files: int = 100, size: int = 40_000) -> int:
    write_tree(root, {f"d{i % 7}/f{i:03d}.bin": os.urandom(size) for i in range(files)})
    write_tree(root, {"index.html": "v1", "a/b/c.txt": "deep"})
    os.chmod(root / "a/b/c.txt", 0o600)
    (root / "link").symlink_to("a/b/c.txt")
    return files * size


def tx_bytes(pl: PushLab) -> int:
    """What the master's own stack sent out of the lab bridge (frames the bridge only
    forwards, node to node, are not counted there)."""
    r = pl.farm.master.run(["cat", "/sys/class/net/br0/statistics/tx_bytes"])
    return int(r.stdout)


def push_key_lines(pl: PushLab) -> list[str]:
    """The push keys left in any node's own authorized_keys (there should be none)."""
    out = []
    for n in pl.farm.nodes:
        assert n.holder is not None
        f = Path(f"/proc/{n.holder.pid}/root/root/.ssh/authorized_keys")
        if f.exists():
            out += [ln for ln in f.read_text().splitlines() if "dsas-fanout-" in ln]
    return out


def assert_relayed(stderr: str, rel: str, relayed: dict[str, str]) -> None:
    for child, up in relayed.items():
        assert re.search(rf"host={child} release {rel} from {up} \(\d+ bytes", stderr), \
            f"{child} not relayed from {up}:\n{stderr}"


def test_first_push_and_update_fan_out_byte_exact_master_sends_k_copies(lab, tmp_path):
    pl = fanout_lab(lab, tmp_path)
    size = site_tree(pl.src)
    b0 = tx_bytes(pl)
    r = pl.push(str(pl.src), *FANOUT)
    master_sent = tx_bytes(pl) - b0
    assert_ok(r)
    rel1 = release_of(r)
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel1, n.name
        assert snapshot(n.root / "site") == expect, n.name
    # The master sent about 2 copies (its two children), not 6 (one per node).
    assert 1.8 * size < master_sent < 2.6 * size, (master_sent, size)
    assert_relayed(r.stderr, rel1, PARENT)
    assert push_key_lines(pl) == []
    assert not glob.glob("/tmp/dsas-fanout.*")  # the parents' private key directories
    # What a relay killed with its node leaves (a key directory with a past push's
    # private key) goes at the next relay once it is 2 h old; a younger one stays.
    stale, young = Path(tempfile.mkdtemp(prefix="dsas-fanout.", dir="/tmp")), \
        Path(tempfile.mkdtemp(prefix="dsas-fanout.", dir="/tmp"))
    (stale / "key").write_text("a dead relay's key\n")
    old_t = time.time() - 3 * 3600
    os.utime(stale, (old_t, old_t))
    # A 1% update: one file of 100 changes.
    (pl.src / "d3/f003.bin").write_bytes(os.urandom(40_000))
    try:
        r = pl.push(str(pl.src), *FANOUT)
        assert not stale.exists() and young.is_dir()
    finally:
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(young, ignore_errors=True)
    assert_ok(r)
    rel2 = release_of(r)
    assert_relayed(r.stderr, rel2, PARENT)
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel2, n.name
        assert snapshot(n.root / "site") == expect, n.name
        old = n.root / "site.releases" / rel1
        # unchanged files are hard links of the previous release, which is intact
        assert (n.root / "site/d0/f000.bin").stat().st_ino == (old / "d0/f000.bin").stat().st_ino
        assert (old / "d3/f003.bin").read_bytes() != (pl.src / "d3/f003.bin").read_bytes()
    assert push_key_lines(pl) == []
    # rollback and the drift report see fanout releases as any others
    r = pl.push("--rollback", "--host", "n05")
    assert_ok(r)
    assert pl.live("n05") == rel1
    r = pl.push("--status", "--role", "web")
    assert re.search(rf"^n05\s+{rel1}\s", r.stdout, re.M), r.stdout
    assert re.search(rf"^n06\s+{rel2}\s", r.stdout, re.M), r.stdout


def bridge_port(pl: PushLab, name: str) -> str:
    """The master-side bridge port of node ``name``'s link."""
    node = pl.node(name)
    inner = node.ns.run(["ip", "-o", "link", "show", "type", "veth"]).stdout
    # "2: eth0@if7: ...": 7 is the peer's index in the master's namespace (each
    # namespace numbers its own links: the node's own index says nothing there)
    m = re.search(r"^\d+: [^:@]+@if(\d+):", inner, re.M)
    assert m, inner
    ports = pl.farm.master.run(["ip", "-o", "link", "show", "master", "br0"]).stdout
    for line in ports.splitlines():
        index, port = line.split(":")[:2]
        if int(index) == int(m.group(1)):
            return port.strip().split("@")[0]
    raise AssertionError(f"no bridge port for {name}")


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_parent_killed_mid_push_fails_alone_its_children_come_from_the_master(lab, tmp_path,
                                                                              fault):
    """n01 dies mid-push: its sshd killed (the connection resets), or frozen (SIGSTOP:
    nothing is closed, only the master's SSH keepalives tell; before them the push
    waited for the transfer's hour and this test's 120 s ran out)."""
    pl = fanout_lab(lab, tmp_path)
    site_tree(pl.src, files=30, size=20_000)
    r = pl.push(str(pl.src), *FANOUT)
    assert_ok(r)
    rel1 = release_of(r)
    # 4 MB new, to n01 at 8 Mbit/s: about 4 s, time to kill n01 in the middle
    for i in range(40):
        (pl.src / f"d{i % 7}/new{i:02d}.bin").write_bytes(os.urandom(100_000))
    pl.farm.master.run(["tc", "qdisc", "add", "dev", bridge_port(pl, "n01"), "root", "tbf",
                        "rate", "8mbit", "burst", "32kb", "latency", "500ms"])
    p = pl.push_bg(str(pl.src), *FANOUT)
    n01 = pl.node("n01")
    rels = n01.root / "site.releases"

    def receiving() -> bool:
        return any(f.name.startswith(".new") or f.name.startswith("new")
                   for inc in rels.glob(".incoming-*") for f in inc.rglob("*"))
    try:
        wait_for(receiving, 30, "n01 receiving")
        assert pl.live("n01") == rel1
        if fault == "kill":
            n01.kill_sshd()
        else:
            n01.freeze()
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=30)
        n01.freeze(signal.SIGCONT)
    assert p.returncode == 1, out + err
    assert re.search(r"^n01\s+FAILED", out, re.M), out
    if fault == "freeze":
        assert re.search(r"^n01\s+FAILED\s.*keepalive", out, re.M), out
    rel2 = re.search(r"ok release (\S+)", out)
    assert rel2, out
    expect = snapshot(pl.src)
    for n in pl.farm.nodes[1:]:
        assert pl.live(n.name) == rel2.group(1), n.name
        assert snapshot(n.root / "site") == expect, n.name
    # n01's children: it never held the release, the master sent it to them
    for child in ("n03", "n04"):
        assert f"host={child} fan-out: n01 does not hold" in err, err
    assert_relayed(err, rel2.group(1), {"n05": "n02", "n06": "n02"})
    assert pl.live("n01") == rel1  # stayed on its old release
    # back up, the retry lands the same release on n01 alone
    if fault == "kill":
        n01.start_sshd()
    r = pl.push("--retry-failed", "--transfer", "fanout", "--fanout-width", "2")
    assert_ok(r)
    assert pl.live("n01") == rel2.group(1)
    assert snapshot(n01.root / "site") == expect
    assert push_key_lines(pl) == []


def test_relay_that_fails_or_does_not_verify_is_completed_from_the_master(lab, tmp_path):
    pl = fanout_lab(lab, tmp_path)
    site_tree(pl.src, files=20, size=10_000)
    # n03 cannot take the push key (its ~/.ssh is a file): the relay to it fails
    pl.node("n03").run(["touch", "/root/.ssh"])
    r = pl.push(str(pl.src), *FANOUT)
    assert_ok(r)
    rel1 = release_of(r)
    assert "host=n03 fan-out from n01 failed (authorizing n01" in r.stderr, r.stderr
    assert_relayed(r.stderr, rel1, {c: p for c, p in PARENT.items() if c != "n03"})
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel1, n.name
        assert snapshot(n.root / "site") == expect, n.name
    # --then writes into each release: a parent's is no longer the master's tree, so its
    # children's verification refuses what it relayed and the master sends theirs
    (pl.src / "index.html").write_text("v2")
    r = pl.push(str(pl.src), *FANOUT, "--then", "echo built > .built")
    assert_ok(r)
    rel2 = release_of(r)
    for child, up in PARENT.items():
        if child != "n03":
            assert re.search(rf"host={child} fan-out from {up} failed \(verify failed", r.stderr), \
                r.stderr
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel2, n.name
        site = n.root / "site"
        assert (site / ".built").read_text() == "built\n"
        assert (site / "index.html").read_text() == "v2"
        assert not list((n.root / "site.releases").glob(".partial-*")), n.name
    assert push_key_lines(pl) == []


def test_parent_refuses_a_child_whose_host_key_is_not_the_one_dsas_verified(lab, tmp_path):
    """n01's connections to n03's address reach another sshd (a different host key):
    the relay is refused by n01's ssh, and the master, which verified n03's real key,
    completes n03 itself."""
    from lab.netns import tool
    from lab.sshfarm import wait_listen
    require_tool("iptables")
    pl = fanout_lab(lab, tmp_path)
    site_tree(pl.src, files=20, size=10_000)
    n01, n03 = pl.node("n01"), pl.node("n03")
    imposter = tmp_path / "imposter"
    imposter.mkdir()
    key = imposter / "ssh_host_ed25519_key"
    subprocess.run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, capture_output=True, timeout=30)
    conf = (n03.dir / "sshd_config").read_text().replace("Port 22\n", "Port 2222\n")
    conf = conf.replace(str(n03.dir / "ssh_host_ed25519_key"), str(key))
    (imposter / "sshd_config").write_text(conf)
    sshd = n03.popen([tool("sshd"), "-D", "-e", "-f", str(imposter / "sshd_config")],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listen(n03.ns, n03.address, 2222)
        n03.ns.run(["iptables", "-t", "nat", "-A", "PREROUTING", "-s", n01.address, "-p",
                    "tcp", "--dport", "22", "-j", "REDIRECT", "--to-ports", "2222"])
        r = pl.push(str(pl.src), *FANOUT)
    finally:
        sshd.kill()
        sshd.wait(timeout=10)
    assert_ok(r)
    rel = release_of(r)
    assert "host=n03 fan-out from n01 failed (relay: host key verification failed (ssh))" \
        in r.stderr, r.stderr
    assert_relayed(r.stderr, rel, {c: p for c, p in PARENT.items() if c != "n03"})
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel, n.name
        assert snapshot(n.root / "site") == expect, n.name
    assert push_key_lines(pl) == []


def test_a_parent_that_takes_no_new_connection_holds_only_its_own_children(lab, tmp_path):
    """The master's login on a fan-out parent (for its children's relays) is made under
    that parent's lock, not under one lock all parents share. n01 answers the master's
    connection it has and drops every new one (its SYNs), as a parent whose sshd hung
    after the master logged in would: each child of n01 waits the connect timeout
    (10 s) in turn, then is completed from the master. n02's children must not wait
    behind them: with one lock for every parent they did (their relays came after n03
    gave up on n01), so a healthy parent's subtree was as slow as the hung one's."""
    require_tool("iptables")
    pl = fanout_lab(lab, tmp_path)
    site_tree(pl.src, files=20, size=10_000)
    rel1 = release_of(pl.push(str(pl.src), *FANOUT))
    # an update of 2 MB: n01 gets it in about 1 s, n02 in about 4 s, so n01's
    # children ask the master for their parent first
    for i in range(20):
        (pl.src / f"d{i % 7}/new{i:02d}.bin").write_bytes(os.urandom(100_000))
    for name, rate in (("n01", "16mbit"), ("n02", "4mbit")):
        pl.farm.master.run(["tc", "qdisc", "add", "dev", bridge_port(pl, name), "root", "tbf",
                            "rate", rate, "burst", "32kb", "latency", "500ms"])
    n01 = pl.node("n01")
    rels = n01.root / "site.releases"
    p = pl.push_bg(str(pl.src), *FANOUT)
    try:
        wait_for(lambda: any(rels.glob(".incoming-*")), 30, "n01 prepared")
        n01.ns.run(["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "22", "--syn",
                    "-j", "DROP"])
        assert pl.live("n01") == rel1  # the rule is in place before n01 holds the release
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=30)
    assert p.returncode == 0, out + err
    m = re.search(r"ok release (\S+)", out)
    assert m, out
    rel2 = m.group(1)
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel2, n.name
        assert snapshot(n.root / "site") == expect, n.name
    assert_relayed(err, rel2, {"n05": "n02", "n06": "n02"})
    lines = err.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, ln in enumerate(lines) if re.search(pattern, ln))
    gave_up = first(r"host=n03 fan-out from n01 failed \(unreachable")
    for child in ("n05", "n06"):  # the order of events, not a duration
        assert first(rf"host={child} release {rel2} from n02 ") < gave_up, err
    assert first(r"host=n02 logged in for its children's relays") < gave_up, err
    assert push_key_lines(pl) == []
