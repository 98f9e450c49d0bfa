"""dsas-push against real nodes: namespaces with their own sshd and rsync, the master in another.

Each test builds a small farm (lab.sshfarm): nodes n01..n03 on a bridge in
the master's namespace, each with its own sshd, host key and tmpfs at /run/dsas-lab.
dsas-push runs as a subprocess in the master's namespace.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.sshfarm import MOUNT
from lab.testing import read_until, require_tool
from tests.support.paths import ROOT
from tests.support.push_lab import (
    DSAS,
    TO,
    PushLab,
    assert_ok,
    make_lab,
    release_of,
    snapshot,
    write_tree,
)


def full_snapshot(root: Path) -> dict[str, tuple]:
    """Like snapshot, plus inodes and every mtime: for "nothing changed at all"."""
    out = {}
    for rel, v in snapshot(root).items():
        st = (root / rel).lstat()
        out[rel] = (*v, st.st_ino, st.st_mtime_ns, st.st_nlink)
    return out


def test_first_and_incremental_push_byte_exact(lab, tmp_path):
    pl = make_lab(lab, tmp_path)
    write_tree(pl.src, {"index.html": "v1", "img/logo.png": os.urandom(300_000),
                        "a/b/c.txt": "deep", "gone.txt": "bye", "keep.log": "log"})
    (pl.src / "link").symlink_to("a/b/c.txt")
    os.chmod(pl.src / "a/b/c.txt", 0o600)
    r = pl.push(str(pl.src), "--role", "web", "--delete", "--exclude", "*.log")
    assert_ok(r)
    rel1 = release_of(r)
    expect = snapshot(pl.src)
    del expect["keep.log"]
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel1
        assert snapshot(n.root / "site") == expect, n.name
    # Incremental: change one file, add one, remove one; --delete removes it on the nodes.
    write_tree(pl.src, {"index.html": "v2", "new/file.txt": "new"})
    (pl.src / "gone.txt").unlink()
    r = pl.push(str(pl.src), "--role", "web", "--delete", "--exclude", "*.log")
    assert_ok(r)
    rel2 = release_of(r)
    assert rel2 > rel1
    expect = snapshot(pl.src)
    del expect["keep.log"]
    for n in pl.farm.nodes:
        site = n.root / "site"
        assert snapshot(site) == expect, n.name
        assert not (site / "gone.txt").exists()
        # Unchanged files are hard links into the previous release (--link-dest): free.
        old = n.root / "site.releases" / rel1 / "img/logo.png"
        assert (site / "img/logo.png").stat().st_ino == old.stat().st_ino
        assert (n.root / "site.releases" / rel1 / "index.html").read_text() == "v1"
    # The small update moved little: well under the 300 kB image per host.
    for line in r.stdout.splitlines()[2:5]:
        assert "KiB" in line or " B " in line, line
    # Without --delete, a file removed from SRC stays on the nodes (as with plain rsync);
    # this update goes through OpenSSH (auto uses paramiko for updates).
    (pl.src / "new/file.txt").unlink()
    assert_ok(pl.push(str(pl.src), "--host", "n01", "--exclude", "*.log", "--transport", "ssh"))
    assert (pl.node("n01").root / "site/new/file.txt").read_text() == "new"
    log = pl.dsas("push", "log", "--state-dir", str(pl.state))
    assert_ok(log)
    assert len(re.findall(r"\bpush\b", log.stdout)) == 3 and rel2 in log.stdout


def test_atomic_switch_reader_never_sees_a_mix(lab, tmp_path):
    pl = make_lab(lab, tmp_path, count=2, tmpfs_mib=128)
    names = [f"f{i:03d}" for i in range(150)]
    write_tree(pl.src, {n: "v1\n" for n in names})
    assert_ok(pl.push(str(pl.src), "--role", "web", "--delete"))
    # v2: same names, each file bigger so the transfer takes a while.
    for n in names:
        (pl.src / n).write_bytes(b"v2\n" + os.urandom(200_000).hex().encode()[:200_000] + b"\n")
    node = pl.node("n01")
    reader = node.popen(["sh", "-c",
        f"i=0; while [ $i -lt 20000 ] && [ ! -e {MOUNT}/stop ]; do i=$((i+1)); "
        f"(cd {TO}/ && head -qn1 f* | sort -u | tr '\\n' ' '; echo) || echo ERROR; done"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    early = read_until(reader, lambda t: "v1" in t, 30, "the reader's first look at v1")
    r = pl.push(str(pl.src), "--role", "web", "--delete")
    # After the push: at least one full look at the new release before the reader stops.
    late = read_until(reader, lambda t: "v2 \n" in t, 30, "the reader's first look at v2")
    (node.root / "stop").touch()
    out, _ = reader.communicate(timeout=60)
    out = early + late + out
    assert_ok(r)
    seen = {line.strip() for line in out.splitlines() if line.strip()}
    assert seen <= {"v1", "v2"}, f"reader saw a mix or an error: {seen - {'v1', 'v2'}}"
    assert seen == {"v1", "v2"}, f"the reader must have seen both releases: {seen}"


def slow_link(pl: PushLab, name: str, rate: str = "16mbit") -> None:
    node = pl.node(name)
    dev = node.ns.run(["ip", "-o", "link", "show"]).stdout
    ifname = re.findall(r"^\d+: ([^:@]+)@", dev, re.M)[0]
    node.ns.run(["tc", "qdisc", "add", "dev", ifname, "root", "tbf", "rate", rate,
                 "burst", "32kbit", "latency", "400ms"])


def push_into_transfer(pl: PushLab, name: str) -> subprocess.Popen[str]:
    """A push to the role in the background, returned once the big files reach ``name``."""
    proc = pl.push_bg(str(pl.src), "--role", "web")
    node = pl.node(name)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rel_dir = node.root / "site.releases"
        incoming = list(rel_dir.glob(".incoming-*")) if rel_dir.exists() else []
        if incoming and any(p.name.startswith(("big", ".big")) for p in incoming[0].iterdir()):
            return proc
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=30)
    pytest.fail(f"the transfer to {name} never started")


def test_sshd_killed_mid_push_then_retry_failed(lab, tmp_path):
    require_tool("tc")
    pl = make_lab(lab, tmp_path)
    write_tree(pl.src, {"index.html": "v1"})
    r1 = pl.push(str(pl.src), "--role", "web")
    assert_ok(r1)
    rel1 = release_of(r1)
    write_tree(pl.src, {f"big{i}.bin": os.urandom(1_000_000) for i in range(6)})
    write_tree(pl.src, {"index.html": "v2"})
    slow_link(pl, "n02")  # 6 MB at 16 Mbit/s: about 3 s, time to kill sshd in the middle
    proc = push_into_transfer(pl, "n02")
    n02 = pl.node("n02")
    n02.kill_sshd()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "failed: n02" in err, out + err
    assert re.search(r"^n02\s+FAILED\s.*connection", out, re.M), out
    assert pl.live("n02") == rel1 and (n02.root / "site/index.html").read_text() == "v1"
    rel2 = release_of_partial(out)
    for name in ("n01", "n03"):
        assert pl.live(name) == rel2
    n02.start_sshd()
    r = pl.push("--retry-failed")
    assert_ok(r)
    assert re.search(r"^n02\s+ok", r.stdout, re.M) and "n01" not in r.stdout
    assert pl.live("n02") == rel2
    assert snapshot(n02.root / "site") == snapshot(pl.src)


def test_a_frozen_node_fails_alone_in_seconds_not_an_hour(lab, tmp_path):
    """A node whose sshd and sessions all stop (SIGSTOP) mid-transfer: nothing is closed,
    its kernel still ACKs, so only the master's SSH keepalives can tell. The push must
    fail that node within about 15 s of keepalives and finish the others; the frozen
    node, resumed, is still on its old release. (Before the watch, the push waited for
    the transfer's hour: this test's 120 s ran out.)"""
    require_tool("tc")
    pl = make_lab(lab, tmp_path)
    write_tree(pl.src, {"index.html": "v1"})
    rel1 = release_of(pl.push(str(pl.src), "--role", "web"))
    write_tree(pl.src, {f"big{i}.bin": os.urandom(1_000_000) for i in range(6)})
    write_tree(pl.src, {"index.html": "v2"})
    slow_link(pl, "n02")
    proc = push_into_transfer(pl, "n02")
    n02 = pl.node("n02")
    n02.freeze()
    frozen_at = time.monotonic()
    try:
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - frozen_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        n02.freeze(signal.SIGCONT)
    print(f"push ended {took:.1f} s after n02 froze")
    assert proc.returncode == 1, out + err
    assert re.search(r"^n02\s+FAILED\s.*connection lost.*keepalive", out, re.M), out + err
    rel2 = release_of_partial(out)
    for name in ("n01", "n03"):
        assert pl.live(name) == rel2
    assert pl.live("n02") == rel1 and (n02.root / "site/index.html").read_text() == "v1"
    r = pl.push("--retry-failed")
    assert_ok(r)
    assert pl.live("n02") == rel2 and snapshot(n02.root / "site") == snapshot(pl.src)


def release_of_partial(out: str) -> str:
    m = re.search(r"^n01\s+ok\s.*live (\S+)", out, re.M)
    assert m, out
    return m.group(1)


def test_disk_full_fails_that_node_only(lab, tmp_path):
    pl = make_lab(lab, tmp_path, tmpfs_mib={"n01": 64, "n02": 3, "n03": 64})
    write_tree(pl.src, {"index.html": "v1"})
    r1 = pl.push(str(pl.src), "--role", "web")
    assert_ok(r1)
    rel1 = release_of(r1)
    write_tree(pl.src, {f"big{i}.bin": os.urandom(1_000_000) for i in range(5)})
    r = pl.push(str(pl.src), "--role", "web")
    assert r.returncode == 1
    assert re.search(r"^n02\s+FAILED\s.*disk full", r.stdout, re.M), r.stdout
    assert "failed: n02" in r.stderr
    n02 = pl.node("n02")
    assert pl.live("n02") == rel1 and (n02.root / "site/index.html").read_text() == "v1"
    assert not list((n02.root / "site.releases").glob(".incoming-*"))  # space given back
    assert pl.live("n01") == pl.live("n03") != rel1


def test_unknown_and_changed_host_keys_are_refused(lab, tmp_path):
    pl = make_lab(lab, tmp_path, trust=False)
    pl.trust("n01")
    # dsas trust by scanning: shows the fingerprint ssh-keygen computes for the node's key.
    r = pl.dsas("trust", "n02", "-i", str(pl.inventory), "--state-dir", str(pl.state), "--yes")
    assert_ok(r)
    fp = subprocess.run(["ssh-keygen", "-lf", str(pl.node("n02").dir / "ssh_host_ed25519_key.pub")],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    assert fp in r.stdout
    # n03 is unknown; n02's trusted key is replaced by another key (a changed host key).
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    assert_ok(pl.dsas("trust", "n02", "-i", str(pl.inventory), "--state-dir", str(pl.state),
                      "--key-file", f"{other}.pub", "--yes"))
    write_tree(pl.src, {"index.html": "v1"})
    r = pl.push(str(pl.src), "--role", "web")
    assert r.returncode == 1
    assert re.search(r"^n01\s+ok", r.stdout, re.M)
    assert re.search(r"^n02\s+FAILED\s.*host key CHANGED", r.stdout, re.M), r.stdout
    assert re.search(r"^n03\s+FAILED\s.*198\.18\.100\.13.*unknown", r.stdout, re.M), r.stdout
    assert "failed: n02, n03" in r.stderr
    assert pl.live("n02") is None and pl.live("n03") is None
    # rsync's ssh is just as strict (same known_hosts, StrictHostKeyChecking=yes).
    from provision.sshtrust.sshconf import SshConfig
    ssh = SshConfig(pl.state).ssh_command(tmp_path) + ["-o", "ControlMaster=no",
                                                        "198.18.100.13", "true"]
    r = pl.farm.master.run(ssh, check=False)
    assert r.returncode == 255 and "Host key verification failed" in r.stderr


def test_rollback_everywhere_and_status_drift(lab, tmp_path):
    pl = make_lab(lab, tmp_path)
    write_tree(pl.src, {"index.html": "v1"})
    rel1 = release_of(pl.push(str(pl.src), "--role", "web"))
    write_tree(pl.src, {"index.html": "v2"})
    rel2 = release_of(pl.push(str(pl.src), "--role", "web"))
    st = pl.push("--status", "--role", "web")
    assert_ok(st)
    assert len(re.findall(rf"{rel2}\s+current", st.stdout)) == 3
    r = pl.push("--rollback", "--role", "web")
    assert_ok(r)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel1
        assert (n.root / "site/index.html").read_text() == "v1"
    # Push v3 to two hosts only: n03 stays behind and --status says so.
    write_tree(pl.src, {"index.html": "v3"})
    rel3 = release_of(pl.push(str(pl.src), "--host", "n01", "--host", "n02"))
    pl.node("n02").kill_sshd()
    st = pl.push("--status", "--role", "web")
    assert st.returncode == 1
    assert re.search(rf"^n01\s+{rel3}\s+current", st.stdout, re.M), st.stdout
    assert re.search(r"^n02\s+-\s+unreachable", st.stdout, re.M), st.stdout
    assert re.search(rf"^n03\s+{rel1}\s+stale \(latest {rel3}\)", st.stdout, re.M), st.stdout
    assert "drift: 1 host(s) not current: n03" in st.stderr  # unreachable is not drift
    assert "unreachable: 1 host(s): n02" in st.stderr


def test_dry_run_changes_nothing(lab, tmp_path):
    pl = make_lab(lab, tmp_path)
    write_tree(pl.src, {"index.html": "v1", "old.txt": "old"})
    assert_ok(pl.push(str(pl.src), "--host", "n01", "--host", "n02"))
    before = {n.name: full_snapshot(n.root) for n in pl.farm.nodes}
    runs_before = pl.dsas("push", "log", "--state-dir", str(pl.state)).stdout
    write_tree(pl.src, {"index.html": "v2 is longer", "new.bin": os.urandom(50_000)})
    (pl.src / "old.txt").unlink()
    r = pl.push(str(pl.src), "--role", "web", "--delete", "--dry-run")
    assert_ok(r)
    assert "(dry run)" in r.stdout and re.search(r"^n03\s+ok\s+48\.\d KiB", r.stdout, re.M)
    after = {n.name: full_snapshot(n.root) for n in pl.farm.nodes}
    assert after == before
    assert not (pl.node("n03").root / "site.releases").exists()
    assert pl.dsas("push", "log", "--state-dir", str(pl.state)).stdout == runs_before


def test_then_runs_after_switch_and_a_failure_switches_back(lab, tmp_path):
    pl = make_lab(lab, tmp_path, count=2)
    write_tree(pl.src, {"index.html": "v1"})
    r = pl.push(str(pl.src), "--role", "web", "--then",
                f'cat index.html > {MOUNT}/then.out; echo "$DSAS_RELEASE" >> {MOUNT}/then.out')
    assert_ok(r)
    rel1 = release_of(r)
    for n in pl.farm.nodes:
        assert (n.root.parent / "dsas-lab/then.out").read_text() == f"v1{rel1}\n"
    write_tree(pl.src, {"index.html": "v2"})
    r = pl.push(str(pl.src), "--role", "web", "--then", "echo reload refused >&2; exit 3")
    assert r.returncode == 1 and "failed: n01, n02" in r.stderr
    assert re.search(rf"^n01\s+FAILED\s.*--then exited 3: reload refused; switched back to {rel1}",
                     r.stdout, re.M), r.stdout
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel1 and (n.root / "site/index.html").read_text() == "v1"


def test_host_key_from_the_boot_report(lab, tmp_path):
    """dsas-init's ready report carries the node's real host key to a real `dsas serve
    --only http`; `dsas trust --from-boot-report` then lets dsas-push in, and a
    different key reported later is refused."""
    from tests.support.dsas_init_support import MACS, Machine, conf

    require_tool("curl")
    pl = make_lab(lab, tmp_path, count=2, trust=False)
    master = pl.farm.master
    (tmp_path / "boot").mkdir()
    with open(tmp_path / "serve.log", "wb") as log:
        master.popen([*DSAS, "serve", "-i", str(pl.inventory), "--only", "http",
                      "--interface", "br0", "--boot-root", str(tmp_path / "boot"),
                      "--state-dir", str(pl.state)], stdout=log, stderr=subprocess.STDOUT)
    master.wait_port(80, "tcp")
    n01 = pl.node("n01")
    machine = Machine(tmp_path / "m", {"eth0": MACS[0], "eth1": MACS[1]})
    (machine.root / "etc" / "ssh").mkdir()
    (machine.root / "etc/ssh/ssh_host_ed25519_key.pub").write_text(n01.host_key_pub())
    # this boot's report token, from the dsas.conf the master serves n01
    served = n01.ns.run(["curl", "-fsS", "http://198.18.100.1/hosts/n01/dsas.conf"]).stdout
    token = dict(re.findall(r"^(DSAS_BOOT_ID|DSAS_BOOT_TOKEN)=(\S+)$", served, re.M))
    assert len(token) == 2, served
    (machine.root / "etc/dsas.conf").write_text(conf(SYSTEMNAME="n01", **token))
    env = machine.env("http://198.18.100.1")
    out = n01.ns.run(["env", *[f"{k}={v}" for k, v in env.items()], "bash",
                      str(ROOT / "boot-scripts/dsas-init")], check=False)
    assert out.returncode == 0 and "could not report" not in out.stdout, out.stdout + out.stderr
    write_tree(pl.src, {"index.html": "v1"})
    r = pl.push(str(pl.src), "--host", "n01")
    assert r.returncode == 1 and "unknown" in r.stdout  # not trusted yet
    base = ["-i", str(pl.inventory), "--state-dir", str(pl.state)]
    r = pl.dsas("trust", "n02", "--from-boot-report", "--yes", *base)
    assert r.returncode == 1 and "no SSH host key" in r.stderr  # n02 never reported
    r = pl.dsas("trust", "n01", "--from-boot-report", "--yes", *base)
    assert r.returncode == 0, r.stdout + r.stderr
    fp = subprocess.run(["ssh-keygen", "-lf", str(n01.dir / "ssh_host_ed25519_key.pub")],
                        capture_output=True, text=True, check=True).stdout.split()[1]
    assert fp in r.stdout and "198.18.100.11" in r.stdout
    assert_ok(pl.push(str(pl.src), "--host", "n01"))
    assert (n01.root / "site/index.html").read_text() == "v1"
    # Another key reported for n01 (reinstalled, or an impostor): not trusted.
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    report = {"host": "n01", "stage": "ready",
              "ssh_key": Path(f"{other}.pub").read_text().strip()}
    for fields, state in (({"boot_id": token["DSAS_BOOT_ID"], "token": token["DSAS_BOOT_TOKEN"]},
                           "CHANGED"), ({}, "REFUSED")):
        posted = n01.ns.run(["curl", "-fsS", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                             "Content-Type: application/json", "--data",
                             json.dumps({**report, **fields}),
                             "http://198.18.100.1/api/v1/events"], check=False)
        assert posted.stdout == "201", posted.stderr
        r = pl.dsas("trust", "--all-reported", "--yes", *base)
        assert r.returncode == 1 and state in r.stdout + r.stderr and "n01" in r.stderr
    assert_ok(pl.push(str(pl.src), "--host", "n01"))  # the trusted key is still the real one


def test_prelinked_release_shares_unchanged_files_and_never_touches_the_old(lab, tmp_path):
    """A --delete push starts the new release as hard links of the last one (cp -al),
    yet a file whose mode alone changed gets its own inode: the live release keeps
    its mode until the switch (rsync would chmod the shared inode in place)."""
    pl = make_lab(lab, tmp_path, count=1)
    write_tree(pl.src, {"a.txt": "same", "b.txt": "v1", "sub/c.txt": "c"})
    # a first push through paramiko too (auto would use OpenSSH for it)
    rel1 = release_of(pl.push(str(pl.src), "--role", "web", "--delete", "--transport",
                              "paramiko"))
    write_tree(pl.src, {"b.txt": "v2"})
    r = pl.push(str(pl.src), "--role", "web", "--delete", "-vv")
    assert_ok(r)
    assert "hard links of " + rel1 in r.stderr  # pre-linked, not --link-dest
    rel2 = release_of(r)
    rels = pl.node("n01").root / "site.releases"
    assert (rels / rel1 / "a.txt").stat().st_ino == (rels / rel2 / "a.txt").stat().st_ino
    assert (rels / rel1 / "b.txt").read_text() == "v1"
    assert (rels / rel2 / "b.txt").read_text() == "v2"
    (pl.src / "a.txt").chmod(0o600)  # same size, same mtime: only the mode differs
    r = pl.push(str(pl.src), "--role", "web", "--delete", "-vv")
    assert_ok(r)
    assert "link-dest" in r.stderr and "change only attributes" in r.stderr
    rel3 = release_of(r)
    assert (rels / rel2 / "a.txt").stat().st_mode & 0o777 == 0o644  # untouched
    assert (rels / rel3 / "a.txt").stat().st_mode & 0o777 == 0o600
    assert snapshot(pl.node("n01").root / "site") == snapshot(pl.src)


def test_update_visits_only_what_differs_from_each_nodes_own_base(lab, tmp_path):
    """A --delete update pre-links each node from its own live release (a canary one
    release ahead of the rest) and rsyncs only the names that differ from that
    base; a node whose base was changed behind dsas's back (an extra file, a
    missing one) fails that shortcut's verification and is repaired by a full
    rsync into the same incoming tree, then verified."""
    pl = make_lab(lab, tmp_path, count=2)
    write_tree(pl.src, {f"d{i}/f{j}.txt": f"{i}.{j}" for i in range(4) for j in range(5)})
    write_tree(pl.src, {"top.txt": "v1", "old/x.txt": "x"})
    rel1 = release_of(pl.push(str(pl.src), "--role", "web", "--delete", "--transport",
                              "paramiko"))
    write_tree(pl.src, {"top.txt": "v2"})
    rel2 = release_of(pl.push(str(pl.src), "--host", "n01", "--delete"))  # the canary
    shutil.rmtree(pl.src / "old")
    write_tree(pl.src, {"d1/f0.txt": "changed", "new/n.txt": "n"})
    r = pl.push(str(pl.src), "--role", "web", "--delete", "-vv")
    assert_ok(r)
    assert re.search(rf"host=n01 transfer into hard links of {rel2} \(only the names", r.stderr)
    assert re.search(rf"host=n02 transfer into hard links of {rel1} \(only the names", r.stderr)
    # d1/f0.txt, new/, new/n.txt, old/ (deleted), the root, d1/ and, from rel1, top.txt
    assert "entries differ from " + rel1 in r.stderr
    assert "full rsync" not in r.stderr
    for name in ("n01", "n02"):
        assert snapshot(pl.node(name).root / "site") == snapshot(pl.src)
    rels = pl.node("n02").root / "site.releases"
    assert (rels / rel1 / "top.txt").read_text() == "v1"  # the base is untouched
    # Tamper with n02's live release; the next update repairs it.
    live = pl.node("n02").root / "site.releases" / pl.live("n02")
    (live / "d0/f0.txt").unlink()
    (live / "stray.txt").write_text("not from the master")
    write_tree(pl.src, {"d2/f2.txt": "changed too"})
    r = pl.push(str(pl.src), "--role", "web", "--delete", "-vv")
    assert_ok(r)
    assert re.search(r"host=n02 delta transfer did not give the release .*verify failed.*"
                     r"full rsync", r.stderr), r.stderr
    assert "host=n01 delta transfer" not in r.stderr
    for name in ("n01", "n02"):
        assert snapshot(pl.node(name).root / "site") == snapshot(pl.src)


def test_a_node_that_stops_reading_for_seconds_is_slow_not_failed(lab, tmp_path):
    """rsync over the paramiko connection: the node's rsync is stopped (SIGSTOP) for
    3 s mid-transfer, as a busy disk or a loaded CPU would stall it, then resumed.
    The channel's window closes meanwhile; the push must wait, not end the stream.
    (It did end it: the downstream pump's 1 s poll timeout is the channel's, and
    paramiko applies it to the upstream pump's sendall too: "connection lost:
    rsync exit 10 or 12" for a healthy node.)"""
    from lab.sshfarm import descendants
    pl = make_lab(lab, tmp_path, count=1, tmpfs_mib=128)
    write_tree(pl.src, {"index.html": "v1"})
    rel1 = release_of(pl.push(str(pl.src), "--role", "web"))
    write_tree(pl.src, {f"big{i}.bin": os.urandom(4_000_000) for i in range(10)})
    proc = pl.push_bg(str(pl.src), "--role", "web")  # an update: over paramiko
    node = pl.node("n01")
    assert node.sshd is not None
    servers: list[int] = []
    deadline = time.monotonic() + 30
    while len(servers) < 2 and time.monotonic() < deadline:  # generator and receiver
        servers = []
        for pid in descendants(node.sshd.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"rsync") and b"--server" in argv:
                servers.append(pid)
        time.sleep(0.01)
    assert len(servers) == 2, "the node's rsync never started"
    for pid in servers:
        os.kill(pid, signal.SIGSTOP)
    try:
        assert proc.poll() is None and pl.live("n01") == rel1  # stopped mid-transfer
        time.sleep(3)  # the fault: a node that reads nothing for 3 s
    finally:
        for pid in servers:
            os.kill(pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    m = re.search(r"ok release (\S+)", out)
    assert m and pl.live("n01") == m.group(1) != rel1, out
    assert snapshot(node.root / "site") == snapshot(pl.src)


# Run in the master's namespace: one remote step, then the garbage collector started
# by a thread that holds the step's channel lock, as paramiko's transport thread holds
# it while it handles the node's CLOSE (or data, EOF, exit status) for that channel.
GC_UNDER_CHANNEL_LOCK = r"""
import gc, json, os, sys, threading
from pathlib import Path
import paramiko
from provision.push.remote import RemoteNode
from provision.sshtrust.sshconf import SshConfig
state, address = Path(sys.argv[1]), sys.argv[2]
chans = []
_exec = paramiko.Channel.exec_command
def exec_command(self, command):
    chans.append(self)
    return _exec(self, command)
paramiko.Channel.exec_command = exec_command
gc.disable()
gc.collect()
node = RemoteNode(SshConfig(state), "n01", address)
rc, out, err = node.run("echo step")
def collect():
    with chans[0].lock:
        gc.collect()
t = threading.Thread(target=collect, daemon=True)
t.start()
t.join(20)
verdict = {"step": [rc, out], "collector_done": not t.is_alive()}
if not t.is_alive():
    # a second connection's first step: nothing of it may be left for the collector
    node.close()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    node = RemoteNode(SshConfig(state), "n01", address)
    node.run("true")
    gc.collect()
    verdict["garbage"] = sorted({f"{type(o).__module__}.{type(o).__qualname__}"
                                 for o in gc.garbage
                                 if type(o).__module__.startswith("paramiko")})
print(json.dumps(verdict), flush=True)
os._exit(0)
"""


def test_a_remote_step_leaves_no_finalizer_that_takes_its_channel_lock(lab, tmp_path):
    """Issue 13 item 13: a healthy node's rsync channel open timed out after 30 s.
    paramiko's key-file probing (key_filename: each key class in turn, the last
    failure kept in a local) left a reference cycle holding RemoteNode.run's frame,
    and in it the step's stdin file. Its finalizer takes the channel's lock; when
    the collector ran in the transport thread while that thread held the lock, the
    thread waited on itself forever and the node's next channel open never got its
    answer. Here the collector runs under the step's channel lock: it must finish,
    and a connection plus a step leave nothing of paramiko's to collect."""
    pl = make_lab(lab, tmp_path, count=1)
    r = pl.farm.master.run([sys.executable, "-c", GC_UNDER_CHANNEL_LOCK, str(pl.state),
                            pl.node("n01").address], timeout=90, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    verdict = json.loads(r.stdout.strip().splitlines()[-1])
    assert verdict["step"] == [0, "step\n"], verdict
    assert verdict["collector_done"], "the collector waited forever on the step's channel lock"
    assert verdict["garbage"] == [], verdict
