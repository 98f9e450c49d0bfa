"""Boot files benchmark: dsas TFTP/HTTP against tftpd-hpa and dnsmasq's TFTP.

In one run, on the same files, in a lab namespace pair (clients 198.18.4.11),
with curl as the client for every server:

  (a) one client fetching 64 MiB at blksize 512 and 1468;
  (b) a boot storm: 50 concurrent clients each fetching 8 MiB (blksize 1468);

reporting wall time, aggregate MB/s and failures, dsas's HTTP for the same
work, and the HTTP library choice (aiohttp, what dsas uses, against the
standard library's ThreadingHTTPServer) on the storm.

The three TFTP servers run side by side on their own addresses (dsas on
198.18.4.1, tftpd-hpa .3, dnsmasq .4) and every scenario is repeated
``--rounds`` times (default 3) with the servers' order rotated each round, so
that load from elsewhere on a shared host falls on all of them alike; the
table shows each server's median wall time (failures: the sum).

    python -m bench bootfiles [--quick] [--rounds N]
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SRV, CLI = "198.18.4.1", "198.18.4.11"
TFTP_ADDR = {"dsas": SRV, "tftpd-hpa": "198.18.4.3", "dnsmasq": "198.18.4.4"}
MiB = 1024 * 1024


@dataclass
class Result:
    """One run of the boot-file benchmark."""

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
                   "tftp,http", "--boot-root", str(root), "--state-dir", str(state),
                   "--tftp-max-per-client", "128"],  # the storm comes from one address
                  stdout=subprocess.DEVNULL, stderr=open(tmp / "dsas.log", "wb"))  # noqa: SIM115
    srv.wait_port(69, "udp")
    srv.wait_port(8080, "tcp")
    return [p]


def start_tftpd_hpa(srv, root: Path, tmp: Path, inv: Path) -> list:
    p = srv.popen([_tool("in.tftpd"), "-L", "-s", str(root), "-a",
                   f"{TFTP_ADDR['tftpd-hpa']}:69"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_tftp(srv, TFTP_ADDR["tftpd-hpa"])
    return [p]


def start_dnsmasq(srv, root: Path, tmp: Path, inv: Path) -> list:
    p = srv.popen([_tool("dnsmasq"), "--keep-in-foreground", "--port=0", "--enable-tftp",
                   f"--tftp-root={root}", f"--listen-address={TFTP_ADDR['dnsmasq']}",
                   "--bind-interfaces",
                   "--tftp-max=500", "--conf-file=/dev/null", "--user=root",
                   f"--pid-file={tmp / 'dnsmasq.pid'}", "--log-facility=-"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_tftp(srv, TFTP_ADDR["dnsmasq"])
    return [p]


def _wait_tftp(srv, addr: str, timeout: float = 15) -> None:
    """Wait (bounded) until something listens on ``addr``:69/udp in ``srv``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"{addr}:69 " in srv.run(["ss", "-lnu"], check=False).stdout:
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {addr}:69/udp after {timeout}s")


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


def tftp_runs(cli, addr: str, n_storm: int, big: int, small: int) -> dict[str, Result]:
    out = {}
    for blk in (512, 1468):
        out[f"1 x {big // MiB} MiB, blksize {blk}"] = fetch_many(
            cli, [f"tftp://{addr}/big.bin"], big, ["--tftp-blksize", str(blk)], 240)
    out[f"storm {n_storm} x {small // MiB} MiB"] = fetch_many(
        cli, [f"tftp://{addr}/small{i % 8}.bin" for i in range(n_storm)], small,
        ["--tftp-blksize", "1468"], 240)
    return out


def tftp_rounds(cli, rounds: int, n_storm: int, big: int,
                small: int) -> dict[str, dict[str, Result]]:
    """Every scenario ``rounds`` times, servers in rotated order; median wall each."""
    names = list(TFTP_ADDR)
    runs: dict[str, list[dict[str, Result]]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(tftp_runs(cli, TFTP_ADDR[name], n_storm, big, small))
    return {name: {scen: _median([one[scen] for one in runs[name]]) for scen in runs[name][0]}
            for name in names}


def _median(results: list[Result]) -> Result:
    ok = [r for r in results if r.failures == 0] or results
    wall = statistics.median(r.wall for r in ok)
    return Result(wall, statistics.median(r.mbytes for r in ok),
                  sum(r.failures for r in results), results[0].clients)


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
    from lab.netns import Lab  # the lab helpers: namespaces, veths, tracked processes

    quick = "--quick" in argv
    rounds = int(argv[argv.index("--rounds") + 1]) if "--rounds" in argv else 3
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
        from lab.bootfiles import INVENTORY
        inv.write_text(INVENTORY)
        with Lab() as lab:
            srv, cli = lab.netns("bbsrv"), lab.netns("bbcli")
            srv_if, _ = lab.veth(srv, cli, f"{SRV}/24", f"{CLI}/24")
            for addr in list(TFTP_ADDR.values())[1:]:
                srv.run(["ip", "addr", "add", f"{addr}/24", "dev", srv_if])
            http: dict[str, dict[str, Result]] = {}
            procs = [*start_dsas(srv, root, tmp, inv), *start_tftpd_hpa(srv, root, tmp, inv),
                     *start_dnsmasq(srv, root, tmp, inv)]
            try:
                tftp = tftp_rounds(cli, rounds, n_storm, big, small)
                fork = spawn_cost(cli)
                http["dsas (aiohttp)"] = http_runs(cli, 8080, n_storm, big, small)
            finally:
                for p in procs:
                    lab.stop(p)
            http["stdlib ThreadingHTTPServer"] = run_server(
                lab, srv, cli, start_stdlib_http, root, tmp, inv,
                lambda: http_runs(cli, 8081, n_storm, big, small))
        table(f"TFTP (curl client; median of {rounds} interleaved rounds: wall, aggregate "
              "MB/s, failures)", ["dsas", "tftpd-hpa",
              "dnsmasq"], tftp, "dsas", ["tftpd-hpa", "dnsmasq"])
        table("HTTP, same work (curl client)", ["dsas (aiohttp)",
              "stdlib ThreadingHTTPServer"], http, "dsas (aiohttp)",
              ["stdlib ThreadingHTTPServer"])
        print(f"\ndsas TFTP RRQ accepted -> transfer process running (wall; mostly waiting "
              f"for CPU in the storm, a fork itself costs ~4 ms of CPU): {fork}")
        print(f"host: {os.cpu_count()} CPUs shared with other work; figures vary by run")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
