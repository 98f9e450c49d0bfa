"""Pure parts of the faster push and of host keys from boot reports: pre-link safety,
listings, the rsync shim (a real bash and pidfd_getfd), prepare scripts, ssh_key events, dsas trust
--from-boot-report."""

from __future__ import annotations

import base64
import json
import os
import select
import struct
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lab.testing import require_tool
from provision.cli.push import trust
from provision.inventory import loads
from provision.policy.httpfiles import BadEvent, parse_event, parse_ssh_key
from provision.push import tunnel
from provision.push.prelink import (
    ListingStore,
    attr_listing,
    base_listing,
    delta_names,
    parse_listing,
    unsafe_to_prelink,
)
from provision.push.push import Pusher, PushOptions
from provision.push.release import NodeLayout
from provision.push.remote import prepare_script
from provision.push.targets import Target
from provision.push.transfer import explain, rsync_argv
from provision.sshtrust.hostkeys import plan_trust, trusted_keys
from provision.sshtrust.sshconf import SshConfig, add_known_host, fingerprint
from provision.state import StateStore
from provision.state.events import ensure_events_schema, reported_keys
from provision.state.schema import EVENTS_DDL
from tests.support.push_support import INV

R1, R2 = "20240501-120000-000-aaaa", "20240502-120000-000-bbbb"


def entry(kind="f", perms="rw-r--r--", uid="0", gid="0", size="10",
          mtime="2024/05/01-12:00:00", link=""):
    return (kind, perms, uid, gid, size, mtime, link)


def test_prelink_is_refused_only_for_attribute_only_changes():
    old = {"a": entry(), "b": entry(), "c": entry(), "l": entry("L", link=" -> a"),
           "d/": entry("d")}
    new = {
        "a": entry(perms="rwx------"),  # same size and mtime, new mode: chmod in place
        "b": entry(size="11", perms="rwx------"),  # new size: a new file anyway
        "c": entry(mtime="2024/05/02-12:00:00"),  # new mtime: rsync writes a new file
        "l": entry("L", link=" -> b"),  # new target: a new symlink
        "d/": entry("d", perms="rwx------"),  # directories are never shared
        "n": entry(),  # new
    }
    assert unsafe_to_prelink(old, new, checksum=False) == ["a"]
    # with --checksum, equal content with another mtime is touched in place
    assert unsafe_to_prelink(old, new, checksum=True) == ["a", "c"]
    assert unsafe_to_prelink(old, {"l": entry("L", uid="7", link=" -> a")}, False) == ["l"]
    assert unsafe_to_prelink(old, dict(old), False) == []


def test_listing_store_and_choice_of_base(tmp_path):
    require_tool("rsync")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("x")
    (src / "skip.log").write_text("y")
    (src / "l").symlink_to("d/f")
    listing = attr_listing(str(src), ["*.log"])
    assert set(listing) == {"./", "d/", "d/f", "l"}
    assert listing["d/f"][0] == "f" and listing["l"][0] == "L" and listing["l"][6] == " -> d/f"
    store = ListingStore(tmp_path / "listings")
    store.save(R1, listing)
    store.save("../evil", listing)  # not a release id: ignored
    assert store.load(R1) == listing and store.load("../evil") is None
    assert [p.name for p in store.dir.iterdir()] == [R1]
    assert base_listing(store, R1, listing, False) == listing
    assert base_listing(store, R2, listing, False) is None  # unknown base: --link-dest
    (src / "d" / "f").chmod(0o600)
    assert base_listing(store, R1, attr_listing(str(src), ["*.log"]), False) is None
    assert parse_listing("garbage\nno|bars\n") == {}


def test_prepare_links_only_from_a_release_id():
    lay = NodeLayout("/srv/site")
    assert "cp -al" not in prepare_script(lay, R2)
    assert "cp -al" not in prepare_script(lay, R2, ["../../etc"])
    script = prepare_script(lay, R2, [R1])
    assert "cp -al" in script and R1 in script and "LINKED" in script
    argv = rsync_argv("/s", "h:/d", "sh", [], ["*.log"], delete=True, delete_excluded=True)
    assert "--delete" in argv and "--delete-excluded" in argv


def test_shim_request_and_tunnel_reasons():
    shim = str(tunnel.SHIM).encode()
    line = b"\0".join([b"bash", shim, b"7", b"9", b"-l", b"root", b"198.18.5.11", b"rsync",
                       b"--server", b"."]) + b"\0"
    assert tunnel.shim_request(line) == ("198.18.5.11", "rsync --server .")
    assert tunnel.shim_request(b"\0".join([b"bash", shim, b"7", b"9", b"h", b"true"])) == \
        ("h", "true")
    for bad in ([b"bash", shim, b"7", b"9"], [b"bash", shim, b"7", b"9", b"h"],
                [b"bash", shim, b"7", b"9", b"-l", b"u", b"h"], [b"bash", b"other.sh", b"h", b"x"]):
        with pytest.raises(ValueError):
            tunnel.shim_request(b"\0".join(bad))
    reason = explain(12, "rsync: connection unexpectedly closed\n"
                         "dsas-push: cannot start rsync on 198.18.5.11: timeout\n")
    assert "cannot start rsync" in reason and reason.startswith("connection lost")


def _start_shim(session, *args):
    """The shim as rsync starts it: its stdin/stdout are this test's pipes."""
    require_tool("bash")
    proc = subprocess.Popen(["bash", str(tunnel.SHIM), *map(str, session.pass_fds), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=session.pass_fds)
    ready, _, _ = select.select([session._req_r], [], [], 10)
    assert ready, "the shim never said its PID"
    return proc


def test_shim_hands_over_its_streams_and_exits_with_the_status():
    assert tunnel.unavailable() is None  # this machine's kernel allows pidfd_getfd
    session = tunnel.Session("198.18.5.11", transport=None)  # type: ignore[arg-type]
    try:
        proc = _start_shim(session, "-l", "root", "198.18.5.11", "rsync", "--server", ".")
        pid, streams = session._read_request()
        assert pid == proc.pid
        host, command, fds = session._take(pid, streams)
        assert (host, command) == ("198.18.5.11", "rsync --server .")
        session._reply("ok")
        os.write(fds[1], b"from the node")  # what the channel would bring back
        os.close(fds[1])
        # rsync sees the end of the stream: the shim closed its own copy of stdout
        assert proc.stdout.read() == b"from the node"
        proc.stdin.write(b"to the node")
        proc.stdin.close()
        assert os.read(fds[0], 100) == b"to the node"
        assert proc.poll() is None  # it waits for the remote exit status
        session._reply("23")
        assert proc.wait(timeout=10) == 23
        for fd in (fds[0], fds[2]):
            os.close(fd)
        proc.stdout.close()
        proc.stderr.close()
    finally:
        session.close()


def test_shim_exits_255_when_dsas_push_goes_away_or_refuses():
    session = tunnel.Session("198.18.5.11", transport=None)  # type: ignore[arg-type]
    proc = _start_shim(session, "198.18.5.11", "true")
    os.close(session._rep_w)  # dsas-push died: the shim's reply pipe ends
    session._rep_w = -1
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 255 and b"went away" in err
    session.close()

    session = tunnel.Session("198.18.5.11", transport=None)  # type: ignore[arg-type]
    try:
        proc = _start_shim(session, "198.18.5.11", "true")
        session._reply("dsas-push cannot take rsync's streams: denied")
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 255 and b"denied" in err
    finally:
        session.close()


def test_session_refuses_a_pid_that_is_not_its_shim():
    session = tunnel.Session("198.18.5.11", transport=None)  # type: ignore[arg-type]
    other = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(ValueError, match="not this session's shim"):
            session._take(other.pid, [0, 1, 2])
    finally:
        other.kill()
        other.wait()
        session.close()


def test_rsync_goes_over_openssh_where_the_tunnel_is_refused(tmp_path):
    pusher = Pusher(SshConfig(tmp_path))
    pusher._no_tunnel = "pidfd_getfd: Operation not permitted"
    target = Target("w1", "198.18.5.11", "web")
    opts = PushOptions(src=str(tmp_path), transport="paramiko")
    with pusher._rsh(target, None, opts, tmp_path, True) as (rsh, dest, session):  # type: ignore[arg-type]
        assert session is None and rsh.split()[0].endswith("ssh") and dest.endswith("198.18.5.11:")


def make_key(tmp_path: Path, name: str) -> tuple[str, str]:
    require_tool("ssh-keygen")
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "root@node",
                    "-f", str(key)], check=True)
    t, b, _ = Path(f"{key}.pub").read_text().split(" ", 2)
    return t, b


def test_ssh_key_in_events(tmp_path):
    inv = loads(INV, "unit.yaml")
    t, b = make_key(tmp_path, "k")
    ev = parse_event(json.dumps({"host": "w1", "stage": "ready",
                                 "ssh_key": f"{t} {b} root@node"}).encode(), "198.18.5.11", inv)
    assert ev.ssh_key == (t, b)
    assert parse_event(b'{"host": "w1", "stage": "ready"}', "198.18.5.11", inv).ssh_key is None
    rsa_blob = base64.b64encode(struct.pack("!I", 7) + b"ssh-rsa" + b"\0" * 8).decode()
    for bad in ("ssh-ed25519", f"ssh-dss {b}", "ssh-ed25519 not-base64!", f"ssh-rsa {b}",
                f"ssh-ed25519 {rsa_blob}", "ssh-ed25519 " + "A" * 3000):
        with pytest.raises(BadEvent) as e:
            parse_event(json.dumps({"host": "w1", "stage": "ready", "ssh_key": bad}).encode(),
                        "198.18.5.11", inv)
        assert e.value.status in (400, 413)
    assert parse_ssh_key(f"{t} {b}") == (t, b)


def test_plan_trust():
    p = plan_trust([("ssh-ed25519", "N")], [])
    assert p.new == [("ssh-ed25519", "N")] and p.keys == [("ssh-ed25519", "N")]
    p = plan_trust([("ssh-ed25519", "N")], [("ssh-rsa", "R"), ("ssh-ed25519", "N")])
    assert p.same and not p.new and not p.changed and len(p.keys) == 2
    p = plan_trust([("ssh-ed25519", "X")], [("ssh-rsa", "R"), ("ssh-ed25519", "N")])
    assert p.changed == [("ssh-ed25519", "X", "N")]
    # a changed key: the node was reinstalled, its old RSA key goes with the old ed25519
    assert p.keys == [("ssh-ed25519", "X")] and p.dropped == [("ssh-rsa", "R")]
    p = plan_trust([("ssh-ed25519", "N"), ("ssh-ed25519", "N")], [("ssh-rsa", "R")])
    assert p.keys == [("ssh-rsa", "R"), ("ssh-ed25519", "N")] and not p.dropped


def report(state: Path, host: str, key: tuple[str, str], address: str | None = None,
           verified: bool = True) -> None:
    """A key row as the HTTP service stores it (by default: from the host's own
    address, with a valid boot token)."""
    own = {"w1": "198.18.5.11", "w2": "198.18.5.12"}
    store = StateStore(state)
    ensure_events_schema(store)
    store.execute("INSERT OR REPLACE INTO http_host_keys(host, key_type, key, ts, address, "
                  "boot_id, verified) VALUES (?, ?, ?, ?, ?, ?, ?)",
                  (host, *key, time.time(), address or own[host], "1-abcdefabcdef",
                   int(verified)))
    store.close()


def test_trust_from_boot_report(tmp_path):
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text(INV)
    state = tmp_path / "st"
    state.mkdir()
    base = ["-i", str(inv_path), "--state-dir", str(state)]
    cfg = SshConfig(state)
    k1, k2 = make_key(tmp_path, "k1"), make_key(tmp_path, "k2")
    runner = CliRunner()
    res = runner.invoke(trust, ["w1", "--from-boot-report", "--yes", *base])
    assert res.exit_code == 1 and "no SSH host key in its boot reports" in res.output
    report(state, "w1", k1)
    assert [r.host for r in reported_keys(StateStore(state))] == ["w1"]
    res = runner.invoke(trust, ["w1", "--from-boot-report", *base], input="n\n")
    assert res.exit_code == 1 and not cfg.known_hosts.exists()  # the operator said no
    res = runner.invoke(trust, ["w1", "--from-boot-report", "--yes", *base])
    assert res.exit_code == 0, res.output
    assert fingerprint(k1[1]) in res.output and " new " in res.output
    assert trusted_keys(cfg, "198.18.5.11") == [k1]
    # a reinstalled (or impostor) node reports another key: refused unless --replace
    report(state, "w1", k2)
    report(state, "w2", k2)
    res = runner.invoke(trust, ["--all-reported", "--yes", *base])
    assert res.exit_code == 1 and "CHANGED" in res.output and "differs" in res.output
    assert trusted_keys(cfg, "198.18.5.11") == [k1]
    assert trusted_keys(cfg, "198.18.5.12") == [k2]  # w2 was new: trusted
    # a scan had also trusted the old install's RSA key: --replace drops it too
    old_rsa = ("ssh-rsa", base64.b64encode(b"\0\0\0\7ssh-rsa" + bytes(40)).decode())
    add_known_host(cfg, "198.18.5.11", [old_rsa, k1])
    res = runner.invoke(trust, ["w1", "--from-boot-report", "--replace", "--yes", *base])
    assert res.exit_code == 0, res.output
    assert "its ssh-rsa key" in res.output and "no longer trusted" in res.output
    assert trusted_keys(cfg, "198.18.5.11") == [k2]
    for args in (["--all-reported", "w1"], ["--from-boot-report"], []):
        assert runner.invoke(trust, [*args, *base]).exit_code == 2


def test_trust_refuses_keys_not_reported_by_the_host_itself(tmp_path):
    """A key row from another address (a forged report, or one stored before the HTTP
    service checked sources) or without a valid boot token is refused, naming the host;
    the other hosts' keys are still trusted."""
    inv_path = tmp_path / "inv.yaml"
    inv_path.write_text(INV)
    state = tmp_path / "st"
    state.mkdir()
    base = ["-i", str(inv_path), "--state-dir", str(state)]
    cfg = SshConfig(state)
    k1, k2 = make_key(tmp_path, "k1"), make_key(tmp_path, "k2")
    report(state, "w1", k1, address="198.18.5.99")  # the discovery pool, say
    report(state, "w2", k2)
    res = CliRunner().invoke(trust, ["--all-reported", "--yes", *base])
    assert res.exit_code == 1
    assert "w1 ssh-ed25519" in res.output and "REFUSED: reported from 198.18.5.99" in res.output
    assert "not from the host itself: w1" in res.output
    assert trusted_keys(cfg, "198.18.5.11") == [] and trusted_keys(cfg, "198.18.5.12") == [k2]
    report(state, "w1", k1, verified=False)  # its own address, but no valid token
    res = CliRunner().invoke(trust, ["w1", "--from-boot-report", "--yes", *base])
    assert res.exit_code == 1 and "without a valid boot token" in res.output
    assert trusted_keys(cfg, "198.18.5.11") == []


def test_old_host_key_table_gains_the_new_columns(tmp_path):
    """A state.db from before the boot token: its rows read as unverified (refused)."""
    store = StateStore(tmp_path)
    store.ensure_schema("http", EVENTS_DDL.replace("    boot_id TEXT,\n", "")
                        .replace("    verified INTEGER NOT NULL DEFAULT 0,\n", ""))
    store.execute("INSERT INTO http_host_keys(host, key_type, key, ts, address) "
                  "VALUES ('w1', 'ssh-ed25519', 'AAAA', 1, '198.18.5.11')")
    store.close()
    rows = reported_keys(StateStore(tmp_path))
    assert len(rows) == 1 and rows[0].verified is False and rows[0].boot_id is None


def test_trust_keeps_other_hosts(tmp_path):
    cfg = SshConfig(tmp_path)
    add_known_host(cfg, "198.18.5.12", [("ssh-ed25519", "B")])
    add_known_host(cfg, "198.18.5.11", [("ssh-ed25519", "A"), ("ssh-rsa", "R")])
    assert trusted_keys(cfg, "198.18.5.11") == [("ssh-ed25519", "A"), ("ssh-rsa", "R")]
    assert trusted_keys(cfg, "198.18.5.13") == []


R0, R3 = "20240430-120000-000-0000", "20240503-120000-000-cccc"


def run_prepare(root: Path, live: str | None, have: list[str], bases: list[str]) -> dict:
    """The prepare script, run by sh on a local layout (what a node's shell does)."""
    rels = root / "site.releases"
    for r in have:
        (rels / r).mkdir(parents=True)
        (rels / r / "which").write_text(r)
    if live:
        (root / "site").symlink_to(f"site.releases/{live}")
    out = subprocess.run(["sh", "-c", prepare_script(NodeLayout(str(root / "site")), R3, bases)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    kv = dict(ln.split(" ", 1) for ln in out.stdout.splitlines() if " " in ln)
    inc = rels / f".incoming-{R3}" / "which"
    kv["content"] = inc.read_text() if inc.exists() else None
    return kv


def test_prepare_links_from_the_nodes_live_release_if_offered(tmp_path):
    # A canary ahead of the rest: its live R2 is offered, though not first.
    got = run_prepare(tmp_path / "a", R2, [R1, R2], [R1, R2])
    assert got["LINKED"] == R2 and got["content"] == R2
    # The live release is not offered: the first offered one it has.
    got = run_prepare(tmp_path / "b", R0, [R0, R1, R2], [R2, R1])
    assert got["LINKED"] == R2 and got["content"] == R2
    got = run_prepare(tmp_path / "c", R0, [R0, R1], [R2, R1])
    assert got["LINKED"] == R1
    got = run_prepare(tmp_path / "d", R0, [R0], [R2, R1])  # none of them: no link
    assert "LINKED" not in got and got["content"] is None
    got = run_prepare(tmp_path / "e", None, [], [R2])  # a first push
    assert "LINKED" not in got and got["OK"] == "1"


def make_tree(root: Path, entries: dict[str, str | None]) -> None:
    """name -> content (a file), None (a directory), '->target' (a symlink)."""
    for name, content in entries.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            p.mkdir(exist_ok=True)
        elif content.startswith("->"):
            p.symlink_to(content[2:])
        else:
            p.write_text(content)


def test_delta_names_turn_a_linked_copy_into_the_new_tree(tmp_path):
    """rsync --files-from with delta_names, on a cp -al copy of the old tree, gives the
    new tree exactly (rsync's own listing compared), and never changes the old one."""
    require_tool("rsync")
    old, new, inc = tmp_path / "old", tmp_path / "new", tmp_path / "inc"
    make_tree(old, {"keep/a": "a", "keep/b": "b", "keep/l": "->a", "gone/g": "g",
                    "gone/deep/d": "d", "d2f/y": "y", "f2d": "f", "t2x": "x", "same/s": "s"})
    old_files = {p: p.read_text() for p in old.rglob("*") if p.is_file() and not p.is_symlink()}
    for p in [*old.rglob("*"), old]:  # older by seconds: mtimes tell the changes apart
        t = p.lstat().st_mtime - 5
        os.utime(p, (t, t), follow_symlinks=False)
    subprocess.run(["cp", "-a", f"{old}/.", str(new)], check=True)
    subprocess.run(["rm", "-rf", str(new / "gone"), str(new / "d2f"), str(new / "f2d"),
                    str(new / "t2x")], check=True)
    (new / "keep/l").unlink()
    make_tree(new, {"d2f": "now a file", "f2d/in": "now a dir", "keep/b": "changed",
                    "keep/l": "->b", "fresh/sub/n": "n", "same/s": "S"})
    # same/s: rewritten within the same second, same size: only the nanoseconds differ
    st = (old / "same/s").stat()
    os.utime(new / "same/s", ns=(st.st_atime_ns, st.st_mtime_ns - st.st_mtime_ns % 10**9 +
                                 (st.st_mtime_ns + 1) % 10**9))
    os.utime(new / "same", ns=(st.st_atime_ns, (old / "same").stat().st_mtime_ns))
    names = delta_names(attr_listing(str(old)), attr_listing(str(new)))
    assert "same" not in names and "same/s" in names and "keep/a" not in names
    assert "gone" in names and "gone/g" not in names and "d2f/y" not in names
    subprocess.run(["cp", "-al", f"{old}/.", str(inc)], check=True)
    lst = tmp_path / "list"
    lst.write_bytes(b"".join(n.encode() + b"\0" for n in names))
    argv = rsync_argv(str(new), str(inc), "ssh", files_from=str(lst))
    argv.remove("--info=progress2")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr

    def listing(root: Path) -> list[str]:
        out = subprocess.run(["rsync", "-a", "--list-only", "--no-h", f"{root}/"],
                             capture_output=True, text=True, check=True,
                             env={"TZ": "UTC", "LC_ALL": "C", "PATH": "/usr/bin:/bin"})
        return sorted(" ".join(ln.split()[:1] + ln.split()[2:]) for ln in out.stdout.splitlines())

    assert listing(inc) == listing(new)
    assert (inc / "same/s").read_text() == "S"  # rsync's quick check alone would keep "s"
    assert {p: p.read_text() for p in old_files} == old_files  # the old tree is untouched


def test_paramiko_connection_does_not_wait_for_delayed_acks():
    """The remote steps are small request/answer exchanges: with Nagle on, each
    channel open waited for the node's delayed ACK (~40 ms). No traffic here: the
    transport is built on an unconnected socket and closed."""
    import socket

    from provision.sshtrust.sshconf import FastTransport

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        transport = FastTransport(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        transport.close()
    finally:
        sock.close()


def test_listing_keeps_names_and_link_targets_with_bars(tmp_path):
    require_tool("rsync")
    (tmp_path / "d|1").mkdir()
    (tmp_path / "d|1" / "a|b").write_text("x")
    (tmp_path / "l|x").symlink_to("t|y")
    got = attr_listing(str(tmp_path))
    assert set(got) == {"d|1/", "d|1/a|b", "l|x"}
    assert got["l|x"][0] == "L" and got["l|x"][6] == " -> t|y"
    assert got["d|1/a|b"][0] == "f" and got["d|1/a|b"][6] == ""
    store = ListingStore(tmp_path.parent / f"{tmp_path.name}-store")
    store.save(R1, got)
    assert store.load(R1) == got


def test_a_same_second_rewrite_is_not_taken_from_the_base(tmp_path):
    """rsync's quick check compares mtimes to the second by default: a file rewritten
    within the second of the base release's copy, same size, would be hard-linked
    from the base (old content) by --link-dest. dsas compares nanoseconds."""
    require_tool("rsync")
    src, base, inc = tmp_path / "src", tmp_path / "rel", tmp_path / "inc"
    src.mkdir()
    base.mkdir()
    (base / "index.html").write_text("v1")
    (src / "index.html").write_text("v2")
    st = (base / "index.html").stat()
    same_second = st.st_mtime_ns - st.st_mtime_ns % 10**9 + (st.st_mtime_ns + 1) % 10**9
    os.utime(src / "index.html", ns=(st.st_atime_ns, same_second))
    argv = rsync_argv(str(src), str(inc), "ssh", [str(base)])
    argv.remove("--info=progress2")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (inc / "index.html").read_text() == "v2"
    assert (base / "index.html").read_text() == "v1"
