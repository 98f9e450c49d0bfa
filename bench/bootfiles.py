"""Boot files benchmark: dsas TFTP/HTTP against tftpd-hpa and dnsmasq's TFTP.

In one run, on the same files, in a lab namespace pair (clients 198.18.4.11),
with curl as the client for every server:

  (a) one client fetching 64 MiB at blksize 512 and 1468;
  (b) a boot storm: 50 concurrent clients each fetching 8 MiB (blksize 1468);

reporting wall time, aggregate MB/s and failures, dsas's HTTP for the same
work, and the HTTP library choice (aiohttp, what dsas uses, against the
standard library's ThreadingHTTPServer) on the storm.

The three TFTP servers run side by side on their own addresses (dsas on
198.18.4.1, tftpd-hpa .3, dnsmasq .4) and are interleaved step by step: each
scenario is run ``--rounds`` times (default 3), every round by each server in
turn, the order rotated each round, so that load from elsewhere on a shared host
falls on all of them alike.

Every step records CPU: the server's (its cpuacct cgroup's usage, so that the
processes tftpd-hpa and dsas fork per transfer count even when nobody waits for
them; without cgroups, utime + stime of its process tree, reaped children
included), the clients' (rusage of the waited curls) and the machine's
(/proc/stat). What is left, "other CPU", is what foreign processes used
meanwhile, in % of one core, printed beside each figure. A step taken while
others used more than ``FOREIGN_LIMIT`` of a core is marked and left out of the
medians and ratios (contention hurts the servers unequally). The server's CPU
per MiB served is printed for every step: load moves it much less than wall
time, though heavy load (a load average of 20 and more) inflates it too, dsas's
Python more than the C servers.

    python -m bench bootfiles [--quick] [--rounds N] [--only single,storm,http]

A clean run: nothing else on the machine (``uptime`` load under 0.5, no VMs),
then ``python -m bench bootfiles``; steps marked "loaded" did not count.
"""

from __future__ import annotations

import argparse
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

from .common import FOREIGN_LIMIT, TICK, children_cpu, machine_cpu

REPO = Path(__file__).resolve().parent.parent
SRV, CLI = "198.18.4.1", "198.18.4.11"
TFTP_ADDR = {"dsas": SRV, "tftpd-hpa": "198.18.4.3", "dnsmasq": "198.18.4.4"}
MiB = 1024 * 1024


@dataclass
class Result:
    """One run of the boot-file benchmark (or the median of the quiet ones)."""

    wall: float
    mbytes: float
    failures: int
    clients: int
    server_cpu: float = 0.0  # CPU-s of the server's process tree during the step
    client_cpu: float = 0.0  # CPU-s of the curls
    other_cpu: float = 0.0  # % of one core foreign processes used meanwhile
    steps: int = 1  # runs behind this figure (a median: the quiet ones)
    loaded: int = 0  # runs left out: taken under foreign load

    @property
    def rate(self) -> float:
        return self.mbytes / self.wall if self.wall > 0 else 0.0

    @property
    def quiet(self) -> bool:
        return self.other_cpu <= FOREIGN_LIMIT

    @property
    def cpu_per_mib(self) -> float:
        """Server CPU-s per MiB served."""
        mib = self.mbytes * 1e6 / MiB
        return self.server_cpu / mib if mib else 0.0


def _tree(root: int) -> tuple[list[int], dict[int, float]]:
    """The pids of ``root``'s process tree, and every process's CPU-s (utime + stime +
    cutime + cstime: a reaped child is in its parent's c-times)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(f[1])
        cpu[int(d)] = sum(int(x) for x in f[11:15]) / TICK  # proc(5): utime..cstime
    kids: dict[int, list[int]] = {}
    for pid, pp in parent.items():
        kids.setdefault(pp, []).append(pid)
    out, todo, seen = [], [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out, cpu


def tree_pids(root: int) -> list[int]:
    """``root`` and its live descendants."""
    return _tree(root)[0]


def tree_cpu(root: int) -> float:
    """CPU-s of ``root`` and its descendants, live or reaped."""
    pids, cpu = _tree(root)
    return sum(cpu.get(pid, 0.0) for pid in pids)


class ServerCpu:
    """The CPU-s a server and everything it forks used: a cpuacct cgroup of its own
    (tftpd-hpa ignores SIGCHLD, so its transfers' CPU reaches no parent), else its
    process tree (``tree_cpu``)."""

    ROOT = Path("/sys/fs/cgroup/cpuacct")

    def __init__(self, name: str, pid: int):
        self.pid = pid
        self.group: Path | None = self.ROOT / f"dsas-bench-{os.getpid()}-{name}"
        try:
            self.group.mkdir()
            for member in tree_pids(pid):  # what it forked before this (dsas's engine)
                (self.group / "cgroup.procs").write_text(str(member))
        except OSError:
            self.close()
            self.group = None

    @property
    def how(self) -> str:
        return "cgroup" if self.group else "process tree"

    def __call__(self) -> float:
        if self.group is None:
            return tree_cpu(self.pid)
        return int((self.group / "cpuacct.usage").read_text()) / 1e9

    def close(self) -> None:
        if self.group is not None:
            try:
                self.group.rmdir()  # once its processes are gone
            except OSError:
                pass


def _none() -> float:
    return 0.0


def fetch_many(cli, urls: list[str], size: int, extra: list[str], timeout: float,
               server_cpu: Callable[[], float] = _none) -> Result:
    """Run one curl per URL at once; count those that failed or came short; with the
    CPU of the server (``server_cpu()``), of the curls and of everything else."""
    server0, client0, total0 = server_cpu(), children_cpu(), machine_cpu()
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
    server = server_cpu() - server0
    client = children_cpu() - client0
    other = max(0.0, machine_cpu() - total0 - server - client)
    return Result(wall, (len(urls) - fails) * size / 1e6, fails, len(urls), server, client,
                  100 * other / wall if wall > 0 else 0.0)


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


def tftp_scenarios(n_storm: int, big: int, small: int,
                   only: set[str]) -> dict[str, tuple[list[str], int, list[str]]]:
    """Scenario name -> (paths, bytes each, curl options)."""
    out = {}
    if "single" in only:
        for blk in (512, 1468):
            out[f"1 x {big // MiB} MiB, blksize {blk}"] = (
                ["big.bin"], big, ["--tftp-blksize", str(blk)])
    if "storm" in only:
        out[f"storm {n_storm} x {small // MiB} MiB"] = (
            [f"small{i % 8}.bin" for i in range(n_storm)], small, ["--tftp-blksize", "1468"])
    return out


def tftp_rounds(cli, rounds: int, scenarios: dict[str, tuple[list[str], int, list[str]]],
                cpus: dict[str, ServerCpu]) -> dict[str, dict[str, Result]]:
    """Each scenario ``rounds`` times, every round by each server in turn (the order
    rotated), each step printed as it ends; the median of each server's quiet steps."""
    names = list(TFTP_ADDR)
    runs: dict[str, dict[str, list[Result]]] = {n: {} for n in names}
    for scen, (paths, size, extra) in scenarios.items():
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                res = fetch_many(cli, [f"tftp://{TFTP_ADDR[name]}/{p}" for p in paths], size,
                                 extra, 240, cpus[name])
                runs[name].setdefault(scen, []).append(res)
                print(step_line(scen, name, res), flush=True)
    return {name: {scen: _median(rs) for scen, rs in runs[name].items()} for name in names}


def step_line(scen: str, name: str, r: Result) -> str:
    mark = "" if r.quiet else "  (loaded: not a result)"
    return (f"  {scen:<26} {name:<10} {r.wall:7.2f}s {r.rate:7.1f} MB/s f={r.failures} "
            f"server {r.server_cpu:6.2f} CPU-s ({r.cpu_per_mib * 1000:6.2f} ms/MiB) "
            f"client {r.client_cpu:6.2f} CPU-s, other CPU {r.other_cpu:5.1f}%{mark}")


def _median(results: list[Result]) -> Result:
    """The median of the quiet, complete runs (of all, marked loaded, if none was quiet)."""
    quiet = [r for r in results if r.quiet]
    ok = [r for r in quiet if r.failures == 0] or quiet or results
    med = statistics.median
    return Result(med(r.wall for r in ok), med(r.mbytes for r in ok),
                  sum(r.failures for r in results), results[0].clients,
                  med(r.server_cpu for r in ok), med(r.client_cpu for r in ok),
                  med(r.other_cpu for r in ok), len(ok), len(results) - len(quiet))


def http_runs(cli, port: int, n_storm: int, big: int, small: int,
              cpu: Callable[[], float] = _none) -> dict[str, Result]:
    base = f"http://{SRV}:{port}"
    out = {
        f"1 x {big // MiB} MiB": fetch_many(cli, [f"{base}/big.bin"], big, [], 120, cpu),
        f"storm {n_storm} x {small // MiB} MiB": fetch_many(
            cli, [f"{base}/small{i % 8}.bin" for i in range(n_storm)], small, [], 120, cpu),
    }
    return {scen: _median([r]) for scen, r in out.items()}


def run_server(lab, srv, cli, start: Callable, root: Path, tmp: Path, inv: Path,
               work: Callable[[ServerCpu], dict[str, Result]]) -> dict[str, Result]:
    procs = start(srv, root, tmp, inv)
    cpu = ServerCpu("http", procs[0].pid)
    try:
        return work(cpu)
    finally:
        for p in procs:
            lab.stop(p)
        cpu.close()


def spawn_cost(cli) -> str:
    m = cli.run(["curl", "-s", f"http://{SRV}:8080/metrics"], check=False).stdout
    secs = re.search(r"^dsas_tftp_spawn_seconds_total (\S+)", m, re.M)
    n = re.search(r"^dsas_tftp_spawns_total (\S+)", m, re.M)
    if not secs or not n or float(n.group(1)) == 0:
        return "n/a"
    rtx = re.search(r"^dsas_tftp_retransmits_total (\S+)", m, re.M)
    return f"{1000 * float(secs.group(1)) / float(n.group(1)):.2f} ms per transfer " \
           f"({int(float(n.group(1)))} forks); " \
           f"{int(float(rtx.group(1))) if rtx else 0} blocks retransmitted"


def table(title: str, cols: list[str], rows: dict[str, dict[str, Result]],
          ours: str, peers: list[str]) -> None:
    """Medians of the quiet steps; the ratio only where both sides have quiet steps."""
    print(f"\n{title}")
    w = 40
    print(f"{'scenario':<28}" + "".join(f"{c:>{w}}" for c in cols) + f"{'dsas/best peer':>16}")
    for scen in rows[cols[0]]:
        line, cpu = f"{scen:<28}", f"{'':<28}"
        for c in cols:
            r = rows[c].get(scen)
            cell = "-" if r is None else f"{r.wall:6.2f}s {r.rate:7.1f}MB/s f={r.failures}"
            line += f"{cell:>{w}}"
            note = "-" if r is None else (
                f"{r.cpu_per_mib * 1000:5.2f} ms/MiB, other {r.other_cpu:4.1f}%"
                + (f", {r.loaded} loaded" if r.loaded else ""))
            cpu += f"{note:>{w}}"
        quiet = [rows[p][scen].rate for p in peers if scen in rows[p] and rows[p][scen].quiet]
        ok = rows[ours][scen].quiet and quiet
        ratio = f"{rows[ours][scen].rate / max(quiet):>15.2f}x" if ok and max(quiet) else \
            f"{'(loaded)':>16}"
        print(line + ratio)
        print(cpu)
    print(f"(ms/MiB: server CPU per MiB served; other: foreign CPU, % of a core; a step over "
          f"{FOREIGN_LIMIT:.0f}% is left out)")


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench bootfiles", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20-client storm, 16 MiB single")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each scenario per server")
    ap.add_argument("--only", default="single,storm,http",
                    help="comma-separated parts to run: single, storm, http")
    ap.add_argument("--storm", type=int, default=0, help="clients in the storm (default 50)")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    from lab.netns import Lab  # the lab helpers: namespaces, veths, tracked processes

    args = parse(argv)
    only = set(args.only.split(","))
    rounds = args.rounds
    n_storm = args.storm or (20 if args.quick else 50)
    big, small = (16 if args.quick else 64) * MiB, 8 * MiB
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
        print(f"uptime: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
              f"{os.getloadavg()[2]:.2f} (1, 5, 15 min)", flush=True)
        with Lab() as lab:
            srv, cli = lab.netns("bbsrv"), lab.netns("bbcli")
            srv_if, _ = lab.veth(srv, cli, f"{SRV}/24", f"{CLI}/24")
            for addr in list(TFTP_ADDR.values())[1:]:
                srv.run(["ip", "addr", "add", f"{addr}/24", "dev", srv_if])
            http: dict[str, dict[str, Result]] = {}
            started = {"dsas": start_dsas(srv, root, tmp, inv),
                       "tftpd-hpa": start_tftpd_hpa(srv, root, tmp, inv),
                       "dnsmasq": start_dnsmasq(srv, root, tmp, inv)}
            cpus = {name: ServerCpu(name, procs[0].pid) for name, procs in started.items()}
            print(f"server CPU from: {cpus['dsas'].how}", flush=True)
            try:
                tftp = tftp_rounds(cli, rounds, tftp_scenarios(n_storm, big, small, only), cpus)
                fork = spawn_cost(cli)
                if "http" in only:
                    http["dsas (aiohttp)"] = http_runs(cli, 8080, n_storm, big, small,
                                                       cpus["dsas"])
            finally:
                for procs in started.values():
                    for p in procs:
                        lab.stop(p)
                for cpu in cpus.values():
                    cpu.close()
            if "http" in only:
                http["stdlib ThreadingHTTPServer"] = run_server(
                    lab, srv, cli, start_stdlib_http, root, tmp, inv,
                    lambda cpu: http_runs(cli, 8081, n_storm, big, small, cpu))
        if tftp["dsas"]:
            table(f"TFTP (curl client; median of the quiet steps of {rounds} interleaved "
                  "rounds: wall, aggregate MB/s, failures)", ["dsas", "tftpd-hpa", "dnsmasq"],
                  tftp, "dsas", ["tftpd-hpa", "dnsmasq"])
        if http:
            table("HTTP, same work (curl client; one run each)", ["dsas (aiohttp)",
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
