"""The load balancer lab (issue 16): the inventory, the client's request loop and a
direct-kernel boot of a guest, shared by tests/vm/test_lvs_vm.py and
`python -m bench lvs`.

    master netns  br0 198.18.0.1/22 (inside, untagged): `dsas serve` (DHCP, HTTP)
                  vlan2 (userspace 802.1Q port) + br2 198.19.2.1/24 (outside)
    client netns  198.19.2.50/24 on br2
    lvs1, lvs2    the `web` image (Debian: keepalived, ipvsadm, IPVS modules),
                  role lvs: bond0 inside, bond0.2 outside; VRRP pair, NAT
    w1, w2        the tiny image, role web: busybox httpd answering its own name
"""

from __future__ import annotations

from pathlib import Path

from provision.render.engine import kernel_cmdline

from .cluster import LabCluster
from .qemu import Guest, GuestSpec

VIP = "198.19.2.10"
CLIENT = "198.19.2.50"
WEB = ("w1", "w2")

INVENTORY = """\
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
hosts:
  m01: {role: master, macs: ["52:54:00:18:00:01", "52:54:00:18:01:01"],
        addresses: {inside: 198.18.0.1}}
  lvs1: {role: lvs, macs: ["52:54:00:18:00:61", "52:54:00:18:01:61"],
         addresses: {inside: 198.18.0.61, outside: 198.19.2.61}}
  lvs2: {role: lvs, macs: ["52:54:00:18:00:62", "52:54:00:18:01:62"],
         addresses: {inside: 198.18.0.62, outside: 198.19.2.62}}
  w1: {role: web, macs: ["52:54:00:18:00:71", "52:54:00:18:01:71"],
       addresses: {inside: 198.18.1.71}}
  w2: {role: web, macs: ["52:54:00:18:00:72", "52:54:00:18:01:72"],
       addresses: {inside: 198.18.1.72}}
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


def client_rows(path: Path) -> list[tuple[float, bool, str]]:
    """The lines CLIENT_LOOP wrote to ``path`` so far: (time, answered, body or why)."""
    rows = []
    for line in path.read_text().splitlines():
        parts = (line.split(" ", 2) + [""])[:3]
        try:
            rows.append((float(parts[0]), parts[1] == "ok", parts[2]))
        except ValueError:
            continue
    return rows
