"""Shared by the DHCP tests: a small lab inventory and client-side packet builders."""

from __future__ import annotations

import random
import struct
from ipaddress import IPv4Address

from provision.protocol import dhcp_options as o
from provision.protocol.dhcp import (
    BOOTREQUEST,
    FLAG_BROADCAST,
    MAGIC_COOKIE,
    DhcpPacket,
)

INVENTORY = """\
cluster:
  name: lab
  domain: lab.example
  master_address: 198.18.0.1
  masters: {primary: m01}
networks:
  lan: {cidr: 198.18.0.0/24, gateway: 198.18.0.254, dns: [198.18.0.1]}
  far: {cidr: 198.18.1.0/24, vlan: 3, gateway: 198.18.1.1, dns: [198.18.0.1]}
  tiny: {cidr: 198.18.2.0/29, vlan: 4, gateway: 198.18.2.1, dns: [198.18.0.1]}
hwtypes:
  vm: {nics: [eth0]}
images:
  base: {version: v1}
roles:
  master: {services: [], networks: [lan], image: base, hwtype: vm, boot: disk,
           bond: {mode: none}}
  web: {services: [], networks: [lan, far], image: base, hwtype: vm, bond: {mode: none}}
  legacy: {services: [], networks: [lan], image: base, hwtype: vm, loader: pxelinux,
           bond: {mode: none}}
hosts:
  m01: {role: master, macs: ["52:54:00:00:00:01"], addresses: {lan: 198.18.0.1}}
  w1: {role: web, macs: ["52:54:00:00:01:01"], addresses: {lan: 198.18.0.11, far: 198.18.1.11}}
  w2: {role: web, macs: ["52:54:00:00:01:02"], addresses: {lan: 198.18.0.12, far: 198.18.1.12}}
  old: {role: legacy, macs: ["52:54:00:00:02:01"], addresses: {lan: 198.18.0.21}}
"""
W1_MAC = "52:54:00:00:01:01"
W2_MAC = "52:54:00:00:01:02"
OLD_MAC = "52:54:00:00:02:01"
UNKNOWN_MAC = "52:54:00:00:ee:01"
SERVER = IPv4Address("198.18.0.1")

PXE_BIOS = {o.VENDOR_CLASS: b"PXEClient:Arch:00000:UNDI:002001", o.CLIENT_ARCH: o.u16(0),
            o.CLIENT_NDI: b"\x01\x02\x01", o.CLIENT_UUID: bytes(17)}
IPXE_ROM = {**PXE_BIOS, o.USER_CLASS: b"iPXE",
            o.IPXE_ENCAP: o.build_tlv({o.IPXE_VERSION: b"\x01\x00\x00"})}
OVMF = {o.VENDOR_CLASS: b"PXEClient:Arch:00007:UNDI:003000", o.CLIENT_ARCH: o.u16(7),
        o.CLIENT_NDI: b"\x01\x03\x00", o.CLIENT_UUID: bytes(17)}
IPXE_EFI = {**OVMF, o.VENDOR_CLASS: b"PXEClient:Arch:00007:UNDI:003010", o.USER_CLASS: b"iPXE"}


def mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def client_packet(mtype: int, mac: str, *, xid: int | None = None, ciaddr: str = "0.0.0.0",
                  requested: str | None = None, server: str | IPv4Address | None = None,
                  giaddr: str = "0.0.0.0", broadcast: bool = False,
                  extra: dict[int, bytes] | None = None, client_id: bool = True) -> DhcpPacket:
    opts: dict[int, bytes] = {o.MESSAGE_TYPE: bytes((mtype,))}
    if client_id:
        opts[o.CLIENT_ID] = b"\x01" + mac_bytes(mac)
    if requested:
        opts[o.REQUESTED_IP] = o.ip(requested)
    if server:
        opts[o.SERVER_ID] = o.ip(server)
    opts.update(extra or {})
    return DhcpPacket(op=BOOTREQUEST, xid=random.getrandbits(32) if xid is None else xid,
                      chaddr=mac_bytes(mac), flags=FLAG_BROADCAST if broadcast else 0,
                      ciaddr=IPv4Address(ciaddr), giaddr=IPv4Address(giaddr), options=opts)


MAC = bytes.fromhex("525400000001")


def raw_packet(options: bytes, *, op: int = 1, htype: int = 1, hlen: int = 6,
               sname: bytes = b"", file: bytes = b"", cookie: bytes = MAGIC_COOKIE) -> bytes:
    header = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, htype, hlen, 0, 0x34B07138, 4,
                         0, bytes(4), bytes(4), bytes(4), bytes(4), MAC, sname, file)
    return header + cookie + options


def opt(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


# What the iPXE ROM sends (PXE-CLIENTS.md section 2): raw user class, 175, arch 0.
IPXE_175 = (opt(177, bytes.fromhex("011af41000")) + opt(235, bytes((1, 0, 0)))
            + opt(16, b"\x02") + opt(19, b"\x01") + opt(21, b"\x01"))


IPXE_DISCOVER = raw_packet(
    opt(53, b"\x01") + opt(57, struct.pack("!H", 1472)) + opt(93, b"\x00\x00")
    + opt(94, b"\x01\x02\x01") + opt(97, bytes(17)) + opt(60, b"PXEClient:Arch:00000:UNDI:002001")
    + opt(77, b"iPXE") + opt(61, b"\x01" + MAC) + opt(55, bytes((1, 3, 6, 12, 15, 43, 60, 66, 67)))
    + opt(175, IPXE_175) + b"\xff"
)
