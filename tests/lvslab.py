"""What the VM tests of the load balancers share (issue 16 and 17): a farm of QEMU
(TCG) guests netbooted from `dsas serve` with an outside VLAN and a client namespace
on it, a client loop on the VIP, `dsas lb status`, and commands on a node over SSH.

    master netns  br0 198.18.0.1/22 (inside, untagged): `dsas serve` (DHCP, HTTP)
                  vlan2 (userspace 802.1Q port) + br2 198.19.2.1/24 (outside)
    client netns  198.19.2.50/24 on br2
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from provision.inventory import load
from provision.lab.cluster import LabCluster
from provision.lab.qemu import Guest, GuestSpec, Shell
from provision.render.engine import kernel_cmdline
from provision.sshtrust.sshconf import SshConfig, ensure_client_key

from .clonelab import TEST_BOOT_ROOT, build_images
from .conftest import ROOT
from .lab import Lab, Netns, require_root, require_tool

DSAS = str(ROOT / ".venv" / "bin" / "dsas")

VIP = "198.19.2.10"
CLIENT = "198.19.2.50"

# Runs in the client namespace: GET http://VIP/ every PERIOD s for SECONDS s (or
# COUNT requests), one line per request: "<monotonic t> ok <body>" or "<t> fail <why>".
CLIENT_LOOP = r"""
import http.client, sys, time
vip, count, seconds, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
end = time.monotonic() + seconds
n = 0
while n < count and time.monotonic() < end:
    n += 1
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection(vip, 80, timeout=0.8)
        c.request("GET", "/", headers={"Connection": "close"})
        body = c.getresponse().read().decode(errors="replace").strip()
        c.close()
        print(f"{t:.3f} ok {body}", flush=True)
    except Exception as e:
        print(f"{t:.3f} fail {type(e).__name__}", flush=True)
    time.sleep(max(0.0, period - (time.monotonic() - t)))
"""


def requests(client: Netns, count: int, period: float = 0.05,
             seconds: float = 120) -> list[tuple[float, bool, str]]:
    out = client.run([sys.executable, "-c", CLIENT_LOOP, VIP, str(count), str(seconds),
                      str(period)], timeout=seconds + 30, check=False)
    rows = []
    for line in out.stdout.splitlines():
        t, status, rest = (line.split(" ", 2) + [""])[:3]
        rows.append((float(t), status == "ok", rest))
    return rows


def wait_until(ok: Callable[[], object], timeout: float, what: str, step: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f}s")
        time.sleep(step)


@contextmanager
def lvs_farm(tmp_path: Path, inventory: str, images: tuple[str, ...] = ("tiny", "web"),
             ) -> Iterator[tuple[LabCluster, Netns]]:
    """The lab: master netns with `dsas serve` (not started), the outside bridge, the client."""
    require_root()
    for t in ("qemu-system-x86_64", "curl", "ip"):
        require_tool(t)
    build_images(*images)
    boot = TEST_BOOT_ROOT
    inv_path = tmp_path / "cluster.yaml"
    inv_path.write_text(inventory)
    with Lab() as lab:
        c = LabCluster(lab, load(inv_path), inv_path, tmp_path, Path(boot), ["-v"])
        try:
            c.setup_network()
            m = c.master
            # the outside VLAN's untagged side becomes a bridge the client joins
            m.run(["ip", "addr", "flush", "dev", "vlan2"])
            lab.bridge(m, "br2", "198.19.2.1/24")
            m.run(["ip", "link", "set", "vlan2", "master", "br2"])
            client = lab.netns("client")
            lab.plug(m, "br2", client, f"{CLIENT}/24")
            yield c, client
        finally:
            c.stop()


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


def start_httpd(sh: Shell) -> str:
    """busybox httpd in the foreground, in the background of the guest's shell: its PID."""
    st, out = sh.run("busybox httpd -f -p 80 -h /www </dev/null >/dev/null 2>&1 & echo PID $!")
    m = re.search(r"PID (\d+)", out)
    assert st == 0 and m, out
    return m.group(1)


def lb_status(c: LabCluster, state: Path, expect_rc: int = 0) -> dict[str, Any]:
    r = c.master.run([DSAS, "lb", "status", "--json", "-i", str(c.inventory_path),
                      "--state-dir", str(state), "--timeout", "5"], check=False, timeout=90)
    assert r.returncode == expect_rc, r.stdout + r.stderr
    print(c.master.run([DSAS, "lb", "status", "-i", str(c.inventory_path), "--state-dir",
                        str(state), "--timeout", "5"], check=False, timeout=90).stdout)
    doc = json.loads(r.stdout)
    assert isinstance(doc, dict)
    return doc


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


def _rows(path: Path) -> list[tuple[float, bool, str]]:
    rows = []
    for line in path.read_text().splitlines():
        parts = (line.split(" ", 2) + [""])[:3]
        try:
            rows.append((float(parts[0]), parts[1] == "ok", parts[2]))
        except ValueError:
            continue
    return rows


def publish_key(c: LabCluster) -> Path:
    """dsas's own SSH key, published for the nodes (they fetch it at boot); the state dir."""
    state = c.workdir / "state"
    key = ensure_client_key(SshConfig(state))
    (c.boot_root / "ssh").mkdir(exist_ok=True)
    (c.boot_root / "ssh" / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    return state


def trust(c: LabCluster, state: Path, name: str) -> None:
    """Wait for sshd on ``name`` (bounded), then `dsas trust` it."""
    addr = str(c.inventory.hosts[name].primary_interface.address)
    wait_until(lambda: c.master.run(
        ["bash", "-c", f"exec 3<>/dev/tcp/{addr}/22"], check=False).returncode == 0,
        900, f"sshd on {name}")  # ssh.service makes host keys: minutes in TCG under load
    r = c.master.run([DSAS, "trust", name, "-y", "-i", str(c.inventory_path), "--state-dir",
                      str(state)], check=False, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
