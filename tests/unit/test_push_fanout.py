"""The fan-out's tree and its node-side scripts (run by a real sh, no namespaces)."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from provision.push import fanout
from provision.push.release import NodeLayout
from provision.push.targets import Target
from provision.sshtrust.sshconf import SshConfig

TAG = "dsas-fanout-20260101-000000-000-abcd"
KEY = fanout.PushKey(b"-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n",
                     f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample {TAG}", TAG)


def sh(script: str, home: Path, data: bytes = b"", path: str | None = None
       ) -> subprocess.CompletedProcess[bytes]:
    env = {"HOME": str(home), "PATH": path or os.environ["PATH"]}
    return subprocess.run(["sh", "-c", script], input=data, capture_output=True, env=env,
                          timeout=30, check=False)


def test_tree_width_two_and_four():
    assert [fanout.parent(i, 2) for i in range(8)] == [None, None, 0, 0, 1, 1, 2, 2]
    assert [fanout.parent(i, 4) for i in range(10)] == [None] * 4 + [0] * 4 + [1, 1]
    with pytest.raises(ValueError):
        fanout.parent(3, 0)


def test_tree_children_learn_whether_the_parent_holds_the_release():
    targets = [Target(f"n{i}", f"198.18.100.{10 + i}", "web") for i in range(1, 6)]
    tree = fanout.Tree(targets, 2)
    assert tree.parent_of(targets[0]) is None
    assert tree.parent_of(targets[2]) == targets[0]
    assert tree.parent_of(targets[4]) == targets[1]
    tree.finished(targets[0], True)
    tree.finished(targets[1], False)
    assert tree.wait(targets[0], timeout=1) is True
    assert tree.wait(targets[1], timeout=1) is False
    assert tree.wait(targets[2], timeout=0.01) is False  # not finished: bounded, no


def test_authorize_then_deauthorize_leaves_the_other_keys_as_they_were(tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    keys = ssh / "authorized_keys"
    other = "ssh-ed25519 AAAAmaster dsas@master\nssh-rsa AAAAops ops"  # no last newline
    keys.write_text(other)
    r = sh(fanout.authorize_script(KEY, "198.18.100.11"), tmp_path)
    assert r.returncode == 0 and b"AUTHORIZED 1" in r.stdout, r
    lines = keys.read_text().splitlines()
    assert lines[:2] == other.splitlines()
    assert lines[2] == f'from="198.18.100.11",restrict {KEY.public}'
    r = sh(fanout.deauthorize_script(KEY), tmp_path)
    assert r.returncode == 0, r
    assert keys.read_text() == other + "\n"
    assert not list(ssh.glob("*.dsas-tmp"))


def test_authorize_drops_a_stale_push_key_and_makes_the_file(tmp_path):
    r = sh(fanout.authorize_script(KEY, "198.18.100.12"), tmp_path)
    assert r.returncode == 0, r
    keys = tmp_path / ".ssh" / "authorized_keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    newer = fanout.PushKey(b"", KEY.public.replace("abcd", "ef01"), KEY.tag.replace("abcd", "ef01"))
    r = sh(fanout.authorize_script(newer, "198.18.100.13"), tmp_path)
    assert r.returncode == 0, r
    assert keys.read_text().splitlines() == [f'from="198.18.100.13",restrict {newer.public}']
    # the only line goes: an empty file, not an error
    r = sh(fanout.deauthorize_script(newer), tmp_path)
    assert r.returncode == 0 and keys.read_text() == "", r


def test_relay_script_key_from_stdin_host_key_pinned_directory_removed(tmp_path):
    """rsync stands in as a script printing its argv and what its ssh would read."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv"
    fake = bindir / "rsync"
    seen = tmp_path / "seen"
    fake.write_text("#!/bin/sh\n"
                    f"for a in \"$@\"; do printf '%s\\n' \"$a\"; done > {shlex.quote(str(log))}\n"
                    "d=$(printf '%s\\n' \"$@\" | sed -n 's/.*-i \\([^ ]*\\)\\/key .*/\\1/p')\n"
                    f"cp -a \"$d\" {shlex.quote(str(seen))}\n"
                    "echo 'Total bytes sent: 1,234'\n")
    fake.chmod(0o755)
    lay = NodeLayout("/srv/my site")
    argv = fanout.relay_argv(SshConfig(tmp_path, user="root", port=2222), lay,
                             "20260101-000000-000-abcd", "198.18.100.14", ["../old"],
                             ["*.tmp"], delete=True, checksum=True)
    r = sh(fanout.relay_script(argv, "ssh-ed25519 AAAAhost"), tmp_path, KEY.private,
           path=f"{bindir}:{os.environ['PATH']}")
    assert r.returncode == 0, r
    assert b"RELAYED 1234" in r.stdout
    got = log.read_text().splitlines()
    rsh = got[got.index("-e") + 1]
    assert "StrictHostKeyChecking=yes" in rsh and "StrictHostKeyChecking=no" not in rsh
    assert f"HostKeyAlias={fanout.PEER_ALIAS}" in rsh and "-p 2222 -l root" in rsh
    assert "--delete" in got and "--delete-excluded" in got and "--link-dest=../old" in got
    assert "--checksum" in got and "--exclude=*.tmp" in got
    assert got[-2:] == ["/srv/my site.releases/20260101-000000-000-abcd/",
                        "198.18.100.14:/srv/my site.releases/.incoming-20260101-000000-000-abcd/"]
    assert (seen / "key").read_bytes() == KEY.private
    assert (seen / "known_hosts").read_text() == f"{fanout.PEER_ALIAS} ssh-ed25519 AAAAhost\n"
    assert stat.S_IMODE(seen.stat().st_mode) == 0o700
    assert stat.S_IMODE((seen / "key").stat().st_mode) == 0o600
    key_dir = rsh.split(" -i ")[1].split("/key")[0]
    assert not os.path.exists(key_dir)  # removed on exit


def test_relay_script_passes_rsync_failure_on(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "rsync").write_text("#!/bin/sh\necho 'rsync: connection unexpectedly closed' >&2\n"
                                  "exit 12\n")
    (bindir / "rsync").chmod(0o755)
    argv = fanout.relay_argv(SshConfig(tmp_path), NodeLayout("/srv/site"),
                             "20260101-000000-000-abcd", "2001:db8::5", [], [], delete=False)
    assert argv[-1].startswith("[2001:db8::5]:")
    r = sh(fanout.relay_script(argv, "ssh-ed25519 AAAAhost"), tmp_path, KEY.private,
           path=f"{bindir}:{os.environ['PATH']}")
    assert r.returncode == 12
    assert b"RELAYED" not in r.stdout and b"unexpectedly closed" in r.stderr


def test_fanout_is_chosen_by_its_flag_only_with_delete_and_never_means_uftp(monkeypatch):
    from provision.push import multicast
    from provision.push.options import PushOptions
    from provision.push.push import Pusher
    from provision.push.uftp_round import use_uftp

    monkeypatch.setattr(multicast, "available", lambda: True)
    opts = PushOptions("src", delete=True, transfer="fanout", fanout_width=4)
    assert not use_uftp(opts, 100, True)
    assert Pusher._use_fanout(opts, 5)
    assert not Pusher._use_fanout(opts, 4)  # the master feeds them all: plain rsync
    opts.delete = False
    assert not Pusher._use_fanout(opts, 100)
    opts.delete, opts.dry_run = True, True
    assert not Pusher._use_fanout(opts, 100)
    auto = PushOptions("src", delete=True, transfer="auto")
    assert not Pusher._use_fanout(auto, 100) and use_uftp(auto, 100, True)
