"""The master pair's test inventory (issue 18): two masters on one /24, the VIP beside."""

from __future__ import annotations

PAIR_INVENTORY = """\
cluster:
  name: lab
  domain: lab.example
  master_address: 198.18.0.3
  masters:
    primary: m01
    secondary: m02
    pair: {vrid: 61, port: 6767, preempt: PREEMPT, peer_timeout: 0.5, mclt: 60}
networks:
  lan: {cidr: 198.18.0.0/24, gateway: 198.18.0.254, dns: [198.18.0.3]}
hwtypes:
  vm: {nics: [eth0]}
images:
  base: {version: v1}
roles:
  master: {services: [], networks: [lan], image: base, hwtype: vm, boot: disk,
           bond: {mode: none}}
  web: {services: [], networks: [lan], image: base, hwtype: vm, bond: {mode: none}}
hosts:
  m01: {role: master, macs: ["52:54:00:00:00:01"], addresses: {lan: 198.18.0.1}}
  m02: {role: master, macs: ["52:54:00:00:00:02"], addresses: {lan: 198.18.0.2}}
  w1: {role: web, macs: ["52:54:00:00:01:01"], addresses: {lan: 198.18.0.11}}
"""


# Three netbooting QEMU guests (the tiny image, one virtio NIC each): name -> (MAC, address)
GUESTS = {"g1": ("52:54:00:00:02:01", "198.18.0.21"), "g2": ("52:54:00:00:02:02", "198.18.0.22"),
          "g3": ("52:54:00:00:02:03", "198.18.0.23")}


def _with_guests(text: str) -> str:
    """The pair's inventory with GUESTS: the HTTP port `dsas serve` listens on in the lab
    (8080, which the boot URLs name), a serial console, the tiny image."""
    text = text.replace("  master_address: 198.18.0.3\n", "  master_address: 198.18.0.3\n"
                        "  http_port: 8080\n  kernel_args: console=ttyS0 panic=5\n")
    text = text.replace("hwtypes:\n", "hwtypes:\n  qemu: {nics: [eth0], modules: [virtio_net]}\n")
    text = text.replace("images:\n", "images:\n  tiny: {version: current}\n")
    text = text.replace("roles:\n", "roles:\n  node: {services: [], networks: [lan], image: tiny, "
                        "hwtype: qemu, bond: {mode: none}}\n")
    return text + "".join(f'  {n}: {{role: node, macs: ["{mac}"], addresses: {{lan: {ip}}}}}\n'
                          for n, (mac, ip) in GUESTS.items())


THIRD = '  m03: {role: master, macs: ["52:54:00:00:00:03"], addresses: {lan: 198.18.0.4}}\n'


def pair_inventory(preempt: bool = True, small: bool = False, third: bool = False,
                   partner_down: bool = False, guests: bool = False) -> str:
    """``small``: a /28, so each master's half of the pool is 4-5 addresses; ``third``:
    a host m03 (198.18.0.4) that `dsas master join` can make a master; ``partner_down``:
    auto_partner_down with the shortest MCLT (10 s); ``guests``: the hosts of GUESTS."""
    text = PAIR_INVENTORY.replace("PREEMPT", "true" if preempt else "false")
    if partner_down:
        text = text.replace("mclt: 60}", "mclt: 10, auto_partner_down: true}")
    if third:
        text += THIRD
    if guests:
        text = _with_guests(text)
    if small:
        text = text.replace("198.18.0.0/24, gateway: 198.18.0.254",
                            "198.18.0.0/28, gateway: 198.18.0.14")
    return text
