"""Pure parts of dsas-push: targets, release ids, manifests, parsers, policy, history, CLI usage."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.testing import require_tool
from provision.cli.push import push_cmd
from provision.inventory import loads
from provision.push.prelink import attr_listing
from provision.push.progress import TtyReporter, human_bytes
from provision.push.push import status_verdict
from provision.push.release import (
    Manifest,
    ManifestError,
    NodeLayout,
    is_release_id,
    local_manifest,
    manifest_pipeline,
    new_release_id,
)
from provision.push.remote import NodeState, parse_kv, to_prune
from provision.push.targets import TargetError, select_targets
from provision.push.transfer import explain, parse_progress, parse_stats, rsync_argv
from provision.sshtrust.sshconf import SshConfig, add_known_host, fingerprint, parse_key_lines
from provision.state import StateStore
from provision.state.pushes import History, HostResult
from tests.support.push_support import INV


@pytest.fixture
def inv():
    return loads(INV, "unit.yaml")


def test_targets_are_explicit(inv):
    with pytest.raises(TargetError, match="no targets"):
        select_targets(inv)
    assert [t.name for t in select_targets(inv, roles=["web"])] == ["w1", "w2"]
    assert [t.address for t in select_targets(inv, hosts=["d1"])] == ["198.18.5.21"]
    both = select_targets(inv, roles=["web"], hosts=["w1", "d1"])
    assert [t.name for t in both] == ["w1", "w2", "d1"]  # inventory order, each once
    assert len(select_targets(inv, all_hosts=True)) == 4
    for kw in ({"roles": ["nope"]}, {"hosts": ["nope"]}, {"all_hosts": True, "roles": ["web"]}):
        with pytest.raises(TargetError):
            select_targets(inv, **kw)


def test_release_ids_sort_by_time():
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0, 5000, tzinfo=dt.UTC)
    a = new_release_id(t0)
    b = new_release_id(t0 + dt.timedelta(milliseconds=1))
    assert a.startswith("20240501-120000-005-") and is_release_id(a) and a < b
    assert not is_release_id(".incoming-" + a) and not is_release_id("../x")


def test_layout():
    lay = NodeLayout("/srv/site/")
    assert lay.live == "/srv/site" and lay.releases == "/srv/site.releases"
    assert lay.link_prefix == "site.releases"
    assert lay.incoming("X") == "/srv/site.releases/.incoming-X"
    for bad in ("srv/site", "/", ""):
        with pytest.raises(ValueError):
            NodeLayout(bad)


def test_manifest_is_stable_across_copies_and_catches_changes(tmp_path):
    require_tool("rsync")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("x")
    (src / "g").write_text("y")
    (src / "l").symlink_to("d/f")
    m = local_manifest(str(src))
    assert m.entries == 5  # ., d, d/f, g, l
    copy = tmp_path / "copy"
    subprocess.run(["rsync", "-a", f"{src}/", f"{copy}/"], check=True)
    for i in range(300):  # grow d's directory size (it stays bigger after the removal)
        (copy / "d" / f"pad{i:03d}-{'x' * 100}").touch()
    for i in range(300):
        (copy / "d" / f"pad{i:03d}-{'x' * 100}").unlink()
    st = (src / "d").stat()
    os.utime(copy / "d", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert local_manifest(str(copy)) == m
    assert local_manifest(str(src), ["g"]).entries == 4
    os.chmod(copy / "g", 0o600)
    assert local_manifest(str(copy)) != m
    with pytest.raises(ManifestError):
        Manifest.parse("garbage")


def test_parsers():
    p = parse_progress("     12,345,678  45%   11.77MB/s    0:00:01 (xfr#12, to-chk=100/5000)")
    assert p and (p.bytes, p.percent, p.files, p.rate) == (12345678, 45, 12, "11.77MB/s")
    assert parse_progress("sending incremental file list") is None
    stats = parse_stats("Number of regular files transferred: 3\nTotal transferred file size:"
                        " 1,024 bytes\nTotal bytes sent: 2,048\n")
    assert stats == {"sent": 2048, "files": 3, "size": 1024}
    assert explain(11, 'rsync: [receiver] write failed on "x": No space left on device (28)'
                   ).startswith("disk full")
    assert explain(255, "ssh: connect to host 198.18.5.11 port 22: Connection refused"
                   ).startswith("connection lost: rsync exit 255")
    assert explain(12, "").startswith("connection lost")
    argv = rsync_argv("/s", "root@h:/d", "ssh", ["../a"], ["*.log"], checksum=True)
    assert argv[-2:] == ["/s/", "root@h:/d/"] and "--link-dest=../a" in argv
    assert "--exclude=*.log" in argv and "--checksum" in argv and "--delete" not in argv
    assert parse_kv("LIVE x\nREL a\nREL b\nnoise\n") == {"LIVE": ["x"], "REL": ["a", "b"]}


def test_prune_and_previous_and_verdict():
    st = NodeState(live="c", releases=["a", "b", "c", "d"])
    assert st.previous() == "b"
    assert to_prune(st, 2) == ["a", "b"]
    assert to_prune(NodeState(live="a", releases=["a", "b", "c"]), 1) == ["b"]  # never live
    assert NodeState(live="a", releases=["a"]).previous() is None
    assert status_verdict(NodeState(live="x"), "x") == "current"
    assert status_verdict(NodeState(live="w"), "x").startswith("stale")
    assert status_verdict(NodeState(), "x") == "no release"
    assert status_verdict(NodeState(not_symlink=True), "x").startswith("unmanaged")


def test_known_hosts_and_fingerprints(tmp_path):
    require_tool("ssh-keygen")
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = Path(f"{key}.pub").read_text()
    (ktype, blob), = parse_key_lines(pub)
    expect = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                            check=True).stdout.split()[1]
    assert ktype == "ssh-ed25519" and fingerprint(blob) == expect
    assert parse_key_lines("# comment\n198.18.5.11 " + pub) == [(ktype, blob)]
    cfg = SshConfig(tmp_path / "st", port=2222)
    add_known_host(cfg, "198.18.5.11", [(ktype, "AAAA")])
    add_known_host(cfg, "198.18.5.12", [(ktype, blob)])
    add_known_host(cfg, "198.18.5.11", [(ktype, blob)])  # replaces, never duplicates
    lines = cfg.known_hosts.read_text().splitlines()
    assert lines == [f"[198.18.5.12]:2222 {ktype} {blob}", f"[198.18.5.11]:2222 {ktype} {blob}"]
    opts = " ".join(cfg.ssh_command(tmp_path))
    assert f"UserKnownHostsFile={cfg.known_hosts}" in opts and "StrictHostKeyChecking=yes" in opts


def test_history(tmp_path):
    h = History(StateStore(tmp_path / "state.db"))
    r1 = h.start("push", "/srv/site", ["w1", "w2"], src="/s", release="R1", manifest="3 ab")
    h.finish(r1, [HostResult("w1", True, "R1"), HostResult("w2", False, reason="disk full")])
    assert h.latest_release("/srv/site") == "R1"
    assert h.last_push("/srv/site")["failed"] == 1
    assert [r["result"] for r in h.results(r1)] == ["ok", "failed"]
    r2 = h.start("rollback", "/srv/site", ["w1"])
    h.finish(r2, [HostResult("w1", True, "R0")], release="R0")
    assert h.latest_release("/srv/site") == "R0"
    assert h.last_push("/srv/site")["id"] == r1
    assert h.latest_release("/other") is None


def test_tty_board():
    rep = TtyReporter(io.StringIO(), interval=10)
    rep.begin(["a", "b"], "push R")
    rep.phase("a", "transferring")
    rep.progress("a", parse_progress("  1,048,576  50%  1.00MB/s  0:00:01 (xfr#3, to-chk=1/9)"))
    rep.done(HostResult("b", False, reason="x"))
    lines = rep.lines()
    assert "a" in lines[0] and "50%" in lines[0] and "1.0 MiB" in lines[0]
    assert "1/2 done, 0 ok, 1 failed" in lines[-1] and "failed: b" in lines[-1]
    rep.end()
    assert human_bytes(512) == "512 B" and human_bytes(3 * 1024**3) == "3.0 GiB"


def test_cli_usage_errors_exit_2(tmp_path):
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text(INV)
    (tmp_path / "src").mkdir()
    base = ["-i", str(inv_path), "--state-dir", str(tmp_path / "st")]
    runner = CliRunner()
    for args, msg in (([str(tmp_path / "src")], "no targets"),
                      (["--role", "web"], "SRC is required"),
                      ([str(tmp_path / "src"), "--all", "--role", "web"], "cannot be combined"),
                      ([str(tmp_path / "src"), "--host", "zz"], "unknown host"),
                      (["--status", "--rollback", "--all"], "exclude each other"),
                      (["--retry-failed"], "nothing to retry")):
        res = runner.invoke(push_cmd, args + base)
        assert res.exit_code == 2, (args, res.output)
        assert msg in res.output


def test_node_pipeline_agrees_with_the_masters_manifest(tmp_path):
    """What a node prints for the tree rsync made equals the master's manifest of the
    source with the same excludes: odd names, symlinks, modes, excluded names."""
    require_tool("rsync")
    require_tool("find")
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a dir|x").mkdir(parents=True)
    (src / "a dir|x" / "f  two spaces").write_text("1")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o750)
    (src / "link").symlink_to("a dir|x/f  two spaces")
    (src / "skip.log").write_text("excluded")
    (src / "logs").mkdir()
    (src / "logs" / "x.log").write_text("excluded")
    subprocess.run(["rsync", "-a", "--exclude=*.log", f"{src}/", f"{dst}/"], check=True)
    node = subprocess.run(["sh", "-c", manifest_pipeline(str(dst), str(tmp_path / "scratch"))],
                          capture_output=True, text=True, check=True).stdout
    want = local_manifest(str(src), ["*.log"])
    assert node.split() == [str(want.entries), want.digest]
    # the names from pre-linking's rsync listing serve as well as a dry run of its own
    assert local_manifest(str(src), ["*.log"], sent=attr_listing(str(src), ["*.log"])) == want
    assert want.entries == 6  # ., a dir|x, its file, run.sh, link, logs (empty)
    assert not (tmp_path / "scratch").exists()
    (dst / "run.sh").chmod(0o755)
    node = subprocess.run(["sh", "-c", manifest_pipeline(str(dst), str(tmp_path / "scratch"))],
                          capture_output=True, text=True, check=True).stdout
    assert node.split()[1] != want.digest
