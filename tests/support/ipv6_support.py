"""The IPv6 lab inventory (test_ipv6, test_ipv6_netboot, test_dhcp6)."""

from __future__ import annotations

INVENTORY = """\
cluster:
  name: lab
  domain: lab.example
  master_address: 198.18.0.1
  masters: {primary: m01}
networks:
  lan: {cidr: 198.18.0.0/24, dns: [198.18.0.1], ipv6: "2001:db8:18::/64",
        gateway6: "2001:db8:18::fe"}
  far: {cidr: 198.18.1.0/24, vlan: 3, gateway: 198.18.1.1}
hwtypes:
  vm: {nics: [eth0]}
images:
  base: {version: v1}
roles:
  master: {services: [], networks: [lan], boot: disk, hwtype: vm, bond: {mode: none}}
  web: {services: [], networks: [lan, far], image: base, hwtype: vm, bond: {mode: none}}
hosts:
  m01: {role: master, macs: ["52:54:00:00:00:01"], addresses: {lan: 198.18.0.1},
        addresses6: {lan: "2001:db8:18::1"}}
  w1: {role: web, macs: ["52:54:00:00:01:01"], addresses: {lan: 198.18.0.11, far: 198.18.1.11},
       addresses6: {lan: "2001:db8:18::11"}}
  w2: {role: web, macs: ["52:54:00:00:01:02"], addresses: {lan: 198.18.0.12, far: 198.18.1.12}}
"""
