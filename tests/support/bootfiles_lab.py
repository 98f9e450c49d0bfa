"""The boot-files lab: a server and a client namespace on 198.18.4.0/24, a boot tree
with loaders and test files, `dsas serve` on it (test_bootfiles_lab and the TFTP/HTTP
abuse, fuzz, metrics and service-edge tests)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.bootfiles import INVENTORY
from lab.testing import Lab, Netns, require_tool
from provision.policy.boottree import populate_loaders
from tests.support.paths import ROOT as REPO

SRV, CLI = "198.18.4.1", "198.18.4.11"


HTTP = f"http://{SRV}:8080"


TEXT = b"line one\nwindows line\r\nlone CR\rend\n" * 40


@dataclass
class Setup:
    lab: Lab
    srv: Netns
    cli: Netns
    cli_if: str
    srv_if: str
    root: Path
    state: Path
    files: dict[str, bytes]

    def sha(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()

    def curl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.cli.run(["curl", "-sS", *args], timeout=timeout, check=False)

    def probe(self, *args: str, timeout: float = 30) -> dict:
        r = self.cli.run([sys.executable, "-m", "tests.support.tftp_probe", *args], timeout=timeout,
                         cwd=REPO, check=False)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)

    def metrics(self) -> str:
        return self.curl(f"{HTTP}/metrics").stdout

    def metric(self, line_start: str) -> float:
        for line in self.metrics().splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        return 0.0


def sha_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tree(root: Path) -> dict[str, bytes]:
    populate_loaders(root)
    img = root / "images/tiny/1"
    img.mkdir(parents=True)
    files = {
        "images/tiny/1/vmlinuz": os.urandom(2 * 1024 * 1024 + 123),
        "images/tiny/1/initrd.img": os.urandom(1468 * 40),  # a multiple of the block size
        "notes.txt": TEXT,
        "empty.bin": b"",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    files["pxelinux.0"] = (root / "pxelinux.0").read_bytes()
    (root.parent / "outside.txt").write_text("secret\n")
    os.symlink(root.parent / "outside.txt", root / "escape.txt")
    os.mkfifo(root / "fifo")
    return files


def lose_5_percent(ns: Netns, itf: str) -> None:
    """Drop 5% of the packets on ``itf``: tc netem on egress, or (kernels without
    sch_netem, like this lab host's) the iptables statistic match on ingress
    (INPUT, so the sender sees no error, as with a lossy wire)."""
    r = ns.run(["tc", "qdisc", "add", "dev", itf, "root", "netem", "loss", "5%"], check=False)
    if r.returncode == 0:
        return
    if not shutil.which("iptables-legacy"):
        pytest.fail("kernel has no netem and iptables-legacy is missing (Debian package "
                    "iptables)", pytrace=False)
    ns.run(["iptables-legacy", "-A", "INPUT", "-i", itf, "-m", "statistic", "--mode",
            "random", "--probability", "0.05", "-j", "DROP"])


def start_lab(lab: Lab, tmp: Path, loss: bool = False, files: dict[str, bytes] | None = None,
              flags: tuple[str, ...] = (), nofile: int | None = None) -> Setup:
    """`dsas serve --only tftp,http` with ``flags`` in a server namespace, a client
    namespace beside it; the tree of ``make_tree`` or just ``files``; ``nofile``: the
    server's RLIMIT_NOFILE."""
    for tool in ("tftp", "curl", "ip", "tc"):
        require_tool(tool)
    srv, cli = lab.netns("bfsrv"), lab.netns("bfcli")
    srv_if, cli_if = lab.veth(srv, cli, f"{SRV}/24", f"{CLI}/24")
    root, state = tmp / "boot", tmp / "state"
    root.mkdir()
    if files is None:
        files = make_tree(root)
    else:
        for name, data in files.items():
            (root / name).write_bytes(data)
    inv = tmp / "lab.yaml"
    inv.write_text(INVENTORY)
    with open(tmp / "serve.log", "wb") as log:  # the child keeps its own descriptor
        srv.popen([str(REPO / ".venv/bin/dsas"), "serve", "-i", str(inv), "--only",
                   "tftp,http",
                   "--interface", srv_if, "--boot-root", str(root), "--state-dir",
                   str(state), "-v", *flags], stdout=log, stderr=subprocess.STDOUT,
                  preexec_fn=None if nofile is None else lambda: resource.setrlimit(
                      resource.RLIMIT_NOFILE, (nofile, nofile)))
    srv.wait_port(69, "udp")
    srv.wait_port(8080, "tcp")
    if loss:
        for ns, itf in ((srv, srv_if), (cli, cli_if)):
            lose_5_percent(ns, itf)
    return Setup(lab, srv, cli, cli_if, srv_if, root, state, files)


def hold_from(env: Setup, name: str, addrs: list[str], each: int) -> tuple[int, int]:
    """``each`` RRQs for ``name`` from each of ``addrs`` (added to the client side),
    never acknowledged: (how many were answered, how many refused "busy")."""
    answered = busy = 0
    for a in addrs:
        env.cli.run(["ip", "addr", "add", f"{a}/24", "dev", env.cli_if])
        r = env.probe("hold", SRV, name, "--requests", str(each), "--bind", a)
        answered, busy = answered + r["answered"], busy + r["busy"]
    return answered, busy


def fetch_at_once(env: Setup, tmp: Path, jobs: list[tuple[str, list[str]]],
                  timeout: float = 180) -> dict[str, str]:
    """Run every (file, client argv) at once, bounded; output -> what is wrong with it.

    A ``tftp`` argv gets ``NAME OUT`` appended (tftp-hpa's ``-c get``), any other
    (curl) ``tftp://SRV/NAME -o OUT``, unless its URL is already in it."""
    procs = []
    for i, (name, argv) in enumerate(jobs):
        out = tmp / f"out{i}"
        if argv[0] == "tftp":
            argv = [*argv, name, str(out)]
        elif any(a.startswith("tftp://") for a in argv):
            argv = [*argv, "-o", str(out)]
        else:
            argv = [*argv, f"tftp://{SRV}/{name}", "-o", str(out)]
        procs.append((name, out, env.cli.popen(argv, stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE)))
    wrong = {}
    for name, out, p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            env.lab.stop(p)
            err = b"timed out"
        got = sha_of(out) if out.exists() else "missing"
        if got != env.sha(name):
            wrong[out.name] = f"{name}: rc={p.returncode} {err.decode(errors='replace')[-200:]}"
    return wrong


def wait_metric(env: Setup, line_start: str, want: float, seconds: float = 15) -> float:
    """Poll /metrics (bounded) until ``line_start`` reaches ``want``; its last value."""
    deadline = time.monotonic() + seconds
    value = env.metric(line_start)
    while value < want and time.monotonic() < deadline:
        time.sleep(0.1)
        value = env.metric(line_start)
    return value
