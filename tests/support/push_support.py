"""The push tests' inventory (test_push_unit, test_push_fast_unit)."""

from __future__ import annotations

INV = """\
cluster: {name: u, domain: u.example, master_address: 198.18.5.1, masters: {primary: m1}}
networks:
  inside: {cidr: 198.18.5.0/24, gateway: 198.18.5.254, dns: [198.18.5.1]}
hwtypes: {single: {nics: [eth0]}}
images: {tiny: {version: "1"}}
services: {www: {units: [httpd]}, master: {}}
roles:
  master: {services: [master], networks: [inside], hwtype: single, boot: disk, bond: {mode: none}}
  web: {services: [www], networks: [inside], hwtype: single, image: tiny, bond: {mode: none}}
  db: {services: [www], networks: [inside], hwtype: single, image: tiny, bond: {mode: none}}
hosts:
  m1: {role: master, macs: ["52:54:00:05:00:01"], addresses: {inside: 198.18.5.1}}
  w1: {role: web, macs: ["52:54:00:05:00:11"], addresses: {inside: 198.18.5.11}}
  w2: {role: web, macs: ["52:54:00:05:00:12"], addresses: {inside: 198.18.5.12}}
  d1: {role: db, macs: ["52:54:00:05:00:21"], addresses: {inside: 198.18.5.21}}
"""
