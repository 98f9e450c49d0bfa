"""dsas-push --transfer uftp against real nodes: namespaces with sshd and uftpd on a bridge.

The master multicasts the changed files once (uftp, TTL 1, the lab's group and port,
out of the lab bridge); every node's uftpd is started over its SSH session into a
staging directory; rsync then completes and verifies each node as usual.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.testing import require_tool, wait_for
from provision.push.multicast import fixup_script
from provision.push.prelink import attr_listing, delta_names
from provision.push.release import local_manifest
from tests.support.push_lab import assert_ok, make_lab, release_of, snapshot, write_tree
from tests.support.push_lab import push_lands_everywhere as lands

GROUP, PORT = "239.255.77.9", 17099
UFTP = ["--transfer", "uftp", "--uftp-interface", "br0", "--uftp-group", GROUP,
        "--uftp-port", str(PORT), "-v"]


def uftp_lab(lab, tmp_path: Path, count: int = 3):  # noqa: ANN001, ANN201
    for t in ("uftp", "uftpd", "tcpdump"):
        require_tool(t)
    return make_lab(lab, tmp_path, count=count, tmpfs_mib=64)


def site_tree(root: Path, files: int = 100, size: int = 20_000) -> None:
    write_tree(root, {f"d{i % 7}/f{i:03d}.bin": os.urandom(size) for i in range(files)})
    write_tree(root, {"index.html": "v1", "a/b/c.txt": "deep"})
    os.chmod(root / "a/b/c.txt", 0o600)
    (root / "link").symlink_to("a/b/c.txt")


def rsync_bytes(stdout: str) -> dict[str, int]:
    """Host -> rsync bytes from the summary table (B/KiB/MiB)."""
    out = {}
    for m in re.finditer(r"^(n\d\d)\s+ok\s+([\d.]+) (B|KiB|MiB)", stdout, re.M):
        mult = {"B": 1, "KiB": 1024, "MiB": 1 << 20}[m.group(3)]
        out[m.group(1)] = int(float(m.group(2)) * mult)
    return out


def test_first_push_and_update_over_uftp_byte_exact(lab, tmp_path):
    pl = uftp_lab(lab, tmp_path)
    site_tree(pl.src)
    r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
    assert_ok(r)
    rel1 = release_of(r)
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel1
        assert snapshot(n.root / "site") == expect, n.name
    # The 2 MB went by multicast: rsync only set attributes (file list, no data).
    assert "uftp session" in r.stderr and "complete" in r.stderr, r.stderr
    sent = rsync_bytes(r.stdout)
    assert len(sent) == 3 and max(sent.values()) < 200_000, r.stdout
    # A 1% update: one file changes; and what rsync's pass did besides the data, which
    # the session's fixup script now does on the node: a mode, a new directory with a
    # file, a file and a directory gone, a symlink made and one repointed.
    (pl.src / "d3/f003.bin").write_bytes(os.urandom(20_000))
    (pl.src / "d1/f001.bin").write_bytes(os.urandom(20_000))  # (a mode alone: no pre-link)
    os.chmod(pl.src / "d1/f001.bin", 0o640)
    write_tree(pl.src, {"new/dir/n.txt": "new"})
    os.chmod(pl.src / "new/dir", 0o750)
    (pl.src / "d2/f002.bin").unlink()
    (pl.src / "a/b/c.txt").unlink()
    (pl.src / "a/b").rmdir()
    (pl.src / "link").unlink()
    (pl.src / "link").symlink_to("index.html")
    (pl.src / "new/l2").symlink_to("dir/n.txt")
    r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
    assert_ok(r)
    rel2 = release_of(r)
    assert "uftp session 0: 3 files" in r.stderr, r.stderr  # f001, f003, n.txt
    # no rsync pass: the fixup script set the attributes and the manifest verified
    assert r.stderr.count("attributes set") == 3, r.stderr
    assert "rsync's pass" not in r.stderr, r.stderr
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel2
        assert snapshot(n.root / "site") == expect, n.name
        old = n.root / "site.releases" / rel1
        # unchanged files stay hard links of the previous release, which is intact
        assert (n.root / "site/d0/f000.bin").stat().st_ino == (old / "d0/f000.bin").stat().st_ino
        assert (old / "d3/f003.bin").read_bytes() != (pl.src / "d3/f003.bin").read_bytes()
        assert not list((n.root / "site.releases").glob(".uftp-*")), n.name
    assert max(rsync_bytes(r.stdout).values()) < 10_000, r.stdout


def test_dropout_and_node_without_uftpd_go_by_rsync_and_multicast_stays_on_the_link(
        lab, tmp_path):
    pl = uftp_lab(lab, tmp_path)
    site_tree(pl.src, files=20, size=5_000)
    assert_ok(pl.push(str(pl.src), "--role", "web", "--delete", "--transfer", "rsync"))
    rel1 = pl.live("n01")
    # n03 has no uftpd (as a node image without the package): hidden in its mount namespace
    pl.node("n03").run(["mount", "--bind", "/dev/null", "/usr/bin/uftpd"])
    pcap = tmp_path / "br0.pcap"
    dump = pl.farm.master.popen(["tcpdump", "-i", "br0", "-nn", "-U", "-w", str(pcap),
                                 "ip multicast"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    try:
        assert dump.stderr is not None
        assert "listening on" in dump.stderr.readline()
        # 3 MB at 8 Mbit/s: about 3 s of multicast, time to drop n02 in the middle
        for i in range(30):
            (pl.src / f"d{i % 7}/new{i:02d}.bin").write_bytes(os.urandom(100_000))
        p = pl.push_bg(str(pl.src), "--role", "web", "--delete", *UFTP, "--uftp-rate", "8000")
        n02 = pl.node("n02")
        rels = n02.root / "site.releases"

        def receiving() -> int | None:
            pids = list(rels.glob(".uftp-*.pid"))
            stage = [s for s in rels.glob(".uftp-*") if s.is_dir()]
            # the new files come in the session's bundle (multicast.BUNDLE_NAME)
            if pids and stage and any(f.is_file() for f in stage[0].rglob(".dsas-uftp-bundle*")):
                return int(pids[0].read_text())
            return None
        pid = wait_for(receiving, 30, "n02's uftpd receiving")
        assert pl.live("n02") == rel1
        os.kill(pid, 9)
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, out + err
    finally:
        dump.send_signal(2)
        dump.communicate(timeout=30)
    rel2 = release_of(subprocess.CompletedProcess([], 0, out, err))
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel2, n.name
        assert snapshot(n.root / "site") == expect, n.name
    assert "host=n03 uftp: no uftpd on the node: rsync" in err, err
    assert re.search(r"0xC612640C incomplete .*rsync completes it", err), err
    sent = rsync_bytes(out)
    assert sent["n01"] < 100_000 and sent["n02"] > 300_000 and sent["n03"] > 2_900_000, out
    # Every multicast packet on the bridge: the push's group and port, TTL 1.
    text = subprocess.run(["tcpdump", "-nn", "-v", "-r", str(pcap)], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    pkts = re.findall(r"ttl (\d+),.*\n\s+(\S+) > (\S+): UDP", text)
    assert len(pkts) > 100, text[:2000]
    bad = [pk for pk in pkts if pk[0] != "1" or pk[2] != f"{GROUP}.{PORT}"
           and not pk[2].startswith("224.0.0.")]
    assert not bad, bad[:5]


def test_a_node_whose_dsas_init_runs_uftpd_receives_with_that_one(lab, tmp_path):
    """n01 runs uftpd from boot as dsas-init starts it (push: {multicast: true}; the
    flags of apply_uftpd, its pid and root files in /run/dsas): the push stages with it
    (the session names the staging directory, uftp -D) and leaves it running; n02 gets
    its own uftpd for the push, as before. Both land byte-exact."""
    from lab.sshfarm import MOUNT
    pl = uftp_lab(lab, tmp_path, count=2)
    site_tree(pl.src, files=20, size=5_000)
    n01 = pl.node("n01")
    os.makedirs("/run/dsas", exist_ok=True)  # a mount point; n01's own tmpfs goes on it
    n01.run(["mount", "-t", "tmpfs", "-o", "size=1m", "dsas-run", "/run/dsas"])
    n01.run(["sh", "-c", f"printf '%s\\n' {MOUNT} > /run/dsas/uftpd.root"])
    n01.run(["uftpd", "-I", n01.address, "-M", GROUP, "-p", str(PORT), "-D", MOUNT, "-E",
             "-K", "ec:prime256v1",
             "-P", "/run/dsas/uftpd.pid", "-L", "/run/dsas/uftpd.log", "-x", "2"])
    pid = int(wait_for(lambda: n01.run(["cat", "/run/dsas/uftpd.pid"], check=False).stdout,
                       30, "n01's boot uftpd pid file"))
    try:
        for round_ in (1, 2):
            if round_ == 2:
                (pl.src / "d3/f003.bin").write_bytes(os.urandom(5_000))
            r = lands(pl, "--role", "web", "--delete", *UFTP)
            assert "2/2 nodes complete" in r.stderr, r.stderr
            assert Path(f"/proc/{pid}/comm").read_text().strip() == "uftpd"  # still running
        assert n01.holder is not None
        # the history keeps what each run multicast: the whole tree, then the one file
        from provision.state.pushes import History
        from provision.state.store import StateStore
        store = StateStore(pl.state)
        sent = [r["mcast_bytes"] for r in History(store).runs(2)]
        store.close()
        assert sent[0] == 5_000 and sent[1] > 20 * 5_000, sent
        log = Path(f"/proc/{n01.holder.pid}/root/run/dsas/uftpd.log").read_bytes().decode(
            errors="replace")
        assert "f003.bin" in log and ".uftp-" in log, log[-3000:]
        assert not list((n01.root / "site.releases").glob(".uftp-*")), "staging left behind"
    finally:
        os.kill(pid, 9)


def test_a_staged_tree_that_does_not_verify_is_repaired_by_rsync(lab, tmp_path):
    """n02's live release was changed behind dsas's back (a file outside the update's
    delta): its pre-linked tree, staged and fixed up, fails the verification; rsync's
    pass repairs it before the verification that counts, and n02 lands byte-exact.
    The others switch on the fixup alone."""
    pl = uftp_lab(lab, tmp_path)
    site_tree(pl.src)
    rel1 = release_of(pl.push(str(pl.src), "--role", "web", "--delete", *UFTP))
    n02 = pl.node("n02")
    tampered = n02.root / "site.releases" / rel1 / "d0/f000.bin"
    tampered.write_bytes(b"changed on the node")
    (pl.src / "d3/f003.bin").write_bytes(os.urandom(20_000))
    r = pl.push(str(pl.src), "--role", "web", "--delete", *UFTP)
    assert_ok(r)
    rel2 = release_of(r)
    assert re.search(r"host=n02 the tree uftp staged does not verify", r.stderr), r.stderr
    assert r.stderr.count("does not verify") == 1, r.stderr
    expect = snapshot(pl.src)
    for n in pl.farm.nodes:
        assert pl.live(n.name) == rel2
        assert snapshot(n.root / "site") == expect, n.name


def test_as_another_user_owners_are_left_as_rsync_leaves_them(tmp_path: Path) -> None:
    """The fixup script (multicast.fixup_script) run for real as a user other than root:
    rsync -a cannot give files to another owner and does not try; the script must not
    fail on the chown either (the master's files are root's, the node's tree the push
    user's)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.fail("needs root and setpriv (util-linux) to run the script as another user")
    old, new = tmp_path / "old", tmp_path / "new"
    write_tree(old, {"a/f": b"1", "b/g": b"2"})
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    (new / "a/f").write_bytes(b"changed")
    os.chmod(new / "a/f", 0o640)
    write_tree(new, {"c/h": b"new"})
    lo, ln = attr_listing(str(old)), attr_listing(str(new))  # every entry root's
    script = fixup_script(lo, ln, delta_names(lo, ln))
    assert script is not None
    inc = tmp_path / "incoming"
    subprocess.run(["cp", "-a", "-l", f"{old}/.", str(inc)], check=True)
    os.unlink(inc / "a/f")
    shutil.copy2(new / "a/f", inc / "a/f")
    (inc / "c").mkdir()
    shutil.copy2(new / "c/h", inc / "c/h")
    os.chmod(tmp_path, 0o755)
    subprocess.run(["chown", "-R", "65534:65534", str(inc)], check=True)
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "sh", "-c", script], cwd=inc, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0 and r.stdout.strip() == "FIXED 1", r.stderr
    assert local_manifest(str(inc)) == local_manifest(str(new))
    assert (inc / "a/f").stat().st_uid == 65534
