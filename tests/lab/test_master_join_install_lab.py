"""`dsas master join` installs dsas on a host that lacks it (issue 18): the master's
installation (here a small real venv in `make install`'s layout, its `dsas` printing a
version) is copied over a real SSH connection (host key verified) to a node whose sshd
runs in a private mount namespace (lab.sshfarm: its own tmpfs at /run/dsas-lab), so
the install lands where only that node sees it.

Shown: a node with another python3 (a PATH shim bind-mounted in its mount namespace)
is refused and left untouched; a node without dsas gets it and answers the version; a
copy whose bytes changed on the way (checksum mismatch) or that was cut half way
leaves the previous install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab.sshfarm import MOUNT, SshNode, build_farm
from lab.testing import Lab, require_tool
from provision import __version__
from tests.support.master_lab import DSAS, Pair, add_master, start_sshd

M03 = "198.18.0.4"

RUN = """
import sys, tempfile
from ipaddress import IPv4Address
from pathlib import Path
from provision.ha import install as hi
from provision.ha.join import JoinError, Remote
from provision.sshtrust.sshconf import SshConfig
state, addr, jt, version, corrupt = sys.argv[1:]
jt = Path(jt)
inst = hi.Installation(jt / "opt" / "dsas", bindir=jt / "bin", mandir=jt / "man",
                       unitdir=jt / "systemd")
remote = Remote(SshConfig(Path(state), "root", 22, None), "n01", IPv4Address(addr))
try:
    if corrupt == "no":
        hi.install(remote, inst, version, print)
    else:  # the tar's bytes change on the way: one bit of a file's content
        hi.check_python(remote, inst)
        with tempfile.TemporaryFile() as tmp:
            sha = hi.pack(inst, tmp)
            tmp.seek(0)
            data = bytearray(tmp.read())
            if corrupt == "cut":  # the copy interrupted half way
                data = data[:len(data) // 2]
            else:
                data[data.index(corrupt.encode())] ^= 1
            tmp.seek(0)
            tmp.truncate()
            tmp.write(data)
            tmp.seek(0)
            hi.send(remote, inst, tmp, sha)
        hi.finish(remote, inst, version)
except JoinError as e:
    print("ERROR", e.one_line())
    sys.exit(1)
print("OK")
"""


def _prefix(jt: Path, version: str) -> None:
    """A small installation in `make install`'s layout (a real venv)."""
    prefix = jt / "opt" / "dsas"
    if prefix.exists():
        shutil.rmtree(prefix)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True,
                   timeout=60, capture_output=True)
    dsas = prefix / "bin" / "dsas"
    dsas.write_text(f"#!/bin/sh\necho 'dsas, version {version}'\n")
    dsas.chmod(0o755)
    (prefix / "share" / "dsas" / "boot-scripts").mkdir(parents=True)
    (prefix / "share" / "dsas" / "boot-scripts" / "marker").write_text(f"payload {version}\n")
    (jt / "systemd").mkdir(exist_ok=True)
    (jt / "systemd" / "dsas-serve.service").write_text(f"[Service]\n# {version}\n")
    (jt / "man" / "man1").mkdir(parents=True, exist_ok=True)
    (jt / "man" / "man1" / "dsas.1").write_text(f".TH DSAS 1 {version}\n")


def _on(node: SshNode, script: str) -> str:
    return node.run(["sh", "-c", script], check=False).stdout.strip()


def test_join_installs_dsas_on_a_host_without_it(lab: Lab, tmp_path: Path) -> None:
    farm = build_farm(lab, tmp_path / "farm", 1)
    node = farm.nodes[0]
    jt = Path(MOUNT) / f"joininstall-{os.getpid()}"  # the same path on both sides
    state = tmp_path / "state"
    (state / "ssh").mkdir(parents=True)
    key = state / "ssh" / "id_ed25519"
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f",
                    str(key)], check=True, timeout=30, capture_output=True)
    farm.authorized_keys.write_text((state / "ssh" / "id_ed25519.pub").read_text())
    (state / "ssh" / "known_hosts").write_text(f"{node.address} {node.host_key_pub()}")

    def join_install(version: str, corrupt: str = "no") -> subprocess.CompletedProcess[str]:
        return subprocess.run(farm.master.cmd(
            [sys.executable, "-c", RUN, str(state), node.address, str(jt),
             f"dsas, version {version}", corrupt]), capture_output=True, text=True,
            timeout=120, cwd=Path(__file__).parents[2])

    remote_dsas = f"{jt}/opt/dsas/bin/dsas"
    try:
        _prefix(jt, "1.0")
        assert not Path(node.root, jt.name).exists()  # the node sees its own tmpfs only

        # Another python3 on the node: refused, nothing written there.
        shim = node.root / "shim"
        shim.mkdir()
        (shim / "python3").write_text("#!/bin/sh\necho 3.1\n")
        (shim / "python3").chmod(0o755)
        node.run(["mount", "--bind", f"{MOUNT}/shim", "/usr/local/bin"])
        try:
            res = join_install("1.0")
        finally:
            node.run(["umount", "/usr/local/bin"])
        assert res.returncode == 1, (res.stdout, res.stderr)
        assert "n01 has Python 3.1, this dsas's venv needs 3." in res.stdout, res.stdout
        assert _on(node, f"ls -A {MOUNT}") == "shim"

        # No dsas on the node: it gets this one, and answers the same version.
        res = join_install("1.0")
        assert res.returncode == 0, (res.stdout, res.stderr)
        assert "copying" in res.stdout
        assert _on(node, f"{remote_dsas} --version") == "dsas, version 1.0"
        assert _on(node, f"{jt}/bin/dsas --version") == "dsas, version 1.0"
        assert _on(node, f"cat {jt}/systemd/dsas-serve.service") == "[Service]\n# 1.0"
        assert _on(node, f"cat {jt}/man/man1/dsas.1") == ".TH DSAS 1 1.0"
        assert _on(node, f"{jt}/opt/dsas/bin/python -c 'print(6*7)'") == "42"

        # Version 2.0, its bytes changed on the way: refused, 1.0 stays, no staging left.
        _prefix(jt, "2.0")
        res = join_install("2.0", corrupt="payload 2.0")
        assert res.returncode == 1, (res.stdout, res.stderr)
        assert "checksum mismatch" in res.stdout and "marker" in res.stdout, res.stdout
        assert _on(node, f"{remote_dsas} --version") == "dsas, version 1.0"
        assert _on(node, f"ls -A {jt}/opt") == "dsas"

        # The copy of 2.0 cut half way: refused, 1.0 stays, no staging left.
        res = join_install("2.0", corrupt="cut")
        assert res.returncode == 1, (res.stdout, res.stderr)
        assert "ERROR copying dsas on n01 failed" in res.stdout, res.stdout
        assert _on(node, f"{remote_dsas} --version") == "dsas, version 1.0"
        assert _on(node, f"ls -A {jt}/opt") == "dsas"

        # Uncorrupted, 2.0 replaces 1.0 whole.
        res = join_install("2.0")
        assert res.returncode == 0, (res.stdout, res.stderr)
        assert _on(node, f"{remote_dsas} --version") == "dsas, version 2.0"
        assert _on(node, f"cat {jt}/opt/dsas/share/dsas/boot-scripts/marker") == "payload 2.0"
        assert _on(node, f"ls -A {jt}/opt") == "dsas"
    finally:
        shutil.rmtree(jt, ignore_errors=True)


@pytest.mark.parametrize("pair_lab", ["join"], indirect=True)
def test_the_join_command_installs_dsas_then_goes_on(pair_lab: Pair) -> None:
    """`dsas master join m03 --install-from PREFIX` on m01: m03 (its sshd with its own
    /usr/local, systemd unit directory and /run/dsas-lab) has no dsas; it gets PREFIX,
    the links and the unit, then the pair key and the inventory as before."""
    p = pair_lab
    m1 = p.masters["m01"]
    m3 = add_master(p, "m03", M03)
    ssh = m1.state / "ssh"
    ssh.mkdir(mode=0o700)
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f",
                    str(ssh / "id_ed25519")], check=True, timeout=30, capture_output=True)
    unitdir = "/etc/systemd/system"
    private = [MOUNT, "/usr/local", unitdir]
    os.makedirs(MOUNT, exist_ok=True)
    host_key = start_sshd(m3, M03, ssh / "id_ed25519.pub", private)
    (ssh / "known_hosts").write_text(f"{M03} ssh-ed25519 {host_key}\n")
    sshd = next(pid for pid in _pids() if f"{m3.dir}/sshd/sshd_config" in _cmdline(pid))
    jt = Path(MOUNT) / f"joincli-{os.getpid()}"
    try:
        _prefix(jt, __version__)
        res = subprocess.run(m1.ns.cmd(
            [DSAS, "master", "join", "m03", "--inventory", str(m1.inventory), "--state-dir",
             str(m1.state), "--master", "m01", "--remote-state-dir", str(m3.state),
             "--remote-inventory", str(m3.inventory), "--install-from", f"{jt}/opt/dsas",
             "--start", "true", "--wait", "0"]), capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (res.stdout, res.stderr)
        assert "m03 has no dsas: installing" in res.stdout, res.stdout

        def there(script: str) -> str:
            return subprocess.run(["nsenter", "-t", str(sshd), "-m", "--", "sh", "-c", script],
                                  capture_output=True, text=True, timeout=30).stdout.strip()

        assert there("/usr/local/bin/dsas --version") == f"dsas, version {__version__}"
        assert there("readlink /usr/local/bin/dsas") == f"{jt}/opt/dsas/bin/dsas"
        assert (m3.state / "master-pair.key").read_bytes() == \
            (m1.state / "master-pair.key").read_bytes()
        assert "secondary: m03" in m1.inventory.read_text()
    finally:
        shutil.rmtree(jt, ignore_errors=True)


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
