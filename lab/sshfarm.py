"""A farm of SSH nodes for push tests and benchmarks: one master, N nodes, one bridge.

Each node is a network namespace on a bridge in the master's namespace, with
its own real ``sshd`` (own host key, ``-D -e``, a test config, listening on the
node's address) and its own file system view: a holder process keeps a private
mount namespace in which a tmpfs is mounted at ``MOUNT`` (so every node has a
different ``/run/dsas-lab`` and a node's disk can be made small) and another,
empty one at ``/root`` (a node does not share the master's dotfiles; its own
``~/.ssh/authorized_keys`` there is read after the farm's shared one, for keys one
node alone accepts, as dsas-push's fan-out adds). sshd runs in
that mount namespace too and can be killed and restarted without losing the
node's files. Files of a node are visible from the host at
``/proc/<holder>/root/run/dsas-lab``.

Addresses: master 198.18.100.1/24, node i 198.18.100.(10+i).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .netns import Lab, Netns, tool

MOUNT = "/run/dsas-lab"
# The node's own, empty home for root: else every ssh command runs through this
# machine's /root/.bashrc (Debian's bash sources it when started by sshd), which on
# a developer's box can cost more than the command itself (pyenv init: ~100 processes).
HOME = "/root"
NET = "198.18.100"

SSHD_CONFIG = """\
ListenAddress {address}
Port 22
HostKey {dir}/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile {authorized} .ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 64
MaxSessions 64
LogLevel ERROR
"""


@dataclass
class SshNode:
    """One SSH node of the farm: an sshd in its own namespace."""

    name: str
    address: str
    ns: Netns
    dir: Path  # host-side: sshd_config, host key, log
    holder: subprocess.Popen[Any] | None = None
    sshd: subprocess.Popen[Any] | None = None

    @property
    def root(self) -> Path:
        """The node's MOUNT as seen from the host."""
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/root{MOUNT}")

    def run(self, argv: list[str], timeout: float = 30, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        """Run in the node's network and mount namespaces."""
        assert self.holder is not None
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", "-n", "--", *argv],
                              capture_output=True, text=True, timeout=timeout, check=check)

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        assert self.holder is not None
        return self.ns.popen(["nsenter", "-t", str(self.holder.pid), "-m", "--", *argv], **kw)

    def host_key_pub(self) -> str:
        return (self.dir / "ssh_host_ed25519_key.pub").read_text()

    def start_sshd(self) -> None:
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - the child owns it
        self.sshd = self.popen([tool("sshd"), "-D", "-e", "-f", str(self.dir / "sshd_config")],
                               stdout=log, stderr=log)
        log.close()
        wait_listen(self.ns, self.address, 22)

    def freeze(self, sig: int = signal.SIGSTOP) -> list[int]:
        """Stop (or, with SIGCONT, resume; or send ``sig``) sshd and every session it
        forked, by PID: a node that hangs without closing anything (the kernel still
        ACKs its TCP)."""
        if self.sshd is None:
            return []
        pids = [self.sshd.pid, *descendants(self.sshd.pid)]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def kill_sshd(self) -> None:
        """Kill sshd and every session it forked (by PID), as a crashing node would."""
        if self.sshd is None:
            return
        self.freeze(signal.SIGKILL)  # the same PIDs, another signal
        self.sshd.wait(timeout=10)
        self.sshd = None


@dataclass
class SshFarm:
    """A master namespace and SSH nodes, for push and clone tests."""

    lab: Lab
    workdir: Path
    master: Netns
    nodes: list[SshNode] = field(default_factory=list)

    @property
    def authorized_keys(self) -> Path:
        return self.workdir / "authorized_keys"

    def inventory_yaml(self, role: str = "web") -> str:
        """A small inventory: the master m1 and the nodes, all of role ``role``."""
        hosts = "\n".join(
            f"  {n.name}: {{role: {role}, macs: [\"52:54:00:64:{i // 256:02x}:{i % 256:02x}\"],"
            f" addresses: {{inside: {n.address}}}}}"
            for i, n in enumerate(self.nodes, start=10))
        return INVENTORY.format(net=NET, role=role, hosts=hosts)


INVENTORY = """\
cluster:
  name: pushlab
  domain: pushlab.example
  master_address: {net}.1
  masters: {{primary: m1}}
networks:
  inside: {{cidr: {net}.0/24, gateway: {net}.254, dns: [{net}.1]}}
hwtypes:
  single: {{nics: [eth0]}}
images:
  tiny: {{version: "1"}}
services:
  www: {{units: [httpd]}}
  master: {{}}
roles:
  master: {{services: [master], networks: [inside], hwtype: single, boot: disk}}
  {role}: {{services: [www], networks: [inside], hwtype: single, image: tiny, bond: {{mode: none}}}}
  db: {{services: [www], networks: [inside], hwtype: single, image: tiny, bond: {{mode: none}}}}
hosts:
  m1:
    role: master
    macs: ["52:54:00:64:00:01"]
    addresses: {{inside: {net}.1}}
    bond: {{mode: none}}
{hosts}
"""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first found first."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def wait_listen(ns: Netns, address: str, port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = ns.run(["ss", "-lnt"], check=False).stdout
        if f"{address}:{port} " in out:
            return
        time.sleep(0.05)
    raise TimeoutError(f"sshd on {address}:{port} not listening after {timeout}s")


def build_farm(lab: Lab, workdir: Path, count: int, tmpfs_mib: int | dict[str, int] = 256,
               prefix: str = "n") -> SshFarm:
    """Make the master namespace, ``count`` nodes with sshd, and an authorized key slot.

    ``tmpfs_mib`` is the size of every node's MOUNT, or per node name (default 256).
    """
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    os.makedirs(MOUNT, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    master = lab.netns("pmaster")
    lab.bridge(master, "br0", cidr=f"{NET}.1/24")
    farm = SshFarm(lab, workdir, master)
    farm.authorized_keys.touch()
    for i in range(1, count + 1):
        name = f"{prefix}{i:02d}"
        ns = lab.netns(f"p{name}")
        address = f"{NET}.{10 + i}"
        lab.plug(master, "br0", ns, cidr=f"{address}/24")
        ndir = workdir / name
        ndir.mkdir(exist_ok=True)
        key = ndir / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", name,
                            "-f", str(key)], check=True, capture_output=True, timeout=30)
        (ndir / "sshd_config").write_text(SSHD_CONFIG.format(
            address=address, dir=ndir, authorized=farm.authorized_keys))
        size = tmpfs_mib.get(name, 256) if isinstance(tmpfs_mib, dict) else tmpfs_mib
        node = SshNode(name, address, ns, ndir)
        node.holder = ns.popen(["sh", "-c", f"mount -t tmpfs -o size={size}m dsas-lab {MOUNT}"
                                            f" && mount -t tmpfs -o size=1m,mode=700 "
                                            f"dsas-home {HOME} && exec sleep 100000"])
        farm.nodes.append(node)
    for node in farm.nodes:
        wait_mounted(node)
        node.start_sshd()
    return farm


def wait_mounted(node: SshNode, timeout: float = 10) -> None:
    assert node.holder is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.holder.poll() is not None:
            raise RuntimeError(f"{node.name}: tmpfs mount failed")
        try:
            mounts = Path(f"/proc/{node.holder.pid}/mounts").read_text()
        except OSError:
            mounts = ""
        if f" {MOUNT} tmpfs" in mounts and "sleep" in Path(
                f"/proc/{node.holder.pid}/cmdline").read_text():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{node.name}: tmpfs not mounted after {timeout}s")


PUSH_AGENT = Path(__file__).resolve().parents[1] / "boot-scripts/lib/push-agent"


def start_boot_uftpd(node: SshNode, authorized_keys: Path, group: str, port: int,
                     agent: bool = True, timeout: float = 30) -> int:
    """Run uftpd on ``node`` as dsas-init does for ``push: {multicast: true, root: MOUNT}``
    (with ``agent``: ``agent: true``, push-agent as its hook, trusting
    ``authorized_keys``, signing with the node's host key): its pid and root files in
    the node's own /run/dsas (a tmpfs). Returns uftpd's pid; the caller kills it."""
    os.makedirs("/run/dsas", exist_ok=True)  # a mount point; the node's tmpfs goes on it
    node.run(["mount", "-t", "tmpfs", "-o", "size=1m", "dsas-run", "/run/dsas"])
    node.run(["sh", "-c", f"printf '%s\\n' {MOUNT} > /run/dsas/uftpd.root"])
    hook: list[str] = []
    if agent:
        node.run(["sh", "-c", "printf 'AGENT_KEYS=%s\\nAGENT_HOSTKEY=%s\\nAGENT_LOG=%s\\n' "
                  f"{authorized_keys} {node.dir / 'ssh_host_ed25519_key'} "
                  "/run/dsas/push-agent.log > /run/dsas/push-agent.conf"])
        hook = ["-s", str(PUSH_AGENT)]
    node.run(["uftpd", "-I", node.address, "-M", group, "-p", str(port), "-D", MOUNT, "-E",
              "-K", "ec:prime256v1", *hook, "-P", "/run/dsas/uftpd.pid",
              "-L", "/run/dsas/uftpd.log", "-x", "1"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = node.run(["cat", "/run/dsas/uftpd.pid"], check=False).stdout.strip()
        if pid.isdigit():
            return int(pid)
        time.sleep(0.05)
    raise TimeoutError(f"{node.name}: uftpd wrote no pid file in {timeout} s")
