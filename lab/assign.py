"""The assign lab (issue 17): two directors, a web server and a spare behind the VIP,
shared by tests/vm/test_assign_vm.py and `python -m bench assign`."""

from .lvs import DIRECTOR_HOSTS, INV_HEAD, INV_TAIL

INVENTORY = INV_HEAD + """\
images:
  web: {version: current}
services:
  master: {units: [dsas-serve]}
  web: {units: [lighttpd]}
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
    image: web
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
  spare:
    services: []
    networks: [inside]
    image: web
    hwtype: vm
    bond: {mode: active-backup, miimon: 100, primary: eth0}
""" + DIRECTOR_HOSTS + """\
  w1: {role: web, macs: ["52:54:00:18:00:71", "52:54:00:18:01:71"],
       addresses: {inside: 198.18.1.71}}
  s1: {role: spare, macs: ["52:54:00:18:00:81", "52:54:00:18:01:81"],
       addresses: {inside: 198.18.1.81}}
  s9: {role: spare, macs: ["52:54:00:18:00:89", "52:54:00:18:01:89"],
       addresses: {inside: 198.18.1.89}}
""" + INV_TAIL

GUESTS = ("lvs1", "lvs2", "w1", "s1")
