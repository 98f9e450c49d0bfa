"""Status page benchmark: 1,000 hosts, 50 events/s, real Chromium and SSE viewers.

A `dsas serve --only http` in a server namespace (198.18.0.1) with an inventory of
``--hosts`` hosts (198.18.0.10 up) whose state store already holds a full boot
for each; a client namespace owns every host's address, so each event is posted
from its host's own address, ``--rate`` per second, cycling through boot stages
with a failure now and then. Reported (no goals asserted):

  * time to first render of ``/`` in headless Chromium (navigation start to the
    table drawn with every host, the page's own ``dsas-first-render`` mark),
    median of ``--renders`` fresh loads, and the size of the snapshot;
  * the master's CPU (utime + stime of the serve process, from /proc) over
    ``--seconds`` with 0, 1, 10 and 50 viewers on the SSE stream (curl -N, so the
    viewers' own CPU is not the master's), and per viewer above the 0-viewer base;
  * how long a posted event takes to reach a viewer (SSE), median and max.

Each figure is printed with the CPU other processes used while it was measured
(``bench.common.cpu_span``: the machine's less this process, its waited children, the
serve, the poster and the viewers; the Chromium run reaps its browser's orphans so their
CPU counts as ours). One taken while others used more than ``FOREIGN_LIMIT`` of a core
is marked loaded (a per-viewer figure if either of its two steps was).

    python -m bench status [--hosts 1000] [--rate 50] [--seconds 15] [--renders 3]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.netns import Lab, Netns, find_tool

from .common import cpu_span, loaded_mark, process_cpu

REPO = Path(__file__).resolve().parent.parent
SRV = "198.18.0.1"
PORT = 8080
URL = f"http://{SRV}:{PORT}"
STAGES = ("dhcp", "kernel", "initramfs", "dsas.conf", "image", "configured", "ready")


def address(i: int) -> str:
    n = 10 + i
    return f"198.18.{n // 256}.{n % 256}"


def inventory(n: int) -> str:
    hosts = "\n".join(
        f"  w{i:04d}: {{role: {'web' if i % 4 else 'db'}, macs: [\"52:54:00:10:{i // 256:02x}:"
        f"{i % 256:02x}\"], addresses: {{inside: {address(i)}}}}}" for i in range(n))
    return f"""\
cluster:
  name: bench
  domain: bench.example
  master_address: {SRV}
  masters: {{primary: m1}}
  http_port: {PORT}
networks:
  inside: {{cidr: 198.18.0.0/20, gateway: 198.18.15.254, dns: [{SRV}]}}
hwtypes:
  vm: {{nics: [eth0], modules: [virtio_net]}}
images:
  tiny: {{version: "1"}}
roles:
  master: {{services: [], networks: [inside], boot: disk, hwtype: vm, bond: {{mode: none}}}}
  web: {{services: [], networks: [inside], image: tiny, hwtype: vm, bond: {{mode: none}}}}
  db: {{services: [], networks: [inside], image: tiny, hwtype: vm, bond: {{mode: none}}}}
hosts:
  m1: {{role: master, macs: ["52:54:00:0f:00:01"], addresses: {{inside: {SRV}}}}}
{hosts}
"""


def seed_events(state: Path, n: int) -> None:
    """A full boot for every host, a minute ago, straight into the store."""
    from provision.state import StateStore, schema

    StateStore(state).ensure(schema.HTTP)
    now = time.time() - 60
    rows = [(now + i * 0.01 + k, f"w{i:04d}", st, None, address(i), "tiny")
            for i in range(n) for k, st in enumerate(STAGES)]
    with sqlite3.connect(state / "state.db") as db:
        db.executemany("INSERT INTO http_events(ts, host, stage, reason, address, image)"
                       " VALUES (?, ?, ?, ?, ?, ?)", rows)


# ---------------------------------------------------------------- in the client ns

def poster(n: int, rate: float, seconds: float) -> None:
    """Post ``rate`` events/s for ``seconds``, each from its host's own address."""
    import http.client

    rnd = random.Random(1)
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < seconds:
        due = t0 + sent / rate
        if due > time.monotonic():
            time.sleep(due - time.monotonic())
        i = rnd.randrange(n)
        stage = "failed" if rnd.random() < 0.05 else rnd.choice(STAGES)
        body = {"host": f"w{i:04d}", "stage": stage}
        if stage == "failed":
            body["reason"] = f"bench failure {sent}"
        c = http.client.HTTPConnection(SRV, PORT, timeout=10, source_address=(address(i), 0))
        try:
            c.request("POST", "/api/v1/events", json.dumps(body),
                      {"Content-Type": "application/json"})
            c.getresponse().read()
        except OSError as e:
            print(f"post failed: {e}", file=sys.stderr)
        finally:
            c.close()
        sent += 1
    print(json.dumps({"sent": sent}))


def renders(count: int, profile: str) -> None:
    """Fresh loads of / in headless Chromium; print each time to first render (ms)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: Chromium's orphans come here
    out = []
    for k in range(count):
        opts = webdriver.ChromeOptions()
        opts.binary_location = find_tool("chromium") or "chromium"
        for f in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,900",
                  f"--user-data-dir={profile}-{k}"):
            opts.add_argument(f)
        d = webdriver.Chrome(options=opts, service=Service(find_tool("chromedriver")))
        try:
            d.set_page_load_timeout(60)
            d.get(URL + "/")
            deadline = time.monotonic() + 60
            ms = None
            while time.monotonic() < deadline and ms is None:
                ms = d.execute_script("const m = performance.getEntriesByName("
                                      "'dsas-first-render')[0]; return m ? m.startTime : null")
                time.sleep(0.02)
            rows = d.execute_script("return document.querySelectorAll('#hosts tbody tr').length")
            out.append({"ms": ms, "rows": rows})
        finally:
            d.quit()
    reap_orphans()
    print(json.dumps(out))


def reap_orphans(limit: float = 10) -> None:
    """Wait for the browser processes left behind, so their CPU is in our rusage."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.1)


def latency(n_events: int, timeout: float) -> None:
    """Read the SSE stream; for each host in each 'hosts' message, how old the event
    that changed it is (s): the poll interval plus the delivery."""
    import http.client

    c = http.client.HTTPConnection(SRV, PORT, timeout=timeout)
    c.request("GET", "/api/v1/status/stream")
    r = c.getresponse()
    lags: list[float] = []
    event = None
    deadline = time.monotonic() + timeout
    while len(lags) < n_events and time.monotonic() < deadline:
        line = r.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "hosts":
            doc = json.loads(line[6:])
            now = time.time()
            lags += [now - v["stage_at"] for v in doc["hosts"] if v["stage_at"]]
    print(json.dumps(lags))


# ---------------------------------------------------------------- the run

def in_ns(ns: Netns, *args: str, timeout: float) -> str:
    r = ns.run([sys.executable, "-m", "bench.status", *args], timeout=timeout, cwd=REPO,
               check=False)
    if r.returncode != 0:
        raise RuntimeError(f"bench.status {args[0]} failed: {r.stderr[-2000:]}")
    return r.stdout.strip().splitlines()[-1]


def run(args: argparse.Namespace) -> int:
    for tool in ("chromium", "chromedriver", "curl", "ip"):
        if find_tool(tool) is None:
            print(f"missing tool {tool} (make deps)", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory(prefix="dsas-bench-status-") as tmp_s, Lab() as lab:
        tmp = Path(tmp_s)
        srv, cli = lab.netns("bss"), lab.netns("bsc")
        srv_if, cli_if = lab.veth(srv, cli, f"{SRV}/20", f"{address(0)}/20")
        batch = "".join(f"addr add {address(i)}/20 dev {cli_if}\n" for i in range(1, args.hosts))
        (tmp / "addrs").write_text(batch)
        subprocess.run(["ip", "-n", cli.name, "-batch", str(tmp / "addrs")], check=True,
                       timeout=120)
        (tmp / "boot").mkdir()
        (tmp / "inv.yaml").write_text(inventory(args.hosts))
        seed_events(tmp / "state", args.hosts)
        log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - the child keeps it
        serve = srv.popen([str(REPO / ".venv/bin/dsas"), "serve", "-i", str(tmp / "inv.yaml"),
                           "--only", "http", "--interface", srv_if, "--boot-root",
                           str(tmp / "boot"), "--state-dir", str(tmp / "state")],
                          stdout=log, stderr=subprocess.STDOUT)
        try:
            srv.wait_port(PORT, "tcp", timeout=60)
        except TimeoutError:
            print((tmp / "serve.log").read_text()[-3000:], file=sys.stderr)
            raise
        with cpu_span(serve.pid) as span:
            size = cli.run(["curl", "-sS", "-o", "/dev/null", "-w",
                            "%{size_download} %{time_total}", f"{URL}/api/v1/status"],
                           timeout=60).stdout.split()
        print(f"hosts {args.hosts}; GET /api/v1/status: {int(size[0]) / 1024:.0f} KiB in "
              f"{float(size[1]) * 1000:.0f} ms (curl, idle master); other CPU "
              f"{span.other:.1f}%{span.mark}")

        post = cli.popen([sys.executable, "-m", "bench.status", "poster", str(args.hosts),
                          str(args.rate), str(args.seconds * 5 + 60)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(2)  # the poster is running (a warm-up, not a synchronisation)
        with cpu_span(serve.pid, post.pid) as span:
            firsts = json.loads(in_ns(cli, "renders", str(args.renders),
                                      str(tmp / "chromium"), timeout=300))
        ms = [f["ms"] for f in firsts if f["ms"] is not None]
        print(f"time to first render of / with {args.rate:g} events/s arriving: median "
              f"{statistics.median(ms):.0f} ms, max {max(ms):.0f} ms over {len(ms)} loads "
              f"(rows drawn: {firsts[0]['rows']}); other CPU {span.other:.1f}%{span.mark}")
        viewer_steps(lab, cli, [serve.pid, post.pid], serve.pid, args)
        with cpu_span(serve.pid, post.pid) as span:
            lags = json.loads(in_ns(cli, "latency", "500", "60", timeout=120))
        if lags:
            print(f"event -> viewer (SSE) over {len(lags)} host updates: median "
                  f"{statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms; "
                  f"other CPU {span.other:.1f}%{span.mark}")
        lab.stop(post)
        lab.stop(serve)
    return 0


def viewer_steps(lab: Lab, cli: Netns, ours: list[int], serve: int,
                 args: argparse.Namespace) -> None:
    """The master's CPU with 0, 1, 10 and 50 SSE viewers, each with the other CPU."""
    base = None
    for viewers in (0, 1, 10, 50):
        streams = [cli.popen(["curl", "-sS", "-N", "-o", "/dev/null",
                              f"{URL}/api/v1/status/stream"]) for _ in range(viewers)]
        time.sleep(1.0)  # connected and past their snapshot (settling, not sync)
        with cpu_span(*ours, *(s.pid for s in streams)) as span:
            c0, t0 = process_cpu(serve), time.monotonic()
            time.sleep(args.seconds)
            cpu = (process_cpu(serve) - c0) / (time.monotonic() - t0) * 100
        for s in streams:
            lab.stop(s)
        if base is None:
            base = (cpu, span.other)
            print(f"master CPU with 0 viewers: {cpu:.1f}% of a core "
                  f"(taking {args.rate:g} events/s); other CPU {span.other:.1f}%{span.mark}")
        else:
            print(f"master CPU with {viewers:>2} viewers: {cpu:.1f}% of a core; "
                  f"{(cpu - base[0]) / viewers:.2f}% per viewer above the base; other CPU "
                  f"{span.other:.1f}%{loaded_mark(max(span.other, base[1]))}")


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("poster", "renders", "latency"):
        if argv[0] == "poster":
            poster(int(argv[1]), float(argv[2]), float(argv[3]))
        elif argv[0] == "renders":
            renders(int(argv[1]), argv[2])
        else:
            latency(int(argv[1]), float(argv[2]))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench status")
    p.add_argument("--hosts", type=int, default=1000)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--renders", type=int, default=3)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
