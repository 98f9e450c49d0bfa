"""dsas-clone --from a running peer: a namespace with its own sshd serving a root
tree (lab.sshfarm); rsync over ssh with dsas's known_hosts only.

The copy must hold the peer's file set (owners, modes, hard links, symlinks),
minus its identity (dsas.conf, host name, SSH host keys, machine-id) and what
only means something while it runs (/proc, /tmp, /run, logs); the new disk gets
its own host's identity. An untrusted or changed host key refuses the clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.clone import INVENTORY, TEST_BOOT_ROOT, build_images, mounted, partition
from lab.sshfarm import MOUNT, SshFarm, build_farm
from lab.testing import require_tool
from provision.sshtrust.sshconf import (
    SshConfig,
    add_known_host,
    ensure_client_key,
    parse_key_lines,
)

CLONE = [sys.executable, "-c",
         "import sys; from provision.cli.clone import main; sys.exit(main())"]
NET = "198.18.100"
PEER_ROOT = f"{MOUNT}/root"  # the tree the peer serves, inside its mount namespace
# Written per host by dsas-clone (or volatile): never compared with the peer.
HOST_WRITTEN = ("etc/dsas.conf", "etc/fstab", "etc/hostname", "etc/hosts", "etc/machine-id",
                "etc/ssh", "var/lib/dsas", "boot/extlinux", "lost+found", "boot/lost+found")


def _inventory() -> str:
    text = INVENTORY.replace("198.18.0.", f"{NET}.")
    return text + ('  n01: {role: tiny, macs: ["52:54:00:12:00:41", "52:54:00:12:01:41"],\n'
                   f"        addresses: {{inside: {NET}.11}}}}\n")


def _tree(root: Path) -> set[str]:
    """Every path under root, relative; HOST_WRITTEN paths and their contents left out."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if not any(rel == h or rel.startswith(h + "/") for h in HOST_WRITTEN):
                out.add(rel)
    return out


def _make_peer_tree(root: Path, store_dir: Path) -> set[str]:
    """The tiny image plus a kernel in /boot and some site files with owners, a hard
    link and a setuid bit; returns its file set. Then identity and volatile files."""
    root.mkdir()
    subprocess.run(["tar", "-xzpf", str(store_dir / "rootfs.tar.gz"), "--numeric-owner",
                    "-C", str(root)], check=True, timeout=60)
    (root / "boot").mkdir(exist_ok=True)
    shutil.copyfile(store_dir / "vmlinuz", root / "boot/vmlinuz-6.1.0-peer")
    shutil.copyfile(store_dir / "initrd.img", root / "boot/initrd.img-6.1.0-peer")
    site = root / "srv/www"
    site.mkdir(parents=True)
    (site / "index.html").write_text("<h1>the peer's site</h1>\n")
    os.chown(site / "index.html", 1234, 4321)
    os.link(site / "index.html", site / "index-hardlink.html")
    (site / "helper").write_bytes(b"#!/bin/sh\n")
    os.chmod(site / "helper", 0o4755)
    (site / "current").symlink_to("index.html")
    want = _tree(root)
    for rel, text in {"etc/dsas.conf": "SYSTEMNAME=n01\n", "etc/hostname": "n01\n",
                      "etc/machine-id": "0123456789abcdef0123456789abcdef\n",
                      "etc/ssh/ssh_host_ed25519_key": "the peer's private host key\n",
                      "etc/ssh/ssh_host_ed25519_key.pub": "ssh-ed25519 AAAA n01\n",
                      "var/log/messages": "peer log\n", "tmp/junk": "x\n",
                      "run/peer.pid": "42\n", "proc/1/status": "fake\n",
                      "var/lib/dsas/clone.json": "{}\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return want


@pytest.fixture
def peer(lab, tmp_path: Path):  # noqa: ANN001, ANN201
    for t in ("rsync", "sshd", "ssh", "ssh-keygen", "nsenter", "extlinux", "sfdisk"):
        require_tool(t)
    store = build_images("tiny")
    farm = build_farm(lab, tmp_path / "farm", 1)
    state = tmp_path / "state"
    key = ensure_client_key(SshConfig(state))
    farm.authorized_keys.write_text(Path(f"{key}.pub").read_text())
    node = farm.nodes[0]
    want = _make_peer_tree(node.root / "root", store.dir("tiny", store.resolve("tiny") or ""))
    inv = tmp_path / "cluster.yaml"
    inv.write_text(_inventory())
    return farm, inv, state, want


def _clone(farm: SshFarm, inv: Path, state: Path, target: Path) -> subprocess.CompletedProcess:
    return farm.master.run([*CLONE, "t1", "--from", "n01", "--from-path", PEER_ROOT,
                            "--target", str(target), "--size", "256M", "-i", str(inv),
                            "--state-dir", str(state), "--yes"], timeout=300, check=False,
                           env=dict(os.environ, DSAS_BOOT_ROOT=str(TEST_BOOT_ROOT)))


def test_clone_from_peer_copies_its_files_not_its_identity(peer, tmp_path: Path) -> None:
    farm, inv, state, want = peer
    node = farm.nodes[0]
    target = tmp_path / "t1.img"

    res = _clone(farm, inv, state, target)  # n01's host key is not trusted yet
    assert res.returncode == 1, res.stdout + res.stderr
    assert "not the one dsas trusts" in res.stderr and "dsas trust n01" in res.stderr
    assert "nothing written" in res.stderr and not target.exists()

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   check=True, timeout=30)
    cfg = SshConfig(state)
    add_known_host(cfg, node.address, parse_key_lines(Path(f"{other}.pub").read_text()))
    res = _clone(farm, inv, state, target)  # a different key for its address
    assert res.returncode == 1 and "dsas trust n01" in res.stderr, res.stderr
    assert not target.exists()

    add_known_host(cfg, node.address, parse_key_lines(node.host_key_pub()))
    res = _clone(farm, inv, state, target)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"peer n01 ({node.address}:{PEER_ROOT}/) over rsync+ssh" in res.stdout
    assert "done:" in res.stdout and "fsck: every file system clean" in res.stderr

    with partition(target, 2) as rdev, partition(target, 1) as bdev, \
            mounted(rdev, tmp_path / "r") as root, mounted(bdev, root / "boot"):
        assert _tree(root) == want
        assert (root / "etc/hostname").read_text() == "t1\n"
        assert "SYSTEMNAME=t1" in (root / "etc/dsas.conf").read_text()
        assert (root / "etc/machine-id").read_text() == ""
        assert b"peer" not in (root / "etc/ssh/ssh_host_ed25519_key").read_bytes()
        assert "ssh-ed25519 AAAA n01" not in (root / "etc/ssh/ssh_host_ed25519_key.pub"
                                               ).read_text()
        site = root / "srv/www"
        st = (site / "index.html").stat()
        assert (st.st_uid, st.st_gid, st.st_nlink) == (1234, 4321, 2)
        assert (site / "index-hardlink.html").stat().st_ino == st.st_ino
        assert (site / "helper").stat().st_mode & 0o7777 == 0o4755
        assert os.readlink(site / "current") == "index.html"
        conf = (root / "boot/extlinux/extlinux.conf").read_text()
        assert "/vmlinuz-6.1.0-peer" in conf and "/initrd.img-6.1.0-peer" in conf
