"""The assign lab (issue 17): two directors, a web server and a spare behind the VIP,
shared by tests/vm/test_assign_vm.py and `python -m bench assign`."""

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
hosts:
  m01: {role: master, macs: ["52:54:00:18:00:01", "52:54:00:18:01:01"],
        addresses: {inside: 198.18.0.1}}
  lvs1: {role: lvs, macs: ["52:54:00:18:00:61", "52:54:00:18:01:61"],
         addresses: {inside: 198.18.0.61, outside: 198.19.2.61}}
  lvs2: {role: lvs, macs: ["52:54:00:18:00:62", "52:54:00:18:01:62"],
         addresses: {inside: 198.18.0.62, outside: 198.19.2.62}}
  w1: {role: web, macs: ["52:54:00:18:00:71", "52:54:00:18:01:71"],
       addresses: {inside: 198.18.1.71}}
  s1: {role: spare, macs: ["52:54:00:18:00:81", "52:54:00:18:01:81"],
       addresses: {inside: 198.18.1.81}}
  s9: {role: spare, macs: ["52:54:00:18:00:89", "52:54:00:18:01:89"],
       addresses: {inside: 198.18.1.89}}
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

GUESTS = ("lvs1", "lvs2", "w1", "s1")
