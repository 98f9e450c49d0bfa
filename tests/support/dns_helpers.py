"""A small inventory for the DNS tests (198.18.0.0/15 only) and request builders."""

from __future__ import annotations

import struct

from dnslib import EDNS0, DNSRecord

from provision.inventory import Inventory, loads

DOMAIN = "lab.test"


def inventory_text(web_hosts: int = 3, domain: str = DOMAIN, db_ip: str = "198.18.3.30") -> str:
    """Masters, web hosts (the role that grows), a db host, an LVS host on two networks.

    inside  198.18.0.0/22 (four /24 reverse zones), outside 198.19.0.0/24 on VLAN 2,
    mgmt 198.18.9.64/26 (served in its covering /24).
    """
    lines = [
        f"cluster: {{name: t, domain: {domain}, master_address: 198.18.0.1,",
        "          masters: {primary: m1, secondary: m2}}",
        "networks:",
        "  inside: {cidr: 198.18.0.0/22, gateway: 198.18.0.254}",
        "  outside: {cidr: 198.19.0.0/24, vlan: 2}",
        "  mgmt: {cidr: 198.18.9.64/26, vlan: 3}",
        "hwtypes: {vm: {nics: [eth0, eth1]}}",
        "images: {base: {version: v1}}",
        "services:",
        "  lvs: {units: [keepalived.service]}",
        "roles:",
        "  master: {services: [], networks: [inside], image: base, hwtype: vm}",
        "  web: {services: [], networks: [inside], image: base, hwtype: vm}",
        "  db: {services: [], networks: [inside, mgmt], image: base, hwtype: vm}",
        "  lvs: {services: [lvs], networks: [inside, outside], image: base, hwtype: vm}",
        "hosts:",
        '  m1: {role: master, macs: ["52:54:00:00:00:01", "52:54:00:00:10:01"],'
        " addresses: {inside: 198.18.0.1}}",
        '  m2: {role: master, macs: ["52:54:00:00:00:02", "52:54:00:00:10:02"],'
        " addresses: {inside: 198.18.0.2}}",
        '  lvs1: {role: lvs, macs: ["52:54:00:00:00:11", "52:54:00:00:10:11"],'
        " addresses: {inside: 198.18.0.11, outside: 198.19.0.11}}",
        '  lvs2: {role: lvs, macs: ["52:54:00:00:00:12", "52:54:00:00:10:12"],'
        " addresses: {inside: 198.18.0.12, outside: 198.19.0.12}}",
        '  db1: {role: db, macs: ["52:54:00:00:02:01", "52:54:00:00:12:01"],'
        " addresses: {inside: 198.18.2.1, mgmt: 198.18.9.70}}",
    ]
    for i in range(web_hosts):
        a, b = divmod(i, 250)
        hi, lo = f"{i >> 8:02x}", f"{i & 255:02x}"
        lines.append(
            f'  w{101 + i}: {{role: web, macs: ["52:54:00:01:{hi}:{lo}",'
            f' "52:54:00:02:{hi}:{lo}"], addresses: {{inside: 198.18.{1 + a}.{1 + b}}}}}'
        )
    lines += [
        "lvs_pairs:",
        "  lb: {hosts: {lvs1: active, lvs2: backup}, virtual_router_id: 51}",
        "virtual_services:",
        "  www: {vip: 198.19.0.10, port: 80, scheduler: wlc, forwarding: NAT, role: web,",
        "        check: {type: TCP_CHECK}}",
        f"  db-read: {{vip: {db_ip}, port: 3306, scheduler: rr, forwarding: DR, role: db,",
        "        check: {type: TCP_CHECK}}",
    ]
    return "\n".join(lines) + "\n"


def inventory(web_hosts: int = 3, **kw: str) -> Inventory:
    return loads(inventory_text(web_hosts, **kw), "dns-test.yaml")


def query(name: str, qtype: str = "A", ident: int = 4242, edns: int | None = None,
          do: bool = False, rd: bool = True) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    q.header.id = ident
    q.header.rd = int(rd)
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, flags="do" if do else ""))
    return q


def raw_header(ident: int = 7, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0,
               ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qd, an, ns, ar)
