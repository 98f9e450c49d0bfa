"""DHCPv6 decisions (RFC 8415): the host's reserved IPv6 address and its boot file URL.

Pure: ``Dhcp6Policy.handle(msg, link, source)`` returns the reply (or None and why not).

Identity is the MAC, never the DUID. The inventory knows MACs, not DUIDs; and, as with
DHCPv4's client id, the DUID differs between the stages of one boot (firmware, iPXE,
Linux) and firmware often builds it from the SMBIOS UUID, which is all zeros on VMs and
cheap hardware, so many machines share one DUID-UUID. The MAC comes from the DUID when
it holds one (DUID-LLT, DUID-LL), else from the client's link-local source address
when that is a modified EUI-64 one (what OVMF, iPXE and Linux make by default). A
client whose MAC cannot be found, or is not in the inventory, is not answered.

Addresses are the inventory's (``hosts.X.addresses6``): nothing is allocated, so
nothing needs to be stored; a RELEASE or DECLINE is acknowledged and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from .. import layout
from ..inventory.model import Host, Inventory, Network
from ..protocol import dhcp6 as d6
from ..protocol import dhcp_options as o

PREFERRED = 3600  # s: the address's preferred lifetime; T1/T2 = 1/2 and 4/5 of it
VALID = 7200
HTTP_CLIENT = b"HTTPClient"


@dataclass(frozen=True)
class Link6:
    """Where a message arrived: our interface, its inventory network, our address on it."""

    interface: str
    network: Network | None
    address: IPv6Address | None  # our global address on the link (boot file URLs)
    server_duid: bytes


@dataclass
class Decision6:
    """What the DHCPv6 policy decided for one message: the reply, or why none."""

    reply: d6.Dhcp6Message | None = None
    drop: str | None = None  # why nothing is sent (a metric label)
    host: str = ""
    mac: str = ""
    address: IPv6Address | None = None
    boot: str = ""


class Dhcp6Policy:
    """Answers DHCPv6 messages from the inventory (stateless addresses, boot URLs)."""

    def __init__(self, inventory: Inventory, http_port: int = 80) -> None:
        self.http_port = http_port
        self.reload(inventory)

    def reload(self, inventory: Inventory) -> None:
        self.inv = inventory
        self._hosts = {mac: h for h in inventory.hosts.values() for mac in h.macs}

    def handle(self, msg: d6.Dhcp6Message, link: Link6, source: IPv6Address) -> Decision6:
        mt = msg.msg_type
        client = msg.get(d6.CLIENTID)
        refused = _screen(mt, client, msg.get(d6.SERVERID), link)
        if refused:
            return Decision6(drop=refused)
        mac = (d6.duid_mac(client) if client else None) or d6.eui64_mac(source)
        if mac is None:
            return Decision6(drop="no_mac")
        host = self._hosts.get(mac)
        if host is None:
            return Decision6(drop="unknown_mac", mac=mac)
        net = link.network
        if net is None or net.ipv6 is None:
            return Decision6(drop="no_ipv6_on_link", host=host.name, mac=mac)
        return self._answer(msg, link, host, net, net.ipv6, mac)

    def _answer(self, msg: d6.Dhcp6Message, link: Link6, host: Host, net: Network,
                prefix: IPv6Network, mac: str) -> Decision6:
        ip = host.addresses6.get(net.name)
        rtype, opts = _reply_head(msg, link)
        status = _status_only(msg, prefix)
        if status is not None:
            opts.append((d6.STATUS_CODE, status))
            return Decision6(self._reply(msg, rtype, opts), host=host.name, mac=mac)
        if msg.msg_type != d6.INFORMATION_REQUEST:
            ias = _ia_nas(msg, host, ip)
            if ias is None:
                return Decision6(drop="malformed_ia_na", host=host.name, mac=mac)
            opts += ias
        boot = self.boot_url(msg, host, link)
        if boot:
            opts.append((d6.BOOTFILE_URL, boot.encode("ascii")))
        if self.inv.cluster.domain:
            opts.append((d6.DOMAIN_LIST, _dns_name(self.inv.cluster.domain)))
        return Decision6(self._reply(msg, rtype, opts), host=host.name, mac=mac, address=ip,
                         boot=boot or "")

    def boot_url(self, msg: d6.Dhcp6Message, host: Host, link: Link6) -> str | None:
        """RFC 5970 option 59: tftp://[addr]/ipxe.efi for UEFI PXE, the script for iPXE,
        http://[addr]/ipxe.efi for UEFI HTTP boot; None for other clients."""
        if link.address is None:
            return None
        archs = d6.u16s(msg.get(d6.CLIENT_ARCH_TYPE) or b"")
        users = d6.opaque_list(msg.get(d6.USER_CLASS) or b"")
        vendor = msg.get(d6.VENDOR_CLASS) or b""
        ipxe = b"iPXE" in users
        port = "" if self.http_port == 80 else f":{self.http_port}"
        http = f"http://[{link.address}]{port}"
        if ipxe:
            return f"{http}/{layout.ipxe_script_path(host)}"
        if HTTP_CLIENT in vendor and o.ARCH_EFI_X64_HTTP in archs:
            return f"{http}/{layout.LOADER_EFI_X64}"
        if o.ARCH_EFI_X64 in archs or o.ARCH_EFI_BC in archs:
            return f"tftp://[{link.address}]/{layout.LOADER_EFI_X64}"
        return None

    @staticmethod
    def _reply(msg: d6.Dhcp6Message, rtype: int,
               opts: list[tuple[int, bytes]]) -> d6.Dhcp6Message:
        return d6.Dhcp6Message(rtype, msg.xid, opts)


def _screen(mt: int, client: bytes | None, server: bytes | None, link: Link6) -> str | None:
    """Why a message is not for this server to answer (a drop reason), or None."""
    if mt not in (d6.SOLICIT, d6.REQUEST, d6.CONFIRM, d6.RENEW, d6.REBIND, d6.RELEASE,
                  d6.DECLINE, d6.INFORMATION_REQUEST):
        return "server_message"
    if client is None and mt != d6.INFORMATION_REQUEST:
        return "no_client_id"  # RFC 8415 16
    if mt in (d6.SOLICIT, d6.CONFIRM, d6.REBIND) and server is not None:
        return "server_id_not_allowed"
    if mt in (d6.REQUEST, d6.RENEW, d6.RELEASE, d6.DECLINE) and server != link.server_duid:
        return "other_server"
    if server is not None and server != link.server_duid:
        return "other_server"
    return None


def _ia_nas(msg: d6.Dhcp6Message, host: Host,
            ip: IPv6Address | None) -> list[tuple[int, bytes]] | None:
    """The IA_NA options answering the client's (its address, or NoAddrsAvail); None
    when one of the client's does not decode."""
    out: list[tuple[int, bytes]] = []
    for raw in msg.all(d6.IA_NA):
        try:
            ia = d6.decode_ia_na(raw)
        except d6.Dhcp6Error:
            return None
        if ip is None:
            body = d6.ia_na(ia.iaid, 0, 0, [(d6.STATUS_CODE, d6.status(
                d6.STATUS_NO_ADDRS_AVAIL, f"{host.name} has no IPv6 address"))])
        else:
            body = d6.ia_na(ia.iaid, PREFERRED // 2, PREFERRED * 4 // 5,
                            [(d6.IAADDR, d6.iaaddr(ip, PREFERRED, VALID))])
        out.append((d6.IA_NA, body))
    return out


def _addresses(msg: d6.Dhcp6Message) -> list[IPv6Address]:
    out = []
    for raw in msg.all(d6.IA_NA):
        try:
            ia = d6.decode_ia_na(raw)
        except d6.Dhcp6Error:
            continue
        out += [IPv6Address(data[:16]) for code, data in ia.options
                if code == d6.IAADDR and len(data) >= 24]
    return out


def _dns_name(name: str) -> bytes:
    """RFC 1035 3.1 wire form of a domain name (DOMAIN_LIST)."""
    return b"".join(bytes((len(p),)) + p.encode("ascii") for p in name.split(".") if p) + b"\0"


def _reply_head(msg: d6.Dhcp6Message, link: Link6) -> tuple[int, list[tuple[int, bytes]]]:
    """The reply's type (ADVERTISE, or REPLY with rapid commit) and its first options."""
    mt = msg.msg_type
    client = msg.get(d6.CLIENTID)
    rapid = mt == d6.SOLICIT and msg.get(d6.RAPID_COMMIT) is not None
    rtype = d6.ADVERTISE if mt == d6.SOLICIT and not rapid else d6.REPLY
    opts: list[tuple[int, bytes]] = [(d6.SERVERID, link.server_duid)]
    if client is not None:
        opts.append((d6.CLIENTID, client))
    if rapid:
        opts.append((d6.RAPID_COMMIT, b""))
    return rtype, opts


def _status_only(msg: d6.Dhcp6Message, prefix: IPv6Network) -> bytes | None:
    """The status code of a reply that carries nothing else (CONFIRM, RELEASE, DECLINE)."""
    mt = msg.msg_type
    if mt == d6.CONFIRM:  # RFC 8415 18.3.3: are its addresses on this link?
        on_link = all(a in prefix for a in _addresses(msg))
        return d6.status(d6.STATUS_SUCCESS if on_link else d6.STATUS_NOT_ON_LINK,
                         "on link" if on_link else "not on link")
    if mt in (d6.RELEASE, d6.DECLINE):
        return d6.status(d6.STATUS_SUCCESS, "nothing to release")
    return None
