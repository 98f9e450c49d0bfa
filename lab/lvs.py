"""The load balancer lab (issue 16): the inventory, the client's request loop, a
direct-kernel boot of a guest, and the moves the tests and `python -m bench lvs`
share (edit the inventory, reboot a guest as another role, fail a director over).

    master netns  br0 198.18.0.1/22 (inside, untagged): `dsas serve` (DHCP, HTTP)
                  vlan2 (userspace 802.1Q port) + br2 198.19.2.1/24 (outside)
    client netns  198.19.2.50/24 on br2
    lvs1, lvs2    the `web` or `tiny-lvs` image (keepalived, ipvsadm, IPVS modules,
                  sshd), role lvs: bond0 inside, bond0.2 outside; VRRP pair, NAT
    w1, w2        the tiny (or tiny-lvs) image, role web: busybox httpd answering its
                  own name
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provision.inventory import load
from provision.render.engine import kernel_cmdline
from provision.sshtrust.sshconf import SshConfig, ensure_client_key

from .clone import TEST_BOOT_ROOT, build_images
from .cluster import LabCluster
from .netns import Netns
from .qemu import Guest, GuestSpec, Shell
from .testing import Lab, require_root, require_tool

DSAS = str(Path(sys.executable).with_name("dsas"))

VIP = "198.19.2.10"
CLIENT = "198.19.2.50"
WEB = ("w1", "w2")

# What every QEMU LVS lab inventory shares (here, lab.assign, lab.rollout): the
# cluster and its networks, the master and the two directors, the VRRP pair and www.
INV_HEAD = """\
cluster:
  name: lab
  domain: lab.example
  master_address: 198.18.0.1
  masters: {primary: m01}
  http_port: 80
  kernel_args: console=ttyS0 panic=5 dsas.shell=hvc0
networks:
  inside: {cidr: 198.18.0.0/22, dns: [198.18.0.1]}
  outside: {cidr: 198.19.2.0/24, gateway: 198.19.2.1, vlan: 2}
hwtypes:
  vm: {nics: [eth0, eth1], modules: [virtio_net]}
"""
DIRECTOR_HOSTS = """\
hosts:
  m01: {role: master, macs: ["52:54:00:18:00:01", "52:54:00:18:01:01"],
        addresses: {inside: 198.18.0.1}}
  lvs1: {role: lvs, macs: ["52:54:00:18:00:61", "52:54:00:18:01:61"],
         addresses: {inside: 198.18.0.61, outside: 198.19.2.61}}
  lvs2: {role: lvs, macs: ["52:54:00:18:00:62", "52:54:00:18:01:62"],
         addresses: {inside: 198.18.0.62, outside: 198.19.2.62}}
"""
INV_TAIL = """\
lvs_pairs:
  lb:
    hosts: {lvs1: active, lvs2: backup}
    virtual_router_id: 51
    advert_int: 1
    gateway_vips: {inside: 198.18.0.254}
virtual_services:
  www:
    vip: 198.19.2.10
    port: 80
    scheduler: rr
    forwarding: NAT
    role: web
    check: {type: HTTP_GET, path: /, connect_timeout: 1, retry: 1, delay_before_retry: 1}
"""

INVENTORY = INV_HEAD + """\
images:
  tiny: {version: current}
  web: {version: current}
services:
  master: {units: [dsas-serve]}
  web: {units: [httpd]}
  lvs: {units: [keepalived]}
roles:
  master: {services: [master], networks: [inside], boot: disk, hwtype: vm}
  lvs:
    services: [lvs]
    networks: [inside, outside]
    image: web
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
  web:
    services: [web]
    networks: [inside]
    image: tiny
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
""" + DIRECTOR_HOSTS + """\
  w1: {role: web, macs: ["52:54:00:18:00:71", "52:54:00:18:01:71"],
       addresses: {inside: 198.18.1.71}}
  w2: {role: web, macs: ["52:54:00:18:00:72", "52:54:00:18:01:72"],
       addresses: {inside: 198.18.1.72}}
""" + INV_TAIL

# Runs in the client namespace: a GET http://VIP/ starts every PERIOD s for SECONDS s
# (or COUNT requests), each in its own thread (a request that waits out its 0.8 s
# timeout does not delay the next, so a gap is seen to within PERIOD), one line per
# request: "<monotonic start t> ok <body>" or "<t> fail <why>". With a fifth argument
# "seq", one request at a time (a client that waits for each answer: it never offers
# a starved TCG web server more than it can take). "timeout=S": each request's
# timeout (default 0.8 s).
CLIENT_LOOP = r"""
import http.client, sys, threading, time
vip, count, seconds, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
seq = "seq" in sys.argv[5:]
wait = next((float(a[8:]) for a in sys.argv[5:] if a.startswith("timeout=")), 0.8)
lock = threading.Lock()
def one(t):
    try:
        c = http.client.HTTPConnection(vip, 80, timeout=wait)
        c.request("GET", "/", headers={"Connection": "close"})
        body = c.getresponse().read().decode(errors="replace").strip()
        c.close()
        line = f"{t:.3f} ok {body}"
    except Exception as e:
        line = f"{t:.3f} fail {type(e).__name__}"
    with lock:
        print(line, flush=True)
start = time.monotonic()
end = start + seconds
threads = []
n = 0
while n < count and time.monotonic() < end:
    t = time.monotonic()
    th = threading.Thread(target=one, args=(t,))
    th.start()
    if seq:
        th.join(5)
    threads.append(th)
    n += 1
    threads = [x for x in threads if x.is_alive()]
    time.sleep(max(0.0, start + n * period - time.monotonic()))
for th in threads:
    th.join(5)
"""


class Loop:
    """The client's loop on the VIP, in the background: one line per request (CLIENT_LOOP,
    a request every 0.1 s, each with its ``timeout``) for at most ``seconds``."""

    def __init__(self, c: LabCluster, client: Netns, name: str, seconds: float = 1500,
                 timeout: float = 0.8):
        self.c, self.path = c, c.workdir / f"{name}.txt"
        self.f = self.path.open("w")
        self.proc = client.popen([sys.executable, "-c", CLIENT_LOOP, VIP, "1000000",
                                  str(seconds), "0.1", f"timeout={timeout:g}"], stdout=self.f,
                                 stderr=subprocess.DEVNULL, text=True)

    def rows(self) -> list[tuple[float, bool, str]]:
        return client_rows(self.path)

    def stop(self) -> list[tuple[float, bool, str]]:
        self.c.lab.stop(self.proc)
        self.f.close()
        return self.rows()


class PowerCycler:
    """Netbooted guests that reboot themselves (`systemctl reboot`, as `dsas rollout`
    has them do): QEMU runs them with -no-reboot, so a reboot ends the process; this
    thread (a poll a second) starts the same machine again (NICs, taps, kernel and
    initramfs), which netboots what the master serves it now, as a machine's firmware
    would. ``boots[name]``: the restarts; each earlier boot's console is kept as
    ``NAME.boot-N.log``. Bounded: at most ``limit`` restarts a guest, and it stops on
    leaving the ``with`` (before the lab stops the guests)."""

    def __init__(self, guests: dict[str, Guest], names: tuple[str, ...], limit: int = 12):
        self.guests, self.names, self.limit = guests, names, limit
        self.boots = {n: 0 for n in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power-cycler", daemon=True)

    def __enter__(self) -> PowerCycler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for n in self.names:
                g = self.guests[n]
                if g.proc is None or g.proc.poll() is None or self.boots[n] >= self.limit:
                    continue
                self.boots[n] += 1
                keep = g.workdir / f"{n}.boot-{self.boots[n]}.log"
                keep.write_text(g.console())
                g.start()


def requests(client: Netns, count: int, period: float = 0.05,
             seconds: float = 120) -> list[tuple[float, bool, str]]:
    out = client.run([sys.executable, "-c", CLIENT_LOOP, VIP, str(count), str(seconds),
                      str(period), "seq"], timeout=seconds + 30, check=False)
    rows = []
    for line in out.stdout.splitlines():
        t, status, rest = (line.split(" ", 2) + [""])[:3]
        rows.append((float(t), status == "ok", rest))
    return sorted(rows)


def wait_until(ok: Callable[[], object], timeout: float, what: str, step: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        time.sleep(step)


def tiny_directors(text: str) -> str:
    """The inventory with the directors on the tiny-lvs image (the tiny image with
    Debian's keepalived, ipvsadm and sshd): `python -m bench lvsboot` measured it 7x
    faster to ready than the web image under TCG (270 s against 1,883 s at load 22)."""
    text = text.replace("  web: {version: current}\n",
                        "  web: {version: current}\n  tiny-lvs: {version: current}\n")
    return text.replace("    services: [lvs]\n    networks: [inside, outside]\n    image: web\n",
                        "    services: [lvs]\n    networks: [inside, outside]\n"
                        "    image: tiny-lvs\n")



def boot(c: LabCluster, name: str, memory: int) -> Guest:
    inv = c.inventory
    host = inv.hosts[name]
    img = c.boot_root / "images" / (host.image or "") / "current"
    taps = [c.lab.tap(c.master, "br0") for _ in host.macs]
    spec = GuestSpec(name, list(host.macs), memory_mib=memory, kernel=img / "vmlinuz",
                     initrd=img / "initrd.img", append=kernel_cmdline(inv, host), shell=True)
    g = Guest(c.lab, c.master, spec, taps, c.workdir / "guests")
    c.guests[name] = g
    g.start()
    return g




def wait_sshd(c: LabCluster, name: str, timeout: float = 900) -> None:
    """Until ``name``'s sshd takes a TCP connection, from the master (bounded): it may
    start after the host's ready report, and ssh.service makes host keys, which takes
    minutes in TCG under load."""
    addr = str(c.inventory.hosts[name].primary_interface.address)
    wait_until(lambda: c.master.run(["bash", "-c", f"exec 3<>/dev/tcp/{addr}/22"],
                                    check=False).returncode == 0, timeout,
               f"sshd on {name}")


def trust(c: LabCluster, state: Path, name: str) -> None:
    """Trust a director's SSH host key (scanned; a netbooted host makes new keys at
    every boot, and the scan replaces the old entry)."""
    wait_sshd(c, name)
    # ssh-keyscan gives sshd 10 s to answer; a TCG guest under load can take longer for its
    # first key exchanges: a few tries (bounded), each one a real scan
    for _ in range(6):
        r = c.master.run([DSAS, "trust", name, "-y", "-i", str(c.inventory_path),
                          "--state-dir", str(state)], check=False, timeout=60)
        if r.returncode == 0 or "no host key answered" not in r.stderr:
            break
        time.sleep(10)
    assert r.returncode == 0, r.stdout + r.stderr


def edit_inventory(c: LabCluster, state: Path, change: Callable[[str], str]) -> None:
    """Change the inventory as the edit commands do (validated, locked, atomic, in the
    history) and reload the running serve; c.inventory follows."""
    from provision.inventory.commit import commit, read
    from provision.services.servepid import notify_serve
    from provision.state.inventory import sha256

    snap = read(c.inventory_path)
    new = change(snap.text)
    assert new != snap.text
    commit(c.inventory_path, snap, new, "test: edit lvs_pairs", state)
    n = notify_serve(state, c.inventory_path, sha256(new.encode()), timeout=20)
    assert n.reloaded, n.message
    c.inventory = load(c.inventory_path)


def wait_ready_since(c: LabCluster, name: str, t_wall: float, timeout: float) -> float:
    """Wait (bounded) for a 'ready' the master recorded for ``name`` after ``t_wall``
    (wall clock); returns the seconds from t_wall to it. A 'failed' stage raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in c.stage_history(t_wall).get(name, []):
            if ev.stage == "failed":
                raise AssertionError(f"{name} failed: {ev.detail}\n"
                                     f"{c.guests[name].console()[-3000:]}")
            if ev.stage == "ready":
                return ev.ts - t_wall
        time.sleep(1)
    raise TimeoutError(f"{name}: no ready within {timeout:.0f}s\n"
                       f"{c.guests[name].console()[-3000:]}")


def reboot_as(c: LabCluster, name: str, old: Guest, memory: int) -> Guest:
    """Power ``name`` on again (same NICs and taps) with what the inventory gives it now:
    its role's image and the kernel command line the renderer gives the host."""
    host = c.inventory.hosts[name]
    img = c.boot_root / "images" / (host.image or "") / "current"
    spec = GuestSpec(name, list(host.macs), memory_mib=memory, kernel=img / "vmlinuz",
                     initrd=img / "initrd.img", append=kernel_cmdline(c.inventory, host),
                     shell=True)
    g = Guest(c.lab, c.master, spec, old.taps, c.workdir / "guests")
    c.guests[name] = g
    g.start()
    return g


def loop_on_vip(c: LabCluster, client: Netns, name: str, seconds: float, seq: bool = False
                ) -> tuple[subprocess.Popen[str], Path]:
    out = c.workdir / f"{name}.txt"
    with out.open("w") as f:
        p = client.popen([sys.executable, "-c", CLIENT_LOOP, VIP, "1000000", str(seconds),
                          "0.1", *(["seq"] if seq else [])], stdout=f,
                         stderr=subprocess.DEVNULL, text=True)
    wait_until(lambda: sum(ok for _, ok, _ in client_rows(out)) >= 10, 30,
               "answers on the VIP", 0.2)
    return p, out


def fail_over(c: LabCluster, client: Netns, guests: dict[str, Guest], dies: str,
              takes: str) -> tuple[float, int]:
    """Power ``dies`` off under a client loop; the VIP must end up at ``takes`` (the
    client's ARP entry, by gratuitous ARP). Returns (gap s, requests lost)."""
    loop, out = loop_on_vip(c, client, f"loop-{dies}", 120)
    caps = capture_vrrp(c, f"cap-{dies}")
    t_kill, wall_kill = time.monotonic(), time.time()
    guests[dies].stop()
    wait_until(lambda: sum(1 for t, ok, _ in client_rows(out) if ok and t > t_kill + 0.5) >= 30,
               80, f"answers after {dies} died", 1)
    c.lab.stop(loop)
    for p, _ in caps.values():
        c.lab.stop(p)
    print(f"{dies} killed at 0.00 s; on the wire after (s):\n" + "\n".join(
        f"  {br}: {ev}" for br, (_, path) in caps.items()
        for ev in vrrp_timeline(c, path.read_text(), wall_kill)))
    rows = client_rows(out)
    before = [t for t, ok, _ in rows if ok and t <= t_kill]
    after = [t for t, ok, _ in rows if ok and t > t_kill]
    lost = sum(1 for t, ok, _ in rows if not ok and t > before[-1])
    neigh = client.run(["ip", "neigh", "show", VIP]).stdout.lower()
    assert c.inventory.hosts[takes].macs[0] in neigh, neigh
    return after[0] - before[-1], lost


CAPTURE = "vrrp or arp or (tcp port 80 and tcp[13] & 0x12 == 0x12)"


def capture_vrrp(c: LabCluster, name: str) -> dict[str, tuple[subprocess.Popen[str], Path]]:
    """tcpdump on the master's inside (br0) and outside (br2) bridges: VRRP adverts, ARP
    (the new holder's gratuitous ARP) and the web servers' SYN-ACKs, for a failover's
    timeline. Started and listening before this returns."""
    caps = {}
    for br in ("br0", "br2"):
        path, errp = c.workdir / f"{name}-{br}.txt", c.workdir / f"{name}-{br}.err"
        with path.open("w") as f, errp.open("w") as e:
            p = c.master.popen(["tcpdump", "-i", br, "-n", "-e", "-tt", "-l", "-U",
                                CAPTURE], stdout=f, stderr=e, text=True)
        caps[br] = (p, path)
        wait_until(functools.partial(_listening, errp), 10, f"tcpdump on {br}", 0.1)
    return caps


def _listening(err: Path) -> bool:
    return "listening on" in err.read_text()


def vrrp_timeline(c: LabCluster, text: str, t0: float) -> list[str]:
    """A capture (tcpdump -e -tt) as events from ``t0`` on: runs of one host's adverts
    folded into one line, its gratuitous ARPs, and the first SYN-ACK of each web server."""
    names = {m.lower(): h.name for h in c.inventory.hosts.values() for m in h.macs}
    events: list[str] = []
    last: tuple[str, str] | None = None
    run: list[float] = []
    synack: set[str] = set()

    def flush() -> None:
        if last is not None and run:
            n = f" x{len(run)} to {run[-1]:.2f}" if len(run) > 1 else ""
            events.append(f"{run[0]:6.2f} {last[0]} {last[1]}{n}")

    for line in text.splitlines():
        parts = line.split()
        try:
            t = float(parts[0]) - t0
        except (ValueError, IndexError):
            continue
        who = names.get(parts[1].lower(), parts[1])
        if "VRRP" in line:
            m = re.search(r"vrid (\d+), prio (\d+)", line)
            kind = f"advert vrid {m.group(1)} prio {m.group(2)}" if m else "vrrp"
        elif "ARP" in line:
            m = re.search(r"(Request who-has \S+ tell \S+|Reply \S+ is-at \S+)", line)
            kind = f"arp {m.group(1)}" if m else "arp"
        elif t > 0 and who not in synack:
            synack.add(who)
            kind = "first SYN-ACK after the kill"
        else:
            continue
        if t < -1.5:
            continue
        if (who, kind) == last:
            run.append(t)
            continue
        flush()
        last, run = (who, kind), [t]
    flush()
    return events


def client_rows(path: Path) -> list[tuple[float, bool, str]]:
    rows = []
    for line in path.read_text().splitlines():
        parts = (line.split(" ", 2) + [""])[:3]
        try:
            rows.append((float(parts[0]), parts[1] == "ok", parts[2]))
        except ValueError:
            continue
    return sorted(rows)


def lb_status(c: LabCluster, state: Path, expect_rc: int = 0) -> dict[str, Any]:
    r = c.master.run([DSAS, "lb", "status", "--json", "-i", str(c.inventory_path),
                      "--state-dir", str(state), "--timeout", "5"], check=False, timeout=90)
    assert r.returncode == expect_rc, r.stdout + r.stderr
    print(c.master.run([DSAS, "lb", "status", "-i", str(c.inventory_path), "--state-dir",
                        str(state), "--timeout", "5"], check=False, timeout=90).stdout)
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict)
    return doc


def outside_client(c: LabCluster) -> Netns:
    """The master's network set up, the outside VLAN's untagged side made a bridge, and a
    client namespace on it (the Internet, as the VIPs see it)."""
    c.setup_network()
    m = c.master
    m.run(["ip", "addr", "flush", "dev", "vlan2"])
    c.lab.bridge(m, "br2", "198.19.2.1/24")
    m.run(["ip", "link", "set", "vlan2", "master", "br2"])
    client = c.lab.netns("client")
    c.lab.plug(m, "br2", client, f"{CLIENT}/24")
    return client


@contextmanager
def lvs_farm(tmp_path: Path, inventory: str, images: tuple[str, ...] = ("tiny", "web"),
             boot_root: Path | None = None) -> Iterator[tuple[LabCluster, Netns]]:
    """The lab: master netns with `dsas serve` (not started), the outside bridge, the
    client. The boot root is the shared TEST_BOOT_ROOT (``images`` built into it), or
    ``boot_root``, one the test made (lab.rollout.vm_boot_root)."""
    require_root()
    for t in ("qemu-system-x86_64", "curl", "ip"):
        require_tool(t)
    build_images(*images)
    boot = boot_root or TEST_BOOT_ROOT
    inv_path = tmp_path / "cluster.yaml"
    inv_path.write_text(inventory)
    with Lab() as lab:
        c = LabCluster(lab, load(inv_path), inv_path, tmp_path, Path(boot), ["-v"])
        try:
            yield c, outside_client(c)
        finally:
            c.stop()


def print_lab(c: LabCluster, guests: dict[str, Guest]) -> None:
    """The serve's log and each guest's console, tails, on stderr (a failed test's)."""
    print(c.serve_log()[-3000:], file=sys.stderr)
    for n, g in guests.items():
        print(f"---- {n}\n{g.console()[-3000:]}", file=sys.stderr)


def start_httpd(sh: Shell) -> str:
    """busybox httpd in the foreground, in the background of the guest's shell: its PID."""
    st, out = sh.run("busybox httpd -f -p 80 -h /www </dev/null >/dev/null 2>&1 & echo PID $!")
    m = re.search(r"PID (\d+)", out)
    assert st == 0 and m, out
    return str(m.group(1))


def raw(c: LabCluster, state: Path, host: str, command: str, name: str | None = None,
        address: str | None = None) -> str:
    """A command's output on a director (ssh, dsas's key and known_hosts), kept in workdir."""
    addr = address or str(c.inventory.hosts[host].primary_interface.address)
    r = c.master.run(["ssh", "-i", str(state / "ssh" / "id_ed25519"), "-o", "BatchMode=yes",
                      "-o", f"UserKnownHostsFile={state / 'ssh' / 'known_hosts'}",
                      "-o", "StrictHostKeyChecking=yes", f"root@{addr}", command],
                     check=False, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    if name:
        (c.workdir / name).write_text(r.stdout)
    print(f"---- {host}: {command}\n{r.stdout}")
    return r.stdout


def publish_key(c: LabCluster) -> Path:
    """dsas's own SSH key, published for the nodes (they fetch it at boot); the state dir."""
    state = c.workdir / "state"
    key = ensure_client_key(SshConfig(state))
    (c.boot_root / "ssh").mkdir(exist_ok=True)
    (c.boot_root / "ssh" / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    return state
