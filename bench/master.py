"""`python -m bench master`: the master pair (issue 18) — takeover time and the cost of
replication.

Takeover: two `dsas serve` (each with its keepalived) and one busybox udhcpc client on a
lab bridge; the primary is killed with SIGKILL and the bench times, from the kill, the
first DHCP ACK the client gets from the VIP (a renewal, SIGUSR1 every 0.1 s) and the
first HTTP answer from the VIP (curl every 0.1 s), and checks that the client kept its
address (leases lost). Anchors: Kea HA's defaults about 60 s (max-response-delay),
keepalived VRRP about 3.6 s; the goal is <= 5 s with no lease lost.

Replication cost: perfdhcp (as relay, 198.18.0.200) against a single master and
against the pair's VIP, at fixed rates, in the same run, interleaved rate by rate (each
step on fresh servers and an empty store): DORA/s completed, loss, and the CPU other
processes used meanwhile (beside each figure, as bench dhcp does: a step
on a busy machine says little).

``--advert-int``: the masters' VRRP advert interval (takeover is ~3 x it plus a skew).

Mirror (``--mirror-mb``, ``--only-mirror``): an image version of that many MiB copied
from one master's Mirror to another's over the pair channel (HMAC frames, 1 MiB base64
pieces, sha256-verified), in-process on loopback (127.0.0.1 -> 127.0.0.2): MiB/s, and
the cost of one poll when nothing changed (the manifests of both sides, hashes cached).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lab.netns import Lab, Netns, find_tool

from .common import FOREIGN_LIMIT, children_cpu, loaded_mark, machine_cpu, process_cpu

DSAS = str(Path(sys.executable).with_name("dsas"))
VIP = "198.18.0.3"
CLIENT_IP = "198.18.0.200"
INVENTORY = """\
cluster:
  name: bench
  domain: bench.example
  master_address: {vip}
  masters: {masters}
networks:
  lan: {{cidr: 198.18.0.0/16, gateway: 198.18.0.254, dns: [{vip}]}}
hwtypes:
  vm: {{nics: [eth0]}}
images:
  base: {{version: v1}}
roles:
  master: {{services: [], networks: [lan], image: base, hwtype: vm, boot: disk,
           bond: {{mode: none}}}}
hosts:
  m01: {{role: master, macs: ["52:54:00:00:00:01"], addresses: {{lan: 198.18.0.1}}}}
  m02: {{role: master, macs: ["52:54:00:00:00:02"], addresses: {{lan: 198.18.0.2}}}}
"""
PAIR = "{primary: m01, secondary: m02, pair: {vrid: 62, peer_timeout: 0.5}}"
SINGLE = "{primary: m01}"


def _tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise SystemExit(f"bench master: missing tool {name} (run `make deps`)")
    return path


def _serve(ns: Netns, iface: str, work: Path, name: str, inv: Path, *extra: str) -> Any:
    boot = work / "boot"
    boot.mkdir(parents=True, exist_ok=True)
    for loader in ("undionly.kpxe", "ipxe.efi", "pxelinux.0"):
        (boot / loader).touch()
    return ns.popen([DSAS, "serve", "--only", "dhcp,http", "--http-port", "8080",
                     "--interface", iface, "--inventory", str(inv), "--state-dir",
                     str(work / "state"), "--boot-root", str(boot), "--discovery",
                     "--discovery-rate", "0", *extra],
                    stdout=open(work / "serve.log", "a"), stderr=subprocess.STDOUT)


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench master: timed out waiting for {what}")
        time.sleep(0.05)


def _holds(ns: Netns, iface: str) -> bool:
    return f" {VIP}/" in ns.run(["ip", "-o", "-4", "addr", "show", "dev", iface]).stdout


def _status(work: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((work / "state" / "master-status.json").read_text()))
    except (OSError, ValueError):
        return {}


class Setup:
    """The benchmark's lab: a bridge namespace, the master and the clients."""

    def __init__(self, lab: Lab, tmp: Path, advert_int: float = 1.0) -> None:
        self.lab, self.tmp = lab, tmp
        self.br = lab.netns("bmbr")
        lab.bridge(self.br)
        self.ns: dict[str, Netns] = {}
        self.ifs: dict[str, str] = {}
        for name, addr in (("m01", "198.18.0.1"), ("m02", "198.18.0.2"), ("cli", None)):
            ns = lab.netns(f"bm{name}")
            port, iface = lab.veth(self.br, ns, None, f"{addr}/16" if addr else None)
            self.br.run(["ip", "link", "set", port, "master", "br0"])
            self.ns[name], self.ifs[name] = ns, iface
        self.pair_inv = tmp / "pair.yaml"
        self.pair_inv.write_text(INVENTORY.format(vip=VIP, masters=PAIR.replace(
            "peer_timeout: 0.5}", f"peer_timeout: 0.5, advert_int: {advert_int:g}}}")))
        self.single_inv = tmp / "single.yaml"
        self.single_inv.write_text(INVENTORY.format(vip="198.18.0.1", masters=SINGLE))
        subprocess.run([DSAS, "master", "key", "--inventory", str(self.pair_inv),
                        "--state-dir", str(tmp / "m01" / "state")], check=True,
                       capture_output=True, timeout=60)
        key = (tmp / "m01" / "state" / "master-pair.key").read_bytes()
        (tmp / "m02" / "state").mkdir(parents=True)
        k2 = tmp / "m02" / "state" / "master-pair.key"
        k2.write_bytes(key)
        os.chmod(k2, 0o600)

    def start_pair(self) -> dict[str, Any]:
        procs = {}
        for name, wait in (("m01", "0.5"), ("m02", "10")):
            procs[name] = _serve(self.ns[name], self.ifs[name], self.tmp / name, name,
                                 self.pair_inv, "--master", name, "--resync-wait", wait)
            if name == "m01":
                _wait(lambda: _holds(self.ns["m01"], self.ifs["m01"]), 40, "the primary's VIP")
        _wait(lambda: _status(self.tmp / "m01").get("in_sync"), 40, "the pair in sync")
        return procs


def takeover(s: Setup) -> dict[str, Any]:
    procs = s.start_pair()
    cli, cif = s.ns["cli"], s.ifs["cli"]
    out, script = s.tmp / "udhcpc.out", s.tmp / "udhcpc.sh"
    script.write_text("#!/bin/sh\n"
                      'case "$1" in bound|renew) ip addr flush dev "$interface"; '
                      'ip addr add "$ip/$mask" dev "$interface";; esac\n'
                      f'echo "$1 $ip" >> {out}\n')
    script.chmod(0o755)
    udhcpc = cli.popen([_tool("udhcpc"), "-f", "-i", cif, "-s", str(script), "-t", "20",
                        "-T", "1", "-A", "1"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def events() -> list[list[str]]:
        return [line.split() for line in out.read_text().splitlines()] if out.exists() else []

    _wait(lambda: any(e[0] == "bound" for e in events()), 40, "the client's lease")
    before = [e for e in events() if e[0] == "bound"][-1][1]
    got: dict[str, float] = {}

    def http_probe(t0: float) -> None:
        while time.monotonic() - t0 < 30:
            r = cli.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                         "0.3", f"http://{VIP}:8080/"], check=False)
            if r.stdout.strip() not in ("", "000"):
                got["http"] = time.monotonic() - t0
                return
            time.sleep(0.1)

    s.lab.stop(udhcpc)  # the address stays; the probe renews it from now on
    mac = cli.run(["cat", f"/sys/class/net/{cif}/address"]).stdout.strip()
    go = s.tmp / "go"
    dhcp = cli.popen([sys.executable, "-m", "bench.master_probe", cif, mac, before, VIP, "30",
                      str(go)],
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                     cwd=str(Path(__file__).resolve().parent.parent))
    time.sleep(1.5)  # the probe is up, waiting for GO
    os.kill(procs["m01"].pid, signal.SIGKILL)
    t0, wall0 = time.monotonic(), time.time()
    go.touch()
    probe = threading.Thread(target=http_probe, args=(t0,), daemon=True)
    probe.start()
    after = None
    outs, _ = dhcp.communicate(timeout=40)
    try:
        doc = json.loads(outs.strip().splitlines()[-1])
    except (ValueError, IndexError):
        doc = {"s": None}
    if doc.get("s") is not None and doc.get("kind") == "ACK":
        got["dhcp"] = float(doc["s"])  # from GO (just after the kill) to the ACK
        after = doc["ip"]
    probe.join(timeout=35)
    for p in procs.values():
        s.lab.stop(p)
    steps = _steps(s.tmp / "m02", wall0)
    return {"steps": steps, "dhcp_ack_s": got.get("dhcp"), "http_s": got.get("http"),
            "before": before,
            "after": after, "leases_lost": int(after != before)}


def dora(ns: Netns, rate: int, seconds: int, pids: list[int]) -> dict[str, float]:
    cpu0 = [process_cpu(p) for p in pids]
    client0, total0 = children_cpu(), machine_cpu()
    t0 = time.monotonic()
    r = ns.run([_tool("perfdhcp"), "-4", "-l", CLIENT_IP, "-r", str(rate), "-p", str(seconds),
                "-R", "100000", "-d", "2", "-W", "1500000", VIP_OR[0]], timeout=seconds + 30,
               check=False)
    wall = time.monotonic() - t0
    servers = sum(process_cpu(p) - c for p, c in zip(pids, cpu0, strict=True))
    client = children_cpu() - client0
    other = max(0.0, machine_cpu() - total0 - servers - client)
    text = r.stdout + r.stderr
    sent = [int(x) for x in re.findall(r"sent packets: (\d+)", text)]
    received = [int(x) for x in re.findall(r"received packets: (\d+)", text)]
    if len(sent) < 2 or len(received) < 2:
        return {"rate": rate, "dora_s": 0.0, "loss": 1.0, "server_cpu": servers,
                "other_cpu_pct": 100 * other / wall}
    return {"rate": rate, "dora_s": received[1] / seconds,
            "loss": max(0, sent[0] - received[1]) / max(1, sent[0]), "server_cpu": servers,
            "other_cpu_pct": 100 * other / wall}


VIP_OR = [VIP]


def _fresh(s: Setup, *names: str) -> None:
    """Drop the lease stores, so every step starts from an empty pool."""
    for d in names:
        for f in ("state.db", "state.db-wal", "state.db-shm", "master-status.json"):
            (s.tmp / d / "state" / f).unlink(missing_ok=True)


def replication_cost(s: Setup, rates: list[int],
                     seconds: int) -> list[tuple[str, dict[str, float]]]:
    """The single master and the pair, interleaved rate by rate, each step on a fresh
    store and fresh servers (a step's leases would otherwise fill the next one's pool)."""
    cli, cif = s.ns["cli"], s.ifs["cli"]
    cli.run(["ip", "addr", "flush", "dev", cif])
    cli.run(["ip", "addr", "add", f"{CLIENT_IP}/16", "dev", cif])
    rows: list[tuple[str, dict[str, float]]] = []
    single_dir = s.tmp / "single"
    for rate in rates:
        _fresh(s, "single")
        (single_dir / "serve.log").unlink(missing_ok=True)
        proc = _serve(s.ns["m01"], s.ifs["m01"], single_dir, "single", s.single_inv)
        _wait(lambda: "dhcp listening" in (single_dir / "serve.log").read_text(), 30,
              "single")
        VIP_OR[0] = "198.18.0.1"
        rows.append(("single", dora(cli, rate, seconds, [proc.pid])))
        s.lab.stop(proc)
        _fresh(s, "m01", "m02")
        procs = s.start_pair()
        VIP_OR[0] = VIP
        rows.append(("pair", dora(cli, rate, seconds, [p.pid for p in procs.values()])))
        for p in procs.values():
            s.lab.stop(p)
    return rows


def mirror_rate(mib: int, tmp: Path) -> dict[str, float]:
    """Copy ``mib`` MiB through the mirror between two in-process masters on loopback."""
    import socket as sk
    from dataclasses import replace
    from ipaddress import IPv4Address

    from provision.ha.mirror import Mirror, trees
    from provision.ha.pair import Me, Replicator, resolve
    from provision.inventory import loads
    from provision.observability.metrics import Metrics
    from provision.state import StateStore

    with sk.socket() as s0:
        s0.bind(("127.0.0.1", 0))
        port = int(s0.getsockname()[1])
    inv = loads(INVENTORY.format(vip=VIP, masters=PAIR), "bench.yaml")
    sides = []
    for name, mine, peer in (("m01", "127.0.0.1", "127.0.0.2"),
                             ("m02", "127.0.0.2", "127.0.0.1")):
        m0 = resolve(inv, name)
        me = Me(m0.side, m0.name, IPv4Address(mine), m0.peer_side, m0.peer_name,
                IPv4Address(peer), m0.vip, m0.network, replace(m0.pair, port=port))
        d = tmp / f"mirror-{name}"
        (d / "state").mkdir(parents=True)
        (d / "cluster.yaml").write_text("cluster: {}\n")
        store = StateStore(d / "state")
        rep = Replicator(me, KEY, store, Metrics(), d / "state")
        rep.mirror = Mirror(me, KEY, trees(d / "cluster.yaml", d / "boot", d / "state"),
                            Metrics(), functools.partial(getattr, rep, "active"),
                            functools.partial(getattr, rep, "peer_status"))
        rep.start()
        sides.append((d, store, rep))
    (da, _, ra), (_, _, rb) = sides
    ra.active = True
    img = da / "boot" / "images" / "base" / "v1"
    img.mkdir(parents=True)
    with open(img / "rootfs.tar.gz", "wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    try:
        c0, t0 = time.process_time(), time.monotonic()
        ok = rb.mirror.sync()
        t1, c1 = time.monotonic(), time.process_time()
        rb.mirror.sync()
        t2 = time.monotonic()
    finally:
        for _, store, rep in sides:
            rep.mirror.stop()
            rep.stop()
            store.close()
    return {"ok": float(ok), "seconds": t1 - t0, "mib_s": mib / (t1 - t0),
            "cpu_s": c1 - c0, "poll_ms": 1000 * (t2 - t1)}


KEY = bytes(range(32))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench master")
    ap.add_argument("--rates", default="1000,2000,4000,6000",
                    help="DORA/s steps of the cost ladder, each on the single master, "
                         "then on the pair")
    ap.add_argument("--step-seconds", type=int, default=4)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--mirror-mb", type=int, default=64)
    ap.add_argument("--only-mirror", action="store_true")
    ap.add_argument("--advert-int", type=float, default=1.0,
                    help="the masters' VRRP advert interval (pair.advert_int), s")
    args = ap.parse_args([a for a in argv if a != "master"])
    with tempfile.TemporaryDirectory(prefix="dsas-bench-mirror-", dir="/var/tmp") as tmp:
        m = mirror_rate(args.mirror_mb, Path(tmp))
        print(f"mirror: {args.mirror_mb} MiB image version to the standby in "
              f"{m['seconds']:.2f} s = {m['mib_s']:.1f} MiB/s (verified: {bool(m['ok'])}), "
              f"{m['cpu_s']:.2f} CPU-s of this process (both ends); a poll with nothing "
              f"changed {m['poll_ms']:.1f} ms")
    if args.only_mirror:
        return 0 if m["ok"] else 1
    for name in ("keepalived", "udhcpc", "curl") + (() if args.skip_cost else ("perfdhcp",)):
        _tool(name)
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="dsas-bench-master-",
                                                   dir="/var/tmp") as tmp:
        s = Setup(lab, Path(tmp), args.advert_int)
        t = takeover(s)
        print(f"takeover (advert_int {args.advert_int:g} s) after SIGKILL of the primary: "
              f"first DHCP ACK from the VIP "
              f"{_s(t['dhcp_ack_s'])}, first HTTP answer {_s(t['http_s'])}; client address "
              f"{t['before']} -> {t['after']}, leases lost {t['leases_lost']} "
              f"(anchors: Kea HA defaults ~60 s, keepalived VRRP ~3.6 s; goal <= 5 s, 0 lost); "
              f"{t['steps']}")
        if not args.skip_cost:
            rows = replication_cost(s, [int(r) for r in args.rates.split(",")],
                                    args.step_seconds)
            print(f"{'server':8} {'rate':>6} {'DORA/s':>8} {'loss':>7} {'server CPU-s':>12} "
                  f"{'other CPU':>10}")
            by_rate: dict[int, dict[str, float]] = {}
            loaded: set[int] = set()  # rates with a step under foreign load: no ratio
            for name, r in rows:
                by_rate.setdefault(int(r["rate"]), {})[name] = r["dora_s"]
                if r["other_cpu_pct"] > FOREIGN_LIMIT:
                    loaded.add(int(r["rate"]))
                print(f"{name:8} {r['rate']:>6} {r['dora_s']:>8.0f} {100 * r['loss']:>6.2f}% "
                      f"{r['server_cpu']:>12.2f} {r['other_cpu_pct']:>9.1f}%"
                      f"{loaded_mark(r['other_cpu_pct'])}")
            for rate, d in sorted(by_rate.items()):
                if d.get("single"):
                    ratio = "-  (loaded: not a result)" if rate in loaded else \
                        f"{d.get('pair', 0) / d['single']:.2f}"
                    print(f"rate {rate}: pair/single DORA/s = {ratio}")
    return 0 if t["leases_lost"] == 0 and t["dhcp_ack_s"] is not None else 1


def _steps(work: Path, wall0: float) -> str:
    """When the secondary's keepalived and serve saw the takeover, from the kill."""
    marks = [("keepalived/state/keepalived.log", "Entering MASTER STATE", "VRRP master"),
             ("serve.log", "holding the VIP", "serve active")]
    out = []
    for f, needle, label in marks:
        path = work / ("state/keepalived.log" if f.startswith("keepalived") else f)
        try:
            lines = [x for x in path.read_text(errors="replace").splitlines() if needle in x]
        except OSError:
            continue
        if not lines:
            continue
        stamp = lines[-1]
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})", stamp)
        if m:  # the serve's log: millisecond stamps
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + \
                int(m.group(2)) / 1000
            out.append(f"{label} +{t - wall0:.2f} s")
        else:
            out.append(f"{label} (seen)")
    return ", ".join(out)


def _s(v: float | None) -> str:
    return "never (30 s)" if v is None else f"{v:.2f} s"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
