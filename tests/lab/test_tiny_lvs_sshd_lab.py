"""The tiny-lvs image's sshd (issue 16): the built root file system, run in a chroot
in a network namespace of its own (loopback only), as busybox init runs it.

Real parts: the image as ``lab.clone.build_images`` builds it from Debian's packages,
its own ``/usr/lib/dsas/sshd keys`` and ``sshd run`` (OpenSSH's sshd), and this
machine's ssh-keyscan and ssh. Root logs in by the master's key only; the host key is
made at boot, a new one each boot. The QEMU test (test_lvs_vm.py) runs `dsas trust`,
`dsas lb status` and `dsas lb reload` against directors booted from it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.clone import TEST_BOOT_ROOT, build_images
from lab.testing import require_root, require_tool

# $1: the root; $2: the client key; in a new network, mount and PID namespace
BOOT = r"""set -eu
root=$1 key=$2
ip link set lo up
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
chroot "$root" /usr/lib/dsas/sshd keys
chroot "$root" /usr/lib/dsas/sshd run > "$root/../sshd.log" 2>&1 &
i=0
scan=$root/../scan
until ssh-keyscan -T 2 -t ed25519 127.0.0.1 > "$scan" 2>/dev/null && [ -s "$scan" ]; do
    i=$((i + 1)); [ $i -lt 20 ] || { echo "sshd did not answer" >&2; exit 1; }
    sleep 0.5
done
opts="-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
# shellcheck disable=SC2086
ssh -i "$key" $opts root@127.0.0.1 \
    'echo "=ID $(id -u)"; for t in ipvsadm dsas-init keepalived; do command -v $t; done'
# shellcheck disable=SC2086
if ssh $opts -o PubkeyAuthentication=no root@127.0.0.1 true 2>/dev/null; then
    echo "=PASSWORDLESS LOGIN"
fi
# shellcheck disable=SC2086
if ssh -i "$root/../other" $opts root@127.0.0.1 true 2>/dev/null; then
    echo "=OTHER KEY LOGIN"
fi
"""


def _boot(tmp: Path, n: int, key: Path) -> tuple[str, str]:
    """Unpack the image, put ``key`` in root's authorized_keys as dsas-init does, and
    boot its sshd; (what the session printed, the host key the scan saw)."""
    img = TEST_BOOT_ROOT / "images" / "tiny-lvs" / "current" / "rootfs.tar.gz"
    d = tmp / f"boot{n}"
    root = d / "root"
    root.mkdir(parents=True)
    subprocess.run(["tar", "xzf", str(img), "-C", str(root)], check=True, timeout=120)
    assert not list((root / "etc" / "ssh").glob("ssh_host_*")), "the image ships a host key"
    (root / "root" / ".ssh").mkdir(mode=0o700)
    (root / "root" / ".ssh" / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    (root / "root" / ".ssh" / "authorized_keys").chmod(0o600)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "other")],
                   check=True, timeout=30)
    r = subprocess.run(["unshare", "-n", "-m", "-p", "-f", "--mount-proc", "sh", "-c", BOOT,
                        "boot", str(root), str(key)], capture_output=True, text=True,
                       timeout=120)
    log = (d / "sshd.log").read_text() if (d / "sshd.log").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + log
    scan = (d / "scan").read_text().split()
    pub = (root / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    assert scan[1:3] == pub[:2], (scan, pub)  # the key made at boot is the one served
    return r.stdout, pub[1]


def test_root_logs_in_by_key_only_with_a_host_key_made_each_boot(tmp_path: Path) -> None:
    require_root()
    for t in ("unshare", "ssh", "ssh-keyscan", "ssh-keygen", "chroot", "tar"):
        require_tool(t)
    build_images("tiny-lvs")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True,
                   timeout=30)
    out, host_key = _boot(tmp_path, 1, key)
    assert "=ID 0" in out, out
    for tool in ("/usr/sbin/ipvsadm", "/usr/sbin/dsas-init", "/usr/sbin/keepalived"):
        assert tool in out, out
    assert "=PASSWORDLESS LOGIN" not in out and "=OTHER KEY LOGIN" not in out, out
    _, again = _boot(tmp_path, 2, key)
    assert again != host_key  # every boot (every node) its own host key
