"""The HTTP hardening lab: `dsas serve` with HTTP only in a namespace, clients on
two addresses (test_http_hardening_lab, test_http_fuzz_lab)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lab.bootfiles import INVENTORY
from lab.testing import Lab, Netns, require_tool
from tests.support.paths import ROOT as REPO

DSAS = str(REPO / ".venv/bin/dsas")


SRV, N1, N2, STRAY = "198.18.4.1", "198.18.4.11", "198.18.4.12", "198.18.4.50"


PORT = 8080


HTTP = f"http://{SRV}:{PORT}"


EVENTS = f"{HTTP}/api/v1/events"


@dataclass
class Master:
    lab: Lab
    srv: Netns
    cli: Netns
    proc: subprocess.Popen[bytes]
    log: Path
    state: Path
    inventory: Path
    boot: Path

    def curl(self, *args: str, source: str = N1,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return self.cli.run(["curl", "-sS", "--max-time", "10", "--interface", source, *args],
                            timeout=timeout, check=False)

    def status(self, *args: str, source: str = N1) -> str:
        return self.curl("-o", "/dev/null", "-w", "%{http_code}", *args, source=source).stdout

    def post(self, body: str | bytes, source: str = N1, *extra: str) -> tuple[str, str]:
        """(status, body) of one POST to the event API."""
        data = body if isinstance(body, str) else body.decode("latin-1")
        r = self.curl("-H", "Content-Type: application/json", "--data-binary", data,
                      "-w", "\n%{http_code}", *extra, EVENTS, source=source)
        text, _, code = r.stdout.rpartition("\n")
        return code, text

    def tool(self, *args: str, timeout: float = 120) -> object:
        r = self.cli.run([sys.executable, "-m", "tests.support.http_abuse", *args], timeout=timeout,
                         cwd=REPO)
        return json.loads(r.stdout)

    def metric(self, name: str, **labels: str) -> float:
        lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        want = f"{name}{{{lab}}}" if lab else name
        for line in self.curl(f"{HTTP}/metrics", source=N2).stdout.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return 0.0

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def start(lab: Lab, tmp: Path, *flags: str, nofile: int | None = None) -> Master:
    require_tool("curl")
    srv, cli = lab.netns("hhsrv"), lab.netns("hhcli")
    lab.veth(srv, cli, f"{SRV}/24", f"{N1}/24")
    itf = cli.run(["ip", "-o", "link", "show"]).stdout
    cli_if = next(m.group(1) for m in re.finditer(r"^\d+: ([^@:]+)", itf, re.M)
                  if m.group(1) != "lo")
    for extra in (N2, STRAY):
        cli.addr(cli_if, f"{extra}/24")
    boot, state = tmp / "boot", tmp / "state"
    (boot / "images/tiny/1").mkdir(parents=True)
    (boot / "images/tiny/1/vmlinuz").write_bytes(os.urandom(8 * 1024 * 1024))
    inv = tmp / "lab.yaml"
    inv.write_text(INVENTORY)
    argv = [DSAS, "serve", "-i", str(inv), "--only", "http", "--boot-root", str(boot),
            "--state-dir", str(state), *flags]
    if nofile is not None:
        argv = [require_tool("prlimit"), f"--nofile={nofile}:{nofile}", *argv]
    with open(tmp / "serve.log", "wb") as log:
        proc = srv.popen(argv, stdout=log, stderr=subprocess.STDOUT)
    srv.wait_port(PORT, "tcp")
    return Master(lab, srv, cli, proc, tmp / "serve.log", state, inv, boot)
