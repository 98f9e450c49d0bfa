"""Benchmark dsas-push: 20 nodes, a 5,000-file / 200 MB site, then a 1% change.

In one run, against the same namespaced nodes (each with its own sshd):
  * dsas-push (parallel, rsync over its paramiko connection, pre-linked releases
    and only the names that differ from a node's base, atomic switch, verified);
  * "paramiko": the same with rsync over paramiko for the first push too;
  * "before": dsas-push as it was (rsync over a second, OpenSSH connection and
    ``--link-dest``), via ``--transport ssh --no-prelink``;
  * the naive loop operators write: ``for host in ...; do rsync -a SRC/ host:DIR/; done``;
  * the lower bound: bytes that must move / the throughput of one plain
    ``rsync -a`` over ssh to one node, measured first in the same run.

Goals (issue 7): the small update to 20 nodes in under 2x one node's time; the
first push within 1.5x the lower bound. Update times are medians of ``--rounds``
rounds, each a 1% change pushed to every node, then another to one node (and,
not timed, to the others, so that every node starts the next round on the same
release).

    python -m bench push --classic [--nodes=20] [--files=5000] [--mb=200] [--change=0.01]
                         [--parallel=N] [--rounds=3] [--variants=dsas-push,paramiko,before]
                         [--no-naive]

The default run (``--classic`` for the one above): the master's cost as the farm grows
(issue 21), ``--scale 5,10,20,40``: for each
N, a first push of the whole site and a 1% update to N nodes, by uftp, by fan-out
between nodes (``--transfer fanout --fanout-width 4``) and by rsync side by side
(interleaved, so all see the same background load). Per push: the
master's CPU-seconds (the dsas-push process and its children: ssh, rsync, uftp), the
master's bytes sent (the tx counter of the master namespace's bridge ``br0``, from its
``/sys/class/net/br0/statistics``: every frame the master sends to any node, headers
included; a multicast frame counts once there, however many ports the bridge floods
it to), the nodes' CPU and the other processes' CPU (marked loaded above
``bench.common.FOREIGN_LIMIT``). At 20 nodes also the old ratio: the 1% update to 20
nodes over the same update to one. Then ``model``: a fit per transport of bytes and
CPU against N, extrapolated to 1,000 and 10,000 nodes, with what limits each.

    python -m bench push --scale 5,10,20,40 [--files=5000] [--mb=200] [--change=0.01]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from lab.netns import Lab
from lab.sshfarm import MOUNT, SshFarm, build_farm
from provision.sshtrust.sshconf import (
    SshConfig,
    add_known_host,
    ensure_client_key,
    parse_key_lines,
)

CLI = [sys.executable, "-c", "import sys; from provision.cli.push import main; sys.exit(main())"]


def make_site(root: Path, files: int, total_mb: int, seed: int = 7) -> list[Path]:
    """``files`` files of random (incompressible) data, ``total_mb`` MB in all, 50 per dir."""
    rng = random.Random(seed)
    avg = total_mb * 1_000_000 // files
    paths = []
    for i in range(files):
        p = root / f"d{i // 50:03d}" / f"f{i:05d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(rng.randint(avg // 2, avg * 3 // 2)))
        paths.append(p)
    return paths


def change(paths: list[Path], fraction: float, seed: int) -> int:
    """Rewrite ``fraction`` of the files with new content of the same size; bytes changed."""
    rng = random.Random(seed)
    picked = rng.sample(paths, max(1, int(len(paths) * fraction)))
    for p in picked:
        p.write_bytes(os.urandom(p.stat().st_size))
    return sum(p.stat().st_size for p in picked)


def plain_ssh(state: Path) -> str:
    """What an operator's loop uses: ssh with its defaults, only pointed at our known_hosts."""
    return (f"ssh -o UserKnownHostsFile={state}/ssh/known_hosts -o BatchMode=yes "
            f"-i {state}/ssh/id_ed25519")


CPU = {"master": 0.0, "nodes": 0.0}  # CPU seconds of the last timed() run, by side


def node_cpu(farm: SshFarm) -> float:
    """CPU seconds the nodes' finished ssh sessions used (reaped into each sshd's cutime)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for n in farm.nodes:
        if n.sshd is not None:
            fields = Path(f"/proc/{n.sshd.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total / tick


def timed(farm: SshFarm, argv: list[str], timeout: float = 900) -> float:
    r0, c0 = resource.getrusage(resource.RUSAGE_CHILDREN), node_cpu(farm)
    t0 = time.monotonic()
    r = farm.master.run(argv, timeout=timeout, check=False)
    dt = time.monotonic() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.2)  # let the sshds reap their sessions
    CPU["master"] = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    CPU["nodes"] = node_cpu(farm) - c0
    if r.returncode != 0:
        raise RuntimeError(f"{argv[:4]}... exit {r.returncode}\n{r.stdout[-2000:]}"
                           f"\n{r.stderr[-2000:]}")
    return dt


def naive_loop(farm: SshFarm, state: Path, src: Path, nodes: list[str]) -> float:
    script = "for h in " + " ".join(nodes) + "; do rsync -a -e " + \
        f"'{plain_ssh(state)}' {src}/ root@$h:{MOUNT}/naive/ || exit 1; done"
    return timed(farm, ["sh", "-c", script])


# dsas-push as it is, and as it was before rsync rode the paramiko connection and the
# incoming release was pre-linked (OpenSSH for rsync, --link-dest against the base).
# "paramiko": rsync over the paramiko connection for the first push too (the default,
# auto, uses OpenSSH when a node has no release yet).
# "uftp": the changed files by one multicast session from the lab bridge (issue 21),
# rsync completing each node. The others pinned to rsync (auto picks uftp from 8 nodes).
VARIANTS = {"dsas-push": ["--transfer", "rsync"],
            "paramiko": ["--transfer", "rsync", "--transport", "paramiko"],
            "before": ["--transfer", "rsync", "--transport", "ssh", "--no-prelink"],
            "uftp": ["--transfer", "uftp", "--uftp-interface", "br0"]}


def dsas_push(farm: SshFarm, inv: Path, state: Path, src: Path, targets: list[str],
              parallel: int | None, variant: str = "dsas-push") -> float:
    argv = [*CLI, str(src), *targets, "-i", str(inv), "--state-dir", str(state), "--to",
            f"{MOUNT}/{variant}", "--delete", "--yes", "-q", *VARIANTS[variant]]
    if parallel:
        argv += ["--parallel", str(parallel)]
    return timed(farm, argv)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench push")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--change", type=float, default=0.01)
    ap.add_argument("--parallel", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3,
                    help="update rounds per variant (each: all nodes, then one); medians")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop")
    ap.add_argument("--scale", default="5,10,20,40",
                    help="node counts: the master's cost per push by uftp and rsync side by "
                         "side, then the model for 1,000 and 10,000 nodes (the default run)")
    ap.add_argument("--classic", action="store_true",
                    help="instead: the variants against the naive loop at --nodes (issue 7)")
    ap.add_argument("--transfers", default="uftp,agent,fanout,rsync",
                    help="with --scale: the transfers (of uftp, agent, fanout, rsync; agent: "
                         "uftp to nodes whose boot uftpd runs push-agent, no SSH login)")
    ap.add_argument("--mem-margin-mb", type=int, default=3000,
                    help="with --scale: memory left to the machine's other work; the largest "
                         "N whose nodes' copies fit in MemAvailable minus this is the last run")
    ap.add_argument("--model-from", type=Path, default=None, metavar="LOG",
                    help="print the scale report and the model again from a saved run's log")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse(argv)
    if args.model_from:
        from ._pushscale import model_from
        return model_from(args.model_from)
    work = Path(tempfile.mkdtemp(prefix="dsas-bench-push-"))
    try:
        with Lab() as lab:
            if not args.classic:
                from ._pushscale import run_scale
                return run_scale(lab, work, args)
            return run(lab, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def setup(lab: Lab, work: Path, args: argparse.Namespace) -> tuple[SshFarm, Path, Path]:
    tmpfs = max(256, args.mb * 3 + 64)
    farm = build_farm(lab, work / "farm", args.nodes, tmpfs_mib=tmpfs)
    inv = work / "cluster.yaml"
    inv.write_text(farm.inventory_yaml())
    state = work / "state"
    key = ensure_client_key(SshConfig(state))
    farm.authorized_keys.write_text(Path(f"{key}.pub").read_text())
    for n in farm.nodes:
        add_known_host(SshConfig(state), n.address, parse_key_lines(n.host_key_pub()))
    return farm, inv, state


def run(lab: Lab, work: Path, args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    farm, inv, state = setup(lab, work, args)
    src = work / "site"
    paths = make_site(src, args.files, args.mb)
    site_bytes = sum(p.stat().st_size for p in paths)
    names = [n.address for n in farm.nodes]
    n1 = farm.nodes[0]
    print(f"site: {len(paths)} files, {site_bytes / 1e6:.0f} MB; {len(names)} nodes; "
          f"set-up {time.monotonic() - t0:.1f}s", flush=True)

    # The lower bound's throughput: one plain rsync of the whole site to one node.
    probe = timed(farm, ["rsync", "-a", "-e", plain_ssh(state), f"{src}/",
                         f"root@{n1.address}:{MOUNT}/probe/"])
    n1.run(["rm", "-rf", f"{MOUNT}/probe"])
    rate = site_bytes / probe
    print(f"one plain rsync: {probe:.2f}s = {rate / 1e6:.0f} MB/s", flush=True)

    # The naive loop first (its copies are then removed to keep memory down).
    naive_first = naive_upd = naive_one = float("nan")
    upd_bytes = 0
    if not args.no_naive:
        naive_first = naive_loop(farm, state, src, names)
        upd_bytes = change(paths, args.change, seed=1)
        naive_upd = naive_loop(farm, state, src, names)
        naive_one = naive_loop(farm, state, src, names[:1])  # nothing new: a no-op pass
        for n in farm.nodes:
            n.run(["rm", "-rf", f"{MOUNT}/naive"])
        print(f"naive loop: first {naive_first:.1f}s, update {naive_upd:.1f}s", flush=True)

    # Each variant: a first push, a 1% update to every node, a 1% update to one node.
    got: dict[str, dict[str, float]] = {}
    for variant in args.variants.split(","):
        first = dsas_push(farm, inv, state, src, ["--role", "web"], args.parallel, variant)
        cpu_first = dict(CPU)
        alls: list[float] = []
        ones: list[float] = []
        cpu_all: list[dict[str, float]] = []
        cpu_one: list[dict[str, float]] = []
        for r in range(args.rounds):  # updates alternate: all nodes, then one node
            upd_bytes = change(paths, args.change, seed=2 + 2 * r)
            alls.append(dsas_push(farm, inv, state, src, ["--role", "web"], args.parallel,
                                  variant))
            cpu_all.append(dict(CPU))
            change(paths, args.change, seed=3 + 2 * r)
            ones.append(dsas_push(farm, inv, state, src, ["--host", n1.name], args.parallel,
                                  variant))
            cpu_one.append(dict(CPU))
            if r + 1 < args.rounds:  # not timed: all nodes on one release again, so the
                # next update is 1% for every node (else 2% for all but the first)
                dsas_push(farm, inv, state, src, ["--role", "web"], args.parallel, variant)
        got[variant] = {"first": first, "all": median(alls), "one": median(ones),
                        "cpu_first": cpu_first["master"] + cpu_first["nodes"],
                        "m_all": median(c["master"] for c in cpu_all),
                        "n_all": median(c["nodes"] for c in cpu_all),
                        "m_one": median(c["master"] for c in cpu_one),
                        "n_one": median(c["nodes"] for c in cpu_one)}
        for n in farm.nodes:
            n.run(["rm", "-rf", f"{MOUNT}/{variant}", f"{MOUNT}/{variant}.releases"])
        print(f"{variant}: first {first:.1f}s, update x{len(names)} "
              f"{' '.join(f'{t:.2f}' for t in alls)}s, update x1 "
              f"{' '.join(f'{t:.2f}' for t in ones)}s", flush=True)
    report(got, args, names, site_bytes, upd_bytes, rate, naive_first, naive_upd)
    print(f"(naive no-op pass to 1 node: {naive_one:.2f}s; total bench "
          f"{time.monotonic() - t0:.0f}s)")
    return 0


def report(got: dict[str, dict[str, float]], args: argparse.Namespace, names: list[str],
           site_bytes: int, upd_bytes: int, rate: float, naive_first: float,
           naive_upd: float) -> None:
    n = len(names)
    lb_first, lb_upd = site_bytes * n / rate, upd_bytes * n / rate
    print()
    print(f"{'':14}" + "".join(f"{v:>11}" for v in got) + f"{'naive loop':>11}{'lower bound':>12}"
          + "".join(f"{v + '/bound':>16}" for v in got))
    for label, key, nv, lb in (("first push", "first", naive_first, lb_first),
                               (f"{args.change:.0%} update", "all", naive_upd, lb_upd)):
        print(f"{label:14}" + "".join(f"{v[key]:10.2f}s" for v in got.values())
              + f"{nv:10.2f}s{lb:11.2f}s" + "".join(f"{v[key] / lb:15.2f}x" for v in got.values()))
    print()
    for name, v in got.items():
        print(f"{name:9}: update to {n} nodes / to 1 node: {v['all']:.2f}s / {v['one']:.2f}s = "
              f"{v['all'] / v['one']:.2f}x (goal < 2x); first push / lower bound: "
              f"{v['first'] / lb_first:.2f}x (goal <= 1.5x)")
        print(f"{'':9}  update CPU, 1 node: master {v['m_one']:.2f}s nodes {v['n_one']:.2f}s;"
              f" {n} nodes: master {v['m_all']:.2f}s ({v['m_all'] / n:.2f}s/node),"
              f" nodes {v['n_all']:.2f}s ({v['n_all'] / n:.2f}s/node); first push CPU "
              f"{v['cpu_first']:.1f}s")
        # Here the nodes' sshd, cp, find and rsync run on the master's cores: no
        # schedule can finish the update to n nodes before its CPU time / cores.
        cores = os.cpu_count() or 1
        floor = (v["m_all"] + v["n_all"]) / cores
        print(f"{'':9}  CPU floor of the update to {n} nodes: {v['m_all'] + v['n_all']:.2f} "
              f"CPU-s / {cores} cores = {floor:.2f}s (wall {v['all']:.2f}s); at that floor "
              f"the ratio would be {floor / v['one']:.2f}x")
    print(f"on {os.cpu_count()} cores shared with the other work of this machine; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
