"""DHCP benchmark: perfdhcp 4-way exchanges (DORA) against dsas, Kea and dnsmasq.

    python -m bench dhcp [--step-seconds=4] [--servers=dsas,dsas2,kea,dnsmasq] [--leases=100000]
    python -m bench dhcp --fixed-rate=1000 [--repeat=3] [--servers=dsas,kea]

Each server runs in its own pair of namespaces (198.18.0.0/15 on a veth) with
perfdhcp (Debian's kea-admin) beside it. perfdhcp acts as a relay (giaddr = its address)
for up to 100,000 simulated clients, all unknown to the inventory, so dsas answers from
its discovery pool. For each server a rate ladder (doubling, then bisecting) finds the
highest rate whose 4-way exchanges complete with under 1% lost; the figure reported is
the completed exchanges per second at that step. The ladders are interleaved step by
step so that every server sees the same background load on this shared machine. Every
server starts from an empty lease store and logs at its default level to a file. dsas
fsyncs each batch of leases before sending its ACKs; Kea's memfile and dnsmasq's lease
file are written without fsync.

``dsas2`` is dsas with two DHCP worker processes (``--dhcp-workers 2``): its CPU and
RSS are those of both processes.

Then the memory (RSS) of each server after it has loaded 100,000 leases from its own
lease store (sqlite for dsas, the memfile CSV for Kea, the lease file for dnsmasq).

Every step also records CPU: the server's (utime + stime of all its threads, from
/proc/PID/stat), perfdhcp's (rusage of the waited child), and the machine's (user, nice
and system time of all CPUs, from /proc/stat). What is left, "other CPU", is what
foreign processes used meanwhile, in % of one core. A step taken while others used more
than ``FOREIGN_LIMIT`` of a core is marked and left out of the ratios: contention hurts
the servers unequally, so such a ratio is not a result. CPU-s per 1,000 exchanges (the
server's CPU divided by the completed exchanges) is much less sensitive to load than a
rate; ``--fixed-rate R`` measures only that, at a rate every server completes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.netns import Lab, Netns, find_tool

from .common import FOREIGN_LIMIT, children_cpu, machine_cpu, process_cpu

SERVER_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
PREFIX = 15
POOL = ("198.18.0.10", "198.19.255.250")
LOSS_LIMIT = 0.01
START_RATE = 250
MAX_RATE = 32000
CLIENTS = 100_000
DSAS = str(Path(sys.executable).with_name("dsas"))

INVENTORY = f"""\
cluster:
  name: bench
  domain: bench.example
  master_address: {SERVER_IP}
  masters: {{primary: m01}}
networks:
  lan: {{cidr: 198.18.0.0/{PREFIX}, dns: [{SERVER_IP}]}}
hwtypes:
  vm: {{nics: [eth0]}}
images:
  base: {{version: v1}}
roles:
  master: {{services: [], networks: [lan], image: base, hwtype: vm, boot: disk,
           bond: {{mode: none}}}}
hosts:
  m01: {{role: master, macs: ["52:54:00:00:00:01"], addresses: {{lan: {SERVER_IP}}}}}
"""


@dataclass
class Step:
    """One rung of the DHCP rate ladder."""

    rate: int
    achieved: float
    sent: int
    drops: int
    completed: int = 0  # exchanges whose ACK came back
    server_cpu: float = 0.0  # CPU-s the server used during the step
    client_cpu: float = 0.0  # CPU-s perfdhcp used
    other_cpu: float = 0.0  # % of one core other processes used meanwhile

    @property
    def loss(self) -> float:
        return self.drops / self.sent if self.sent else 1.0

    @property
    def lossless(self) -> bool:
        return self.sent > 0 and self.loss < LOSS_LIMIT

    @property
    def quiet(self) -> bool:
        return self.other_cpu <= FOREIGN_LIMIT

    @property
    def cpu_per_1000(self) -> float:
        """Server CPU-s per 1,000 completed exchanges."""
        return 1000 * self.server_cpu / self.completed if self.completed else 0.0

    def line(self, name: str) -> str:
        mark = "" if self.quiet else "  (loaded: not a result)"
        return (f"  {name:<8} rate {self.rate:>6}/s: {self.achieved:8.1f} exchanges/s, "
                f"loss {100 * self.loss:5.2f}%, {self.cpu_per_1000:.3f} CPU-s/1000, "
                f"other CPU {self.other_cpu:5.1f}%{mark}")


@dataclass
class Result:
    """One DHCP benchmark case: its ladder of rates."""

    name: str
    steps: list[Step] = field(default_factory=list)
    rss_kib: int = 0  # after its ladder
    rss_loaded_kib: int = 0  # after loading the preloaded leases
    error: str = ""

    @property
    def best(self) -> Step | None:
        """The fastest lossless step taken on a quiet machine."""
        good = [s for s in self.steps if s.lossless and s.quiet]
        return max(good, key=lambda s: s.achieved) if good else None

    @property
    def best_any(self) -> Step | None:
        """The fastest lossless step, quiet or not."""
        good = [s for s in self.steps if s.lossless]
        return max(good, key=lambda s: s.achieved) if good else None


# -- the servers -----------------------------------------------------------------------

def start_dsas(ns: Netns, iface: str, work: Path, extra: tuple[str, ...] | list[str] = ()) -> Any:
    inv = work / "cluster.yaml"
    inv.write_text(INVENTORY)
    (work / "state").mkdir(exist_ok=True)
    return ns.popen([DSAS, "serve", "--only", "dhcp", "--interface", iface, "--inventory",
                     str(inv), "--state-dir", str(work / "state"), "--boot-root",
                     str(work / "boot"), "--discovery", "--discovery-rate", "0", *extra],
                    stdout=open(work / "dsas.log", "w"), stderr=subprocess.STDOUT)


def start_kea(ns: Netns, iface: str, work: Path) -> Any:
    conf = {"Dhcp4": {
        "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": True,
                           "name": str(work / "kea-leases4.csv"), "lfc-interval": 0},
        "valid-lifetime": 600,
        "subnet4": [{"id": 1, "subnet": f"198.18.0.0/{PREFIX}",
                     "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}],
                     "option-data": [{"name": "domain-name-servers", "data": SERVER_IP}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": str(work / "kea.log")}]}],
    }}
    path = work / "kea.json"
    path.write_text(json.dumps(conf))
    env = {**os.environ, "KEA_PIDFILE_DIR": str(work), "KEA_LOCKFILE_DIR": str(work)}
    return ns.popen([_tool("kea-dhcp4"), "-c", str(path)], env=env,
                    stdout=open(work / "kea.out", "w"), stderr=subprocess.STDOUT)


def start_dnsmasq(ns: Netns, iface: str, work: Path) -> Any:
    return ns.popen([_tool("dnsmasq"), "-d", "-k", "--conf-file=/dev/null", "--port=0",
                     f"--interface={iface}", "--bind-interfaces", "--no-ping",
                     f"--dhcp-range={POOL[0]},{POOL[1]},255.254.0.0,600",
                     f"--dhcp-lease-max={2 * CLIENTS}", "--pid-file=",
                     f"--dhcp-leasefile={work / 'dnsmasq.leases'}"],
                    stdout=open(work / "dnsmasq.log", "w"), stderr=subprocess.STDOUT)


def start_dsas2(ns: Netns, iface: str, work: Path) -> Any:
    """dsas with two DHCP worker processes (--dhcp-workers 2)."""
    return start_dsas(ns, iface, work, ["--dhcp-workers", "2"])


SERVERS: dict[str, Callable[[Netns, str, Path], Any]] = {
    "dsas": start_dsas, "dsas2": start_dsas2, "kea": start_kea, "dnsmasq": start_dnsmasq}
TOOLS = {"kea": "kea-dhcp4", "dnsmasq": "dnsmasq", "perfdhcp": "perfdhcp"}


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise SystemExit(f"bench dhcp: missing tool {name} (run `make deps`)")
    return path


# -- perfdhcp and the ladder ------------------------------------------------------------

def perfdhcp(ns: Netns, rate: int, seconds: int, seed: int, server_pid: int) -> Step:
    server0, client0, total0 = tree_cpu(server_pid), children_cpu(), machine_cpu()
    t0 = time.monotonic()
    out = ns.run([_tool("perfdhcp"), "-4", "-l", CLIENT_IP, "-r", str(rate), "-p", str(seconds),
                  "-R", str(CLIENTS), "-s", str(seed), "-d", "2", "-W", "1500000", SERVER_IP],
                 timeout=seconds + 30, check=False)
    wall = time.monotonic() - t0
    server = tree_cpu(server_pid) - server0
    client = children_cpu() - client0
    other = max(0.0, machine_cpu() - total0 - server - client)
    text = out.stdout + out.stderr
    sent = [int(x) for x in re.findall(r"sent packets: (\d+)", text)]
    received = [int(x) for x in re.findall(r"received packets: (\d+)", text)]
    if len(sent) < 2 or len(received) < 2:
        return Step(rate, 0.0, 0, 0, 0, server, client, 100 * other / wall)
    # A DORA is complete when its ACK came back: count every DISCOVER without one. (The
    # rate perfdhcp prints also divides by its exit wait, so it is computed here.)
    return Step(rate, received[1] / seconds, sent[0], max(0, sent[0] - received[1]),
                received[1], server, client, 100 * other / wall)


def ladder() -> Generator[int, Step, None]:
    """Rates to try: double while lossless, then bisect three times (multiples of 50)."""
    good, bad = 0, 0
    rate = START_RATE
    while rate <= MAX_RATE:
        if (yield rate).lossless:
            good, rate = rate, rate * 2
        else:
            bad = rate
            break
    for _ in range(3 if bad else 0):
        mid = (good + bad) // 2 // 50 * 50
        if mid <= good or mid >= bad:
            return
        if (yield mid).lossless:
            good = mid
        else:
            bad = mid


def _tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (dsas's DHCP workers), from /proc."""
    out, todo = [], [pid]
    while todo and len(out) < 64:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return out


def tree_cpu(pid: int) -> float:
    """CPU-s of a server and its worker processes (a worker dying meanwhile: its CPU
    since the step began is lost, so a step's figure errs low, never high)."""
    return sum(process_cpu(p) for p in _tree(pid))


def rss_kib(pid: int) -> int:
    """RSS of a server with its worker processes, KiB."""
    return sum(_rss_kib(p) for p in _tree(pid))


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_udp(ns: Netns, port: int, proc: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        if f":{port} " in ns.run(["ss", "-lnu"], check=False).stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on udp/{port}")


@dataclass
class Contender:
    """One server in its own pair of namespaces, with its ladder."""

    name: str
    srv: Netns
    cli: Netns
    proc: Any
    result: Result
    steps: Generator[int, Step, None] = field(default_factory=ladder)
    next_rate: int | None = None


def run_ladders(contenders: list[Contender], seconds: int) -> None:
    """Interleave the ladders step by step, so every server sees the same background
    load on this shared machine (one perfdhcp at a time)."""
    for c in contenders:
        c.next_rate = next(c.steps)
    seed = 1
    while any(c.next_rate is not None for c in contenders):
        for c in contenders:
            if c.next_rate is None:
                continue
            if c.proc.poll() is not None:
                c.result.error = f"server exited with status {c.proc.returncode}"
                c.next_rate = None
                continue
            seed += 1
            step = perfdhcp(c.cli, c.next_rate, seconds, seed, c.proc.pid)
            c.result.steps.append(step)
            print(step.line(c.name), flush=True)
            try:
                c.next_rate = c.steps.send(step)
            except StopIteration:
                c.next_rate = None
    for c in contenders:
        c.result.rss_kib = rss_kib(c.proc.pid)


def _iface(ns: Netns) -> str:
    out = ns.run(["ip", "-o", "-4", "addr", "show"]).stdout
    return next(line.split()[1] for line in out.splitlines() if SERVER_IP in line)


def _lease(i: int) -> tuple[str, str]:
    """The i-th preloaded lease: (address, MAC), from 198.18.1.0 on."""
    ip = (0xC6120100 + i).to_bytes(4, "big")
    return ".".join(map(str, ip)), "02:00:" + i.to_bytes(4, "big").hex(":")


def preload(name: str, work: Path, n: int) -> None:
    """Write ``n`` live leases into the server's own store, as it would have saved them."""
    expires = int(time.time()) + 3600
    if name.startswith("dsas"):
        from provision.policy.leases import Change, Lease, LeasePut
        from provision.state import StateStore
        from provision.state.leases import LeaseJournal

        (work / "state").mkdir()
        store = StateStore(work / "state")
        changes: list[Change] = [LeasePut(Lease(0xC6120100 + i, _lease(i)[1], "lan", "bound",
                                                expires)) for i in range(n)]
        LeaseJournal(store).commit(changes, time.time())
        store.close()
    elif name == "kea":
        rows = ["address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,"
                "hostname,state,user_context"]
        rows += [f"{ip},{mac},,600,{expires},1,0,0,,0," for ip, mac in map(_lease, range(n))]
        (work / "kea-leases4.csv").write_text("\n".join(rows) + "\n")
    elif name == "dnsmasq":
        (work / "dnsmasq.leases").write_text(
            "".join(f"{expires} {mac} {ip} * *\n" for ip, mac in map(_lease, range(n))))


def memory_with_leases(lab: Lab, c: Contender, work: Path, n: int) -> int:
    """RSS (KiB) of the server after it has loaded ``n`` leases from its store."""
    wdir = work / f"{c.name}-memory"
    wdir.mkdir()
    preload(c.name, wdir, n)
    proc = SERVERS[c.name](c.srv, _iface(c.srv), wdir)
    try:
        wait_udp(c.srv, 67, proc, timeout=60)
        time.sleep(2.0)
        return rss_kib(proc.pid)
    except RuntimeError as e:
        print(f"  {c.name}: memory test failed: {e}", file=sys.stderr)
        return 0
    finally:
        lab.stop(proc)


def report(results: list[Result], n: int) -> str:
    kea = next((r for r in results if r.name == "kea"), None)
    kea_best = kea.best if kea else None
    lines = [f"{'server':<9}{'lossless DORA/s':>16}{'loss':>7}{'CPU-s/1000':>11}"
             f"{'other CPU':>10}{'vs kea':>8}{'RSS after':>11}{f'RSS {n // 1000}k leases':>18}"
             f"{'vs kea':>8}"]
    for r in results:
        b = r.best or r.best_any
        if b:
            rate = (f"{b.achieved:>16.0f}{100 * b.loss:>6.2f}%{b.cpu_per_1000:>11.3f}"
                    f"{b.other_cpu:>9.1f}%")
        else:
            rate = f"{'-':>16}{'-':>7}{'-':>11}{'-':>10}"
        ratio = (f"{b.achieved / kea_best.achieved:.2f}x"
                 if b and b.quiet and kea_best and kea_best.achieved else "-")
        mem = f"{r.rss_loaded_kib / 1024:.1f} MiB" if r.rss_loaded_kib else "-"
        mem_ratio = (f"{r.rss_loaded_kib / kea.rss_loaded_kib:.2f}x"
                     if kea and kea.rss_loaded_kib and r.rss_loaded_kib else "-")
        note = r.error or ("" if not b or b.quiet else "loaded: not a result")
        lines.append(f"{r.name:<9}{rate}{ratio:>8}{r.rss_kib / 1024:>7.1f} MiB{mem:>18}"
                     f"{mem_ratio:>8}" + (f"  ({note})" if note else ""))
    lines.append("lossless: < 1% of 4-way exchanges incomplete; CPU-s/1000: the server's CPU "
                 "per 1,000 exchanges at that step;")
    lines.append(f"other CPU: % of one core other processes used during it (over "
                 f"{FOREIGN_LIMIT:g}%: no ratio); RSS after: after its ladder")
    return "\n".join(lines)


def fixed_rate(contenders: list[Contender], rate: int, seconds: int, repeat: int) -> str:
    """CPU per exchange at one rate, interleaved, ``repeat`` times per server."""
    seed = 1
    runs: dict[str, list[Step]] = {c.name: [] for c in contenders}
    for _ in range(repeat):
        for c in contenders:
            if c.proc.poll() is not None:
                continue
            seed += 1
            step = perfdhcp(c.cli, rate, seconds, seed, c.proc.pid)
            runs[c.name].append(step)
            print(step.line(c.name), flush=True)
    lines = [f"{'server':<9}{'CPU-s/1000 (min)':>18}{'median':>8}{'vs kea':>8}"
             f"{'other CPU':>10}{'exchanges/s':>12}"]
    medians = {}
    for name, steps in runs.items():
        done = sorted((s for s in steps if s.completed), key=lambda s: s.cpu_per_1000)
        if done:
            medians[name] = done[len(done) // 2]
    kea = medians.get("kea")
    for name, steps in runs.items():
        med = medians.get(name)
        if med is None:
            lines.append(f"{name:<9}{'-':>18}")
            continue
        low = min(s.cpu_per_1000 for s in steps if s.completed)
        ratio = f"{med.cpu_per_1000 / kea.cpu_per_1000:.2f}x" if kea and kea.cpu_per_1000 else "-"
        mark = "" if med.quiet and (kea is None or kea.quiet) else "  (loaded)"
        lines.append(f"{name:<9}{low:>18.3f}{med.cpu_per_1000:>8.3f}{ratio:>8}"
                     f"{med.other_cpu:>9.1f}%{med.achieved:>12.0f}{mark}")
    lines.append("CPU-s/1000: the server's CPU per 1,000 completed exchanges; vs kea: of the "
                 "medians; other CPU: what other processes used meanwhile, % of one core")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench dhcp")
    ap.add_argument("--step-seconds", type=int, default=4)
    ap.add_argument("--servers", default="dsas,kea,dnsmasq")
    ap.add_argument("--leases", type=int, default=CLIENTS)
    ap.add_argument("--fixed-rate", type=int, default=0,
                    help="only measure CPU per exchange at this rate")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args([a for a in argv if a not in ("dhcp",)])
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in SERVERS:
            print(f"unknown server {n}; have {', '.join(SERVERS)}", file=sys.stderr)
            return 2
        if n in TOOLS:
            _tool(TOOLS[n])
    _tool("perfdhcp")
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="dsas-bench-dhcp-",
                                                   dir="/var/tmp") as tmp:
        work = Path(tmp)
        contenders = []
        for n in names:
            srv, cli = lab.netns(f"b{n[:5]}s"), lab.netns(f"b{n[:5]}c")
            sif, _ = lab.veth(srv, cli, f"{SERVER_IP}/{PREFIX}", f"{CLIENT_IP}/{PREFIX}")
            (work / n).mkdir()
            proc = SERVERS[n](srv, sif, work / n)
            contenders.append(Contender(n, srv, cli, proc, Result(n)))
        for c in contenders:
            try:
                wait_udp(c.srv, 67, c.proc)
            except RuntimeError as e:
                c.result.error = str(e)
        time.sleep(0.5)
        live = [c for c in contenders if not c.result.error]
        if args.fixed_rate:
            table = fixed_rate(live, args.fixed_rate, args.step_seconds, args.repeat)
            for c in contenders:
                lab.stop(c.proc)
            print()
            print(table)
            return 0
        run_ladders(live, args.step_seconds)
        for c in contenders:
            lab.stop(c.proc)
        for c in contenders:
            c.result.rss_loaded_kib = memory_with_leases(lab, c, work, args.leases)
    results = [c.result for c in contenders]
    print()
    print(report(results, args.leases))
    return 0 if all(r.best for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
