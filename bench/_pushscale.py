"""``python -m bench push`` (the default run): the master's cost per push as the farm grows.

See the docstring of ``bench/push.py``. One farm of the largest N that fits in memory;
each N pushes to its first N nodes into its own ``--to`` (removed afterwards), uftp and
rsync interleaved at every N.

Where the figures come from:

* master CPU: the rusage of the waited dsas-push process and everything it waited for
  (ssh, rsync, uftp), plus any orphan of it this process reaps as the subreaper;
* nodes' CPU: the CPU of their sshd's reaped sessions (cutime/cstime) plus the nodes'
  uftpd (each daemonizes, so it is an orphan this process reaps, with its rusage);
* other CPU: the machine's user+nice+system time over the push minus both;
* master bytes sent: ``tx_bytes`` of ``br0`` in the master's namespace (ethernet frames,
  headers included): a multicast frame counts once, as it would on a real uplink.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from lab.netns import Lab
from lab.sshfarm import MOUNT, SshFarm, start_boot_uftpd
from provision.push import multicast

from .bootfiles import ServerCpu
from .common import children_cpu, loaded_mark, machine_cpu, other_cpu
from .push import CLI, change, make_site, node_cpu, setup

PR_SET_CHILD_SUBREAPER = 36
RATIO_N = 20  # the old goal's node count: the update to 20 nodes over the update to one
# (at the largest N run if that is fewer)
TRANSFER = {"uftp": ["--transfer", "uftp", "--uftp-interface", "br0"],
            "rsync": ["--transfer", "rsync"],
            # uftp to nodes whose boot uftpd runs push-agent (push: {agent: true}):
            # an update needs no SSH login (provision/push/agent.py)
            "agent": ["--transfer", "uftp", "--uftp-interface", "br0"],
            # the master feeds 4 nodes, each node holding the release the next 4 (fanout.py)
            "fanout": ["--transfer", "fanout", "--fanout-width", "4"]}


@dataclass
class Point:
    transfer: str
    n: int
    kind: str  # "first" or "update" (or "one": the update to one node)
    wall: float
    master_cpu: float
    nodes_cpu: float
    other: float  # % of one core
    tx: int  # master bytes sent
    payload: int  # bytes of the change (the whole site for a first push)

    @property
    def mark(self) -> str:
        return loaded_mark(self.other)


def subreaper() -> None:
    """Orphans below this process (each node's uftpd daemonizes) come to it, so their
    CPU can be read when they are reaped instead of being lost to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_orphans(keep: set[int]) -> tuple[float, float]:
    """Reap this process's dead children other than ``keep`` (the lab's own, which it
    waits for itself): CPU-s of the uftpd ones (nodes) and of the others (master side)."""
    me = str(os.getpid())
    nodes = master = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in keep:
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if ppid != me or state != "Z":
            continue
        try:
            _, _, ru = os.wait4(int(entry), 0)
        except ChildProcessError:
            continue
        if comm == "uftpd":
            nodes += ru.ru_utime + ru.ru_stime
        else:
            master += ru.ru_utime + ru.ru_stime
    return nodes, master


def tx_bytes(farm: SshFarm) -> int:
    """Bytes the master's namespace sent into the bridge (``ip netns exec`` mounts that
    namespace's own /sys)."""
    r = farm.master.run(["cat", "/sys/class/net/br0/statistics/tx_bytes"])
    return int(r.stdout)


def measured(farm: SshFarm, lab: Lab, argv: list[str], transfer: str, n: int, kind: str,
             payload: int, timeout: float = 1800,
             agents: Callable[[], float] | None = None) -> Point:
    """One push, with its costs. ``agents``: the CPU-s so far of the nodes' boot uftpd
    and all they ran (their cgroup): nodes' CPU too."""
    keep = {p.pid for p in lab.procs}
    reap_orphans(keep)
    a0 = agents() if agents else 0.0
    c0, n0, m0, b0 = children_cpu(), node_cpu(farm), machine_cpu(), tx_bytes(farm)
    t0 = time.monotonic()
    r = farm.master.run(argv, timeout=timeout, check=False)
    wall = time.monotonic() - t0
    time.sleep(0.3)  # the sshds reap their sessions; uftpd's are dead (apply_script)
    b1 = tx_bytes(farm)
    un, om = reap_orphans(keep)
    del om  # in children_cpu already, as the master's
    master = children_cpu() - c0 - un  # every waited child's, less the nodes' uftpd
    nodes = node_cpu(farm) - n0 + un + ((agents() - a0) if agents else 0.0)
    wall_all = time.monotonic() - t0
    other = other_cpu(machine_cpu() - m0, master + nodes, wall_all)
    if r.returncode != 0:
        raise RuntimeError(f"{transfer} {kind} to {n}: exit {r.returncode}\n"
                           f"{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return Point(transfer, n, kind, wall, master, nodes, other, b1 - b0, payload)


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def counts_that_fit(wanted: list[int], site_bytes: int, margin: int) -> tuple[list[int], str]:
    """The node counts whose copies (a tmpfs per node: the site, once) fit in memory."""
    avail = mem_available()
    fit = [n for n in wanted if n * site_bytes * 1.1 <= avail - margin]
    why = ""
    if len(fit) < len(wanted):
        drop = [n for n in wanted if n not in fit]
        why = (f"N={','.join(map(str, drop))} not run: {drop[0]} copies of "
               f"{site_bytes / 1e6:.0f} MB (+10%) on the nodes' tmpfs = "
               f"{drop[0] * site_bytes * 1.1 / 1e9:.1f} GB > MemAvailable "
               f"{avail / 1e9:.1f} GB - {margin / 1e9:.1f} GB left to the machine's other work")
    return fit, why


def run_scale(lab: Lab, work: Path, args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    wanted = sorted({int(x) for x in args.scale.split(",") if x})
    transfers = [t for t in args.transfers.split(",") if t]
    site_guess = args.mb * 1_000_000
    counts, why = counts_that_fit(wanted, site_guess, args.mem_margin_mb * 1_000_000)
    if why:
        print(why, flush=True)
    if not counts:
        return 1
    subreaper()
    args.nodes = max(counts)
    farm, inv, state = setup(lab, work, args)
    boot = BootUftpd(farm, inv, work) if "agent" in transfers else None
    try:
        return _scale(lab, work, args, t0, transfers, counts, why, farm, inv, state, boot)
    finally:
        if boot is not None:
            boot.close()


class BootUftpd:
    """The first N nodes run uftpd from boot with push-agent as its hook, as dsas-init
    starts it for ``push: {multicast: true, agent: true}``; ``inventory`` says so for the
    agent runs (uftp runs in the same bench receive with the same boot uftpd, whose
    hook has no order to run: no uftpd is started over SSH for them then). The uftpds
    and all they run are in one cgroup: their CPU is the nodes'.

    Only the nodes of the N being measured (``grow``) are in the group: the others'
    uftpds would receive every packet of the session, and their CPU, and the bridge's
    copy of each frame to their ports (counted as the sender's), would land on this
    machine's two cores. On a real farm that is their own machines' work, and the
    switch's. At 200 MB, 35 idle receivers made a 5-node first push take 44 s."""

    def __init__(self, farm: SshFarm, inv: Path, work: Path):
        self.farm = farm
        self.pids: list[int] = []
        self.cpu: ServerCpu | None = None
        text = inv.read_text()
        for n in farm.nodes:
            text = text.replace(f"  {n.name}: {{role: web,",
                                f"  {n.name}: {{role: web, push: {{multicast: true, "
                                f"agent: true, root: {MOUNT}}},")
        self.inventory = work / "cluster-agent.yaml"
        self.inventory.write_text(text)

    def grow(self, n: int) -> None:
        """uftpd on the first ``n`` nodes (the counts only grow)."""
        for node in self.farm.nodes[len(self.pids):n]:
            pid = start_boot_uftpd(node, self.farm.authorized_keys, multicast.DEFAULT_GROUP,
                                   multicast.DEFAULT_PORT)
            self.pids.append(pid)
            if self.cpu is None:
                self.cpu = ServerCpu("agents", pid)
            elif self.cpu.group is not None:
                (self.cpu.group / "cgroup.procs").write_text(str(pid))

    def used(self) -> float:
        return self.cpu() if self.cpu is not None else 0.0

    def close(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        if self.cpu is not None:
            self.cpu.close()  # removed once they are gone (their zombies: this process's)


def _scale(lab: Lab, work: Path, args: argparse.Namespace, t0: float, transfers: list[str],
           counts: list[int], why: str, farm: SshFarm, inv: Path, state: Path,
           boot: BootUftpd | None) -> int:
    src = work / "site"
    paths = make_site(src, args.files, args.mb)
    site_bytes = sum(p.stat().st_size for p in paths)
    print(f"site: {len(paths)} files, {site_bytes / 1e6:.0f} MB; farm of {args.nodes} nodes; "
          f"set-up {time.monotonic() - t0:.1f}s; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    points: list[Point] = []
    ratio_n = max(n for n in counts if n <= RATIO_N) if min(counts) <= RATIO_N else 0
    seed = 100
    for n in counts:
        hosts = [a for node in farm.nodes[:n] for a in ("--host", node.name)]
        if boot is not None:
            boot.grow(n)
        for transfer in transfers:
            to = f"{MOUNT}/s{n}-{transfer}"
            use = boot.inventory if transfer == "agent" and boot is not None else inv
            agents = boot.used if boot is not None else None
            base = [*CLI, str(src), "-i", str(use), "--state-dir", str(state), "--to", to,
                    "--delete", "--yes", "-q", *TRANSFER[transfer]]
            points.append(measured(farm, lab, [*base, *hosts], transfer, n, "first",
                                   site_bytes, agents=agents))
            print(line(points[-1]), flush=True)
            seed += 1
            upd = change(paths, args.change, seed)
            points.append(measured(farm, lab, [*base, *hosts], transfer, n, "update", upd,
                                   agents=agents))
            print(line(points[-1]), flush=True)
            if n == ratio_n:
                seed += 1
                one = change(paths, args.change, seed)
                points.append(measured(farm, lab, [*base, "--host", farm.nodes[0].name],
                                       transfer, n, "one", one, agents=agents))
                print(line(points[-1]), flush=True)
            for node in farm.nodes[:n]:
                node.run(["rm", "-rf", to, f"{to}.releases"], timeout=120)
    print()
    print(report(points, transfers, ratio_n))
    print()
    print(model(points, transfers))
    # the points, to print the model again from a saved log (--model-from)
    print("POINTS " + json.dumps([asdict(p) for p in points]))
    print(f"\n{why or 'every N asked for ran'}; total bench {time.monotonic() - t0:.0f}s; "
          f"on {os.cpu_count()} cores shared with the other work of this machine; "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


def line(p: Point) -> str:
    return (f"  {p.transfer:6} N={p.n:<3} {p.kind:6} wall {p.wall:7.2f}s  master CPU "
            f"{p.master_cpu:6.2f}s  sent {p.tx / 1e6:8.2f} MB ({p.tx / p.payload:5.2f}x the "
            f"change)  nodes CPU {p.nodes_cpu:6.2f}s  other CPU {p.other:5.1f}%{p.mark}")


def report(points: list[Point], transfers: list[str], ratio_n: int = RATIO_N) -> str:
    out = ["master cost per push (sent: master bytes on the wire / bytes of the change)",
           f"{'':14}{'N':>4}" + "".join(f"{t + ' CPU':>12}{t + ' sent':>12}{t + ' wall':>12}"
                                        for t in transfers) + f"{'other CPU':>11}"]
    by = {(p.transfer, p.n, p.kind): p for p in points}
    counts = sorted({p.n for p in points})
    for kind, label in (("first", "first push"), ("update", "1% update")):
        for n in counts:
            row = [by.get((t, n, kind)) for t in transfers]
            cells = "".join(f"{p.master_cpu:11.2f}s{p.tx / p.payload:11.2f}x{p.wall:11.2f}s"
                            if p else f"{'-':>12}" * 3 for p in row)
            worst = max((p.other for p in row if p), default=0.0)
            out.append(f"{label:14}{n:>4}{cells}{worst:10.1f}%{loaded_mark(worst)}")
    for t in transfers:
        ups = [by[(t, n, "update")] for n in counts if (t, n, "update") in by]
        if len(ups) >= 2:
            lo, hi = ups[0], ups[-1]
            out.append(f"{t}: update master CPU N={lo.n} -> N={hi.n}: {lo.master_cpu:.2f}s -> "
                       f"{hi.master_cpu:.2f}s ({100 * (hi.master_cpu / lo.master_cpu - 1):+.0f}%,"
                       f" goal < +10%); bytes {lo.tx / lo.payload:.2f}x -> "
                       f"{hi.tx / hi.payload:.2f}x the change (goal <= 1.1x)")
        one, upd = by.get((t, ratio_n, "one")), by.get((t, ratio_n, "update"))
        if one and upd:
            out.append(f"{t}: the old figure: 1% update to {ratio_n} nodes / to 1 node: "
                       f"{upd.wall:.2f}s / {one.wall:.2f}s = {upd.wall / one.wall:.2f}x "
                       f"(issue 7's goal < 2x){loaded_mark(max(one.other, upd.other))}")
    r = by.get(("rsync", ratio_n, "update"))
    for t in (t for t in transfers if t != "rsync"):
        u = by.get((t, ratio_n, "update"))
        if u and r:
            out.append(f"wall at {ratio_n} nodes, 1% update: {t} {u.wall:.2f}s vs rsync "
                       f"{r.wall:.2f}s (goal: {t} no worse){loaded_mark(max(u.other, r.other))}")
    return "\n".join(out)


# -- the model on paper ------------------------------------------------------------------

def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b*x: (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    if b < 0:  # a cost does not fall as nodes are added: a negative slope is the noise
        return my, 0.0
    return my - b * mx, b


LIMITS = {
    "rsync": (
        "uplink: every node costs the change again (N x the bytes), so a 10 Gb/s uplink "
        "bounds the update by N x change / 1.25 GB/s; and the master's per-node cost (one "
        "SSH login and key exchange, rsync's file list and delta search, the verification "
        "step) grows with N and is what the master's cores run out of first"),
    "uftp": (
        "the changed bytes go once (uplink flat in N), but each node still costs the master "
        "its SSH steps (login, prepare, uftpd start, apply with the fixup script, the "
        "verification): that per-node term is what grows. Multicast needs the nodes' switch "
        "ports to get the group: without IGMP snooping the group floods every port of the "
        "VLAN (fine on a push VLAN, not on a shared one); with snooping a querier must run or "
        "the switch ages the group out mid-session. NAK implosion: uftp's receivers NAK per "
        "section to the sender; at thousands of receivers one lossy link makes every section "
        "resent to all, and the sender's status rounds (one per client per file) grow with N: "
        "uftp's proxies (uftpproxyd) aggregate a subnet's responses, one level per ~100s of "
        "nodes; one session per rack or subnet keeps a slow node from pacing all"),
    "agent": (
        "the changed bytes go once, as with uftp, and an update costs the master no SSH "
        "login per node: the node's agent runs the signed order and sends one signed HTTP "
        "report, so what grows with N is uftp's per-receiver handshake and status (C, in "
        "the uftp process) and one report's signature check (~0.2 ms). A first push, and "
        "any node the history has no base for, still goes the SSH way. The same multicast "
        "limits as uftp (IGMP snooping, NAK implosion, status rounds per client), plus the "
        "report listener: one short HTTP request per node at the end of the session, at "
        "most 64 at a time"),
    "fanout": (
        "the master sends the change to its width (k) nodes only (uplink flat in N), but "
        "still makes every node's SSH steps (prepare, the push key in and out, the relay "
        "command on the parent, the verification): that per-node term is what grows. "
        "Tree depth: log_k(N) levels, each a full rsync (file list and delta search) after "
        "the one above is verified, so wall time grows with depth (k=4: 5 levels for 1,000, "
        "7 for 10,000); a slow or failed inner node delays or sends back to the master its "
        "whole subtree (its children are completed from the master: the uplink then pays "
        "for them). Node-to-node traffic must be cheap where the nodes sit (same rack or "
        "switch); a tree that follows the racks keeps it off the core"),
}


def model(points: list[Point], transfers: list[str], uplink_gbit: float = 10.0,
          cores: int = 16, sizes: tuple[int, ...] = (1000, 10000)) -> str:
    """From the measured points, per transport and kind: bytes = fixed + per-node x N and
    master CPU = fixed + per-node x N (least squares over the N that ran), extrapolated to
    ``sizes`` nodes; the time either sets on a ``uplink_gbit`` uplink and a master of
    ``cores`` cores (per-node work spread over them; the lab's figures are for its 2)."""
    out = [f"model (fits over the measured N; a master with {cores} cores and a "
           f"{uplink_gbit:g} Gb/s uplink)"]
    for t in transfers:
        for kind in ("first", "update"):
            ps = sorted((p for p in points if p.transfer == t and p.kind == kind),
                        key=lambda p: p.n)
            if len(ps) < 2:
                continue
            payload = ps[-1].payload
            ns = [float(p.n) for p in ps]
            b0, bn = fit(ns, [p.tx / p.payload for p in ps])  # in units of the change
            c0, cn = fit(ns, [p.master_cpu for p in ps])
            out.append(f"{t} {kind}: bytes = ({b0:.3f} + {bn:.4f} x N) x change; master CPU = "
                       f"{c0:.2f}s + {cn * 1000:.1f} ms x N")
            for size in sizes:
                sent = (b0 + bn * size) * payload
                cpu = c0 + cn * size
                link = sent * 8 / (uplink_gbit * 1e9)
                limit = "uplink" if link > cpu / cores else "master CPU"
                out.append(f"    N={size:>6}: {sent / 1e9:9.2f} GB sent "
                           f"({b0 + bn * size:8.1f}x the change), master CPU {cpu:8.0f}s; "
                           f"uplink {link:7.1f}s, CPU / {cores} cores {cpu / cores:7.1f}s: "
                           f"{limit} bound")
        out.append(f"  {t}: limits: {LIMITS.get(t, '')}")
    return "\n".join(out)


def model_from(log: Path) -> int:
    """Print the report and the model again from a saved run's ``POINTS`` line."""
    for text in reversed(log.read_text().splitlines()):
        if text.startswith("POINTS "):
            points = [Point(**d) for d in json.loads(text[len("POINTS "):])]
            break
    else:
        print(f"{log}: no POINTS line", file=sys.stderr)
        return 1
    transfers = list(dict.fromkeys(p.transfer for p in points))
    ones = [p.n for p in points if p.kind == "one"]
    print(report(points, transfers, ones[0] if ones else RATIO_N))
    print()
    print(model(points, transfers))
    return 0
