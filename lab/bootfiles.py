"""The boot-files lab: a small inventory with lab addresses (198.18.4.0/24), served by
the boot-files tests and by `python -m bench bootfiles`."""

from __future__ import annotations

from provision.inventory import Inventory, loads

INVENTORY = """\
cluster:
  name: lab
  domain: lab.example
  master_address: 198.18.4.1
  masters: {primary: m1}
  http_port: 8080
networks:
  inside: {cidr: 198.18.4.0/24, gateway: 198.18.4.254, dns: [198.18.4.1]}
hwtypes:
  vm: {nics: [eth0], modules: [virtio_net]}
images:
  tiny: {version: "1"}
roles:
  master: {services: [], networks: [inside], boot: disk, hwtype: vm, bond: {mode: none}}
  web:
    services: []
    networks: [inside]
    image: tiny
    hwtype: vm
    bond: {mode: none}
    loader: pxelinux
hosts:
  m1: {role: master, macs: ["52:54:00:04:00:01"], addresses: {inside: 198.18.4.1}}
  n1: {role: web, macs: ["52:54:00:04:00:11"], addresses: {inside: 198.18.4.11}}
  n2: {role: web, macs: ["52:54:00:04:00:12"], addresses: {inside: 198.18.4.12}}
"""


def inventory(text: str = INVENTORY) -> Inventory:
    return loads(text, "lab.yaml")
