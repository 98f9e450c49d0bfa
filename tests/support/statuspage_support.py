"""The status page's inventory and recorded load balancer reads (test_statuspage_lab,
test_status_unit)."""

from __future__ import annotations

from provision.balancer import reads as lbreads
from provision.balancer.status import DirectorView, parse_report, status
from provision.state import StateStore
from tests.support.paths import ROOT as REPO

SRV = "198.18.4.1"


VRRP_PASSWORD = "Vr5ecr3t"


INVENTORY = f"""\
cluster:
  name: statuslab
  domain: lab.example
  master_address: {SRV}
  masters: {{primary: m1}}
  http_port: 8080
networks:
  inside: {{cidr: 198.18.4.0/24, gateway: 198.18.4.254, dns: [{SRV}]}}
  outside: {{cidr: 198.19.4.0/24, gateway: 198.19.4.1, vlan: 2, dns: [{SRV}]}}
hwtypes:
  vm: {{nics: [eth0], modules: [virtio_net]}}
images:
  tiny: {{version: "7"}}
services:
  lvs: {{units: [keepalived.service]}}
roles:
  master: {{services: [], networks: [inside], boot: disk, hwtype: vm, bond: {{mode: none}}}}
  lvs: {{services: [lvs], networks: [inside, outside], image: tiny, hwtype: vm,
        bond: {{mode: none}}}}
  web: {{services: [], networks: [inside], image: tiny, hwtype: vm, bond: {{mode: none}}}}
  db: {{services: [], networks: [inside], image: tiny, hwtype: vm, bond: {{mode: none}}}}
hosts:
  m1: {{role: master, macs: ["52:54:00:04:00:01"], addresses: {{inside: {SRV}}}}}
  lb1: {{role: lvs, macs: ["52:54:00:04:00:02"],
        addresses: {{inside: 198.18.4.2, outside: 198.19.4.2}}}}
  lb2: {{role: lvs, macs: ["52:54:00:04:00:03"],
        addresses: {{inside: 198.18.4.3, outside: 198.19.4.3}}}}
  w1: {{role: web, macs: ["52:54:00:04:00:11"], addresses: {{inside: 198.18.4.11}}}}
  w2: {{role: web, macs: ["52:54:00:04:00:12"], addresses: {{inside: 198.18.4.12}}}}
  w10: {{role: web, macs: ["52:54:00:04:00:1a"], addresses: {{inside: 198.18.4.20}}}}
  d1: {{role: db, macs: ["52:54:00:04:00:21"], addresses: {{inside: 198.18.4.21}}}}
lvs_pairs:
  lb:
    hosts: {{lb1: active, lb2: backup}}
    virtual_router_id: 51
    priority: {{active: 150, backup: 100}}
    auth: {{type: PASS, password: {VRRP_PASSWORD}}}
virtual_services:
  www:
    vip: 198.19.4.10
    port: 80
    scheduler: wlc
    forwarding: NAT
    role: web
    check: {{type: HTTP_GET, path: /healthz, status: 200}}
"""


# `ipvsadm -Ln` of a real director (tests/fixtures, from test_lvs_vm.py) with w1 out
# after its health check failed, moved to this inventory's addresses.
LB_MOVE = {"198.19.2.10": "198.19.4.10", "198.18.1.71": "198.18.4.11",
           "198.18.1.72": "198.18.4.12"}


LB2_DOWN = "unreachable: connection refused on port 22"


def lb_views() -> list[DirectorView]:
    """lb1 read (w1 out, w2 up, it carries the VIP), lb2 unreachable."""
    text = (REPO / "tests" / "fixtures" / "ipvsadm-Ln-one-out.txt").read_text()
    for old, new in LB_MOVE.items():
        text = text.replace(old, new)
    lb1 = parse_report("lb1", "198.18.4.2", "=IPVS\n" + text + "=RC 0\n=ADDR\n"
                       "2: eth0    inet 198.18.4.2/24 scope global eth0\n"
                       "3: eth0.2    inet 198.19.4.2/24 scope global eth0.2\n"
                       "3: eth0.2    inet 198.19.4.10/24 scope global secondary eth0.2\n")
    assert lb1.error is None, lb1.error
    return [lb1, DirectorView("lb2", "198.18.4.3", error=LB2_DOWN)]


def record_lb_read(store: StateStore, now: float) -> None:
    from provision.inventory import loads

    inv = loads(INVENTORY, "lab.yaml")
    views = lb_views()
    lbreads.record(store, inv, views, status(inv, views), now)
