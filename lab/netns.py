"""The lab: network namespaces, veth pairs, bridges, taps and tracked processes.

Used by the tests and by `dsas demo`.

Every namespace and host-side link gets a unique name, so tests (and several
developers) can run side by side. Everything a ``Lab`` creates is removed by
``close()``: processes are stopped by PID (SIGTERM, then SIGKILL after a bounded
wait), then the namespaces are deleted. Addresses must come from 198.18.0.0/15.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1  # prctl(2)

LAB_NET = ipaddress.ip_network("198.18.0.0/15")

# Debian package that provides each tool the tests call, for the failure message.
TOOL_PACKAGES = {
    "ip": "iproute2",
    "rdisc6": "ndisc6",
    "tc": "iproute2",
    "udhcpc": "udhcpc",
    "busybox": "busybox-static",
    "dhclient": "isc-dhcp-client",
    "dhcrelay": "isc-dhcp-relay",
    "perfdhcp": "kea-admin",
    "kea-dhcp4": "kea-dhcp4-server",
    "dnsmasq": "dnsmasq-base",
    "tftp": "tftp-hpa",
    "in.tftpd": "tftpd-hpa",
    "curl": "curl",
    "dig": "bind9-dnsutils",
    "dnsperf": "dnsperf",
    "rsync": "rsync",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "keepalived": "keepalived",
    "ipvsadm": "ipvsadm",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "ping": "iputils-ping",
    "tcpdump": "tcpdump",
    "mmdebstrap": "mmdebstrap",
    "sqlite3": "sqlite3",
    "groff": "groff-base",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}

SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find_tool(name: str) -> str | None:
    path = shutil.which(name)
    if path:
        return path
    for d in SBIN_DIRS:
        cand = os.path.join(d, name)
        if os.access(cand, os.X_OK):
            return cand
    return None


class LabError(Exception):
    """The lab cannot be set up or run (one line, with its exit code)."""

    exit_code = 1


def tool(name: str) -> str:
    """Path of a tool the lab needs, or LabError naming its Debian package."""
    path = find_tool(name)
    if path is None:
        pkg = TOOL_PACKAGES.get(name, "?")
        raise LabError(f"missing tool {name!r} (Debian package {pkg}); run `make deps`")
    return path


def check_lab_address(cidr: str | None) -> None:
    if cidr is None:
        return
    net = ipaddress.ip_interface(cidr).network
    if not net.subnet_of(LAB_NET):  # type: ignore[arg-type]
        raise ValueError(f"{cidr} is outside the lab range {LAB_NET}")


def _ip(*args: str, ns: str | None = None) -> None:
    argv = ["ip"] + (["-n", ns] if ns else []) + list(args)
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


@dataclass
class Netns:
    """A network namespace of the lab."""

    lab: Lab
    name: str

    def cmd(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], timeout: float = 30, check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(argv), timeout=timeout, check=check, **kw)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process in this namespace; the lab stops it by PID at teardown
        (and, with ``Lab(die_with_parent=True)``, the kernel does if this process dies)."""
        kw.setdefault("start_new_session", True)
        if self.lab.die_with_parent:
            kw.setdefault("preexec_fn", _die_with_parent)
        proc = subprocess.Popen(self.cmd(argv), **kw)
        self.lab.procs.append(proc)
        self.lab.save_record()
        return proc

    def addr(self, ifname: str, cidr: str) -> None:
        check_lab_address(cidr)
        _ip("addr", "add", cidr, "dev", ifname, ns=self.name)

    def up(self, ifname: str) -> None:
        _ip("link", "set", ifname, "up", ns=self.name)

    def wait_port(self, port: int, proto: str = "udp", timeout: float = 15) -> None:
        """Wait (bounded) until something listens on ``port`` in this namespace."""
        flag = "-lnu" if proto == "udp" else "-lnt"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run(["ss", flag], check=False).stdout
            if any(f":{port} " in line for line in out.splitlines()):
                return
            time.sleep(0.1)
        raise TimeoutError(f"nothing listens on {proto}/{port} in {self.name} after {timeout}s")


@dataclass
class Lab:
    """The lab's namespaces and processes, all removed on exit."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    namespaces: list[Netns] = field(default_factory=list)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    # Every process gets PR_SET_PDEATHSIG: it is killed when the process that started
    # it dies, however it dies (SIGKILL, an ssh drop). Only for a lab driven from one
    # thread (the demo): the signal fires when the *thread* that forked exits.
    die_with_parent: bool = False
    # A JSON file naming the lab's owner, namespaces and processes (with their start
    # times), rewritten at each change and removed by close(): what
    # ``remove_leftovers`` needs to clean up after an owner that could not.
    record: Path | None = None
    _n: int = 0

    def _name(self, hint: str, limit: int) -> str:
        self._n += 1
        return f"{hint[: max(1, limit - len(self.tag) - 4)]}{self._n}{self.tag}"[:limit]

    def netns(self, hint: str = "ns") -> Netns:
        name = f"dsas-{self._name(hint, 24)}"
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, timeout=20)
        ns = Netns(self, name)
        self.namespaces.append(ns)
        self.save_record()
        ns.up("lo")
        return ns

    def save_record(self) -> None:
        if self.record is None:
            return
        doc = {"owner": os.getpid(), "owner_start": _start_time(os.getpid()),
               "namespaces": [ns.name for ns in self.namespaces],
               "pids": [[p.pid, _start_time(p.pid)] for p in self.procs if p.poll() is None]}
        self.record.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record.with_name(self.record.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.record)

    def veth(
        self, a: Netns, b: Netns, cidr_a: str | None = None, cidr_b: str | None = None
    ) -> tuple[str, str]:
        """A veth pair between two namespaces; returns (name in a, name in b)."""
        check_lab_address(cidr_a)
        check_lab_address(cidr_b)
        ia, ib = self._name("va", 15), self._name("vb", 15)
        _ip("link", "add", ia, "netns", a.name, "type", "veth", "peer", "name", ib,
            "netns", b.name)
        for ns, ifname, cidr in ((a, ia, cidr_a), (b, ib, cidr_b)):
            if cidr:
                ns.addr(ifname, cidr)
            ns.up(ifname)
        return ia, ib

    def bridge(self, ns: Netns, name: str = "br0", cidr: str | None = None) -> str:
        _ip("link", "add", name, "type", "bridge", "forward_delay", "0", "stp_state", "0",
            ns=ns.name)
        if cidr:
            ns.addr(name, cidr)
        ns.up(name)
        return name

    def plug(self, bridge_ns: Netns, bridge: str, ns: Netns, cidr: str | None = None) -> str:
        """Connect ``ns`` to a bridge in ``bridge_ns``; returns the interface name in ns."""
        port, inner = self.veth(bridge_ns, ns, None, cidr)
        _ip("link", "set", port, "master", bridge, ns=bridge_ns.name)
        return inner

    def tap(self, ns: Netns, bridge: str | None = None) -> str:
        """A tap device in ``ns`` (for QEMU, which must then run in ns), on a bridge."""
        name = self._name("tap", 15)
        _ip("tuntap", "add", "dev", name, "mode", "tap", ns=ns.name)
        if bridge:
            _ip("link", "set", name, "master", bridge, ns=ns.name)
        ns.up(name)
        return name

    def stop(self, proc: subprocess.Popen[Any], timeout: float = 5) -> int | None:
        """Stop one tracked process by PID: SIGTERM, bounded wait, then SIGKILL."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=timeout)
        return proc.returncode

    def close(self) -> None:
        for proc in reversed(self.procs):
            try:
                self.stop(proc)
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        self.procs.clear()
        for ns in reversed(self.namespaces):
            # Any process still in the namespace (a daemon that forked) is killed by PID.
            pids = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True,
                                  text=True, timeout=20).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, timeout=20)
        self.namespaces.clear()
        if self.record is not None:
            self.record.unlink(missing_ok=True)

    def __enter__(self) -> Lab:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces)")
        tool("ip")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _die_with_parent() -> None:  # in the child, between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22):
    with the PID, it names one process even after the PID is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start: int | None) -> bool:
    return start is not None and _start_time(pid) == start


def remove_leftovers(record: Path) -> str | None:
    """Clean up after the owner of ``record`` if it died without doing so: kill its
    processes (by PID, only those whose start time still matches) and delete its
    namespaces. Returns what was done, or None (no record). Raises LabError if the
    owner is still running."""
    try:
        doc = json.loads(record.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        record.unlink(missing_ok=True)
        return None
    owner = int(doc.get("owner", 0))
    if owner != os.getpid() and _alive(owner, doc.get("owner_start")):
        raise LabError(f"another run (pid {owner}) is using {record.parent}; stop it first")
    killed = 0
    for pid, start in doc.get("pids", []):
        if _alive(int(pid), start):
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    present = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                 timeout=20).stdout.split())
    gone = [n for n in doc.get("namespaces", []) if n in present]
    for name in gone:
        for pid in subprocess.run(["ip", "netns", "pids", name], capture_output=True,
                                  text=True, timeout=20).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)
    record.unlink(missing_ok=True)
    return (f"removed the leftovers of run {owner}: {killed} process(es), "
            f"{len(gone)} namespace(s)")
