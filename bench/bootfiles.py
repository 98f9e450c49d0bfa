"""Boot files benchmark: dsas TFTP/HTTP against tftpd-hpa and dnsmasq's TFTP.

In one run, on the same files, in a lab namespace pair (server 198.18.4.1,
clients 198.18.4.11), with curl as the client for every server:

  (a) one client fetching 64 MiB at blksize 512 and 1468;
  (b) a boot storm: 50 concurrent clients each fetching 8 MiB (blksize 1468);

reporting wall time, aggregate MB/s and failures, dsas's HTTP for the same
work, and the HTTP library choice (aiohttp, what dsas uses, against the
standard library's ThreadingHTTPServer) on the storm.

    python -m bench bootfiles [--quick]
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRV, CLI = "198.18.4.1", "198.18.4.11"
MiB = 1024 * 1024


@dataclass
class Result:
    wall: float
    mbytes: float
    failures: int
    clients: int

    @property
    def rate(self) -> float:
        return self.mbytes / self.wall if self.wall > 0 else 0.0


def fetch_many(cli, urls: list[str], size: int, extra: list[str], timeout: float) -> Result:
    """Run one curl per URL at once; count those that failed or came short."""
    t0 = time.monotonic()
    procs = [cli.popen(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                        "--max-time", str(int(timeout)), *extra, u],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) for u in urls]
    fails = 0
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            cli.lab.stop(p)
            fails += 1
            continue
        if p.returncode != 0 or out.decode().strip() != str(size):
            fails += 1
    wall = time.monotonic() - t0
    return Result(wall, (len(urls) - fails) * size / 1e6, fails, len(urls))


# ------------------------------------------------------------------ servers


def start_dsas(srv, root: Path, tmp: Path, inv: Path) -> list:
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    p = srv.popen([str(REPO / ".venv/bin/dsas"), "serve", "-i", str(inv), "--only",
                   "tftp,http", "--boot-root", str(root), "--state-dir", str(state)],
                  stdout=subprocess.DEVNULL, stderr=open(tmp / "dsas.log", "wb"))  # noqa: SIM115
    srv.wait_port(69, "udp")
    srv.wait_port(8080, "tcp")
    return [p]


def start_tftpd_hpa(srv, root: Path, tmp: Path, inv: Path) -> list:
    p = srv.popen([_tool("in.tftpd"), "-L", "-s", str(root), "-a", f"{SRV}:69"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.wait_port(69, "udp")
    return [p]


def start_dnsmasq(srv, root: Path, tmp: Path, inv: Path) -> list:
    p = srv.popen([_tool("dnsmasq"), "--keep-in-foreground", "--port=0", "--enable-tftp",
                   f"--tftp-root={root}", f"--listen-address={SRV}", "--bind-interfaces",
                   "--tftp-max=500", "--conf-file=/dev/null", "--user=root",
                   f"--pid-file={tmp / 'dnsmasq.pid'}", "--log-facility=-"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.wait_port(69, "udp")
    return [p]


def start_stdlib_http(srv, root: Path, tmp: Path, inv: Path) -> list:
    p = srv.popen([sys.executable, "-m", "http.server", "--bind", SRV, "--directory",
                   str(root), "8081"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.wait_port(8081, "tcp")
    return [p]


def _tool(name: str) -> str:
    for d in ("/usr/sbin", "/usr/bin", "/sbin"):
        if os.access(f"{d}/{name}", os.X_OK):
            return f"{d}/{name}"
    raise SystemExit(f"bench bootfiles: missing {name} (run make deps)")


# ------------------------------------------------------------------ scenarios


def tftp_runs(cli, n_storm: int, big: int, small: int) -> dict[str, Result]:
    out = {}
    for blk in (512, 1468):
        out[f"1 x {big // MiB} MiB, blksize {blk}"] = fetch_many(
            cli, [f"tftp://{SRV}/big.bin"], big, ["--tftp-blksize", str(blk)], 240)
    out[f"storm {n_storm} x {small // MiB} MiB"] = fetch_many(
        cli, [f"tftp://{SRV}/small{i % 8}.bin" for i in range(n_storm)], small,
        ["--tftp-blksize", "1468"], 240)
    return out


def http_runs(cli, port: int, n_storm: int, big: int, small: int) -> dict[str, Result]:
    base = f"http://{SRV}:{port}"
    return {
        f"1 x {big // MiB} MiB": fetch_many(cli, [f"{base}/big.bin"], big, [], 120),
        f"storm {n_storm} x {small // MiB} MiB": fetch_many(
            cli, [f"{base}/small{i % 8}.bin" for i in range(n_storm)], small, [], 120),
    }


def run_server(lab, srv, cli, start: Callable, root: Path, tmp: Path, inv: Path,
               work: Callable[[], dict[str, Result]]) -> dict[str, Result]:
    procs = start(srv, root, tmp, inv)
    try:
        return work()
    finally:
        for p in procs:
            lab.stop(p)


def spawn_cost(cli) -> str:
    m = cli.run(["curl", "-s", f"http://{SRV}:8080/metrics"], check=False).stdout
    secs = re.search(r"^dsas_tftp_spawn_seconds_total (\S+)", m, re.M)
    n = re.search(r"^dsas_tftp_spawns_total (\S+)", m, re.M)
    if not secs or not n or float(n.group(1)) == 0:
        return "n/a"
    return f"{1000 * float(secs.group(1)) / float(n.group(1)):.2f} ms per transfer " \
           f"({int(float(n.group(1)))} forks)"


def table(title: str, cols: list[str], rows: dict[str, dict[str, Result]],
          ours: str, peers: list[str]) -> None:
    print(f"\n{title}")
    w = max(len(c) for c in cols) + 2
    print(f"{'scenario':<28}" + "".join(f"{c:>{w + 20}}" for c in cols)
          + f"{'dsas/best peer':>16}")
    for scen in rows[cols[0]]:
        line = f"{scen:<28}"
        for c in cols:
            r = rows[c].get(scen)
            cell = "-" if r is None else f"{r.wall:6.2f}s {r.rate:7.1f}MB/s f={r.failures}"
            line += f"{cell:>{w + 20}}"
        best = max((rows[p][scen].rate for p in peers if scen in rows[p]), default=0)
        ratio = rows[ours][scen].rate / best if best else 0
        line += f"{ratio:>15.2f}x"
        print(line)


def main(argv: list[str]) -> int:
    from tests.lab import Lab  # the lab helpers: namespaces, veths, tracked processes

    quick = "--quick" in argv
    n_storm = 20 if quick else 50
    big, small = (16 if quick else 64) * MiB, 8 * MiB
    tmp = Path(tempfile.mkdtemp(prefix="dsas-bench-bootfiles-"))
    os.chmod(tmp, 0o755)
    try:
        root = tmp / "boot"
        root.mkdir()
        (root / "big.bin").write_bytes(os.urandom(big))
        for i in range(8):
            (root / f"small{i}.bin").write_bytes(os.urandom(small))
        inv = tmp / "lab.yaml"
        from tests.bootfiles_support import INVENTORY
        inv.write_text(INVENTORY)
        with Lab() as lab:
            srv, cli = lab.netns("bbsrv"), lab.netns("bbcli")
            lab.veth(srv, cli, f"{SRV}/24", f"{CLI}/24")
            tftp: dict[str, dict[str, Result]] = {}
            http: dict[str, dict[str, Result]] = {}
            fork = "n/a"

            def ours() -> dict[str, Result]:
                nonlocal fork
                r = tftp_runs(cli, n_storm, big, small)
                fork = spawn_cost(cli)
                http["dsas (aiohttp)"] = http_runs(cli, 8080, n_storm, big, small)
                return r

            tftp["dsas"] = run_server(lab, srv, cli, start_dsas, root, tmp, inv, ours)
            tftp["tftpd-hpa"] = run_server(lab, srv, cli, start_tftpd_hpa, root, tmp, inv,
                                           lambda: tftp_runs(cli, n_storm, big, small))
            tftp["dnsmasq"] = run_server(lab, srv, cli, start_dnsmasq, root, tmp, inv,
                                         lambda: tftp_runs(cli, n_storm, big, small))
            http["stdlib ThreadingHTTPServer"] = run_server(
                lab, srv, cli, start_stdlib_http, root, tmp, inv,
                lambda: http_runs(cli, 8081, n_storm, big, small))
        table("TFTP (curl client; wall, aggregate MB/s, failures)", ["dsas", "tftpd-hpa",
              "dnsmasq"], tftp, "dsas", ["tftpd-hpa", "dnsmasq"])
        table("HTTP, same work (curl client)", ["dsas (aiohttp)",
              "stdlib ThreadingHTTPServer"], http, "dsas (aiohttp)",
              ["stdlib ThreadingHTTPServer"])
        print(f"\ndsas TFTP fork cost (RRQ accepted -> child started): {fork}")
        print(f"host: {os.cpu_count()} CPUs shared with other work; figures vary by run")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
