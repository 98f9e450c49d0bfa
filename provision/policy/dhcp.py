"""DHCP decisions: who is this client, which address on which network, what it boots.

Pure: ``DhcpPolicy.handle(request, link, now)`` returns a ``Decision`` (the reply, where
to send it, and the lease changes that must be durable before it is sent). No sockets,
no clock, no logging; the service (``provision.services.dhcp``) does those.

Identity is the hardware address (chaddr) only: never option 61 or the PXE UUID, which
differ between the firmware, iPXE and Linux stages of one boot (PXE-CLIENTS.md 2), so
all stages of a machine get the same address.
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from .. import layout
from ..inventory.model import Host, Inventory, Network
from ..protocol import dhcp_options as o
from ..protocol.dhcp import (
    BOOTREPLY,
    BOOTREQUEST,
    FLAG_BROADCAST,
    ZERO,  # the codec's own object: its encoder tests for it by identity
    DhcpPacket,
    make_packet,
)
from .dhcp_network import build_pool, lease_options, network_options
from .dhcp_types import (
    BROADCAST,
    CLIENT_PORT,
    SERVER_PORT,
    TO_BROADCAST,
    TO_SOURCE,
    Decision,
    Destination,
    DhcpSettings,
    Link,
)
from .leases import BOUND, Change, LeaseTable, Pool, Sighting

HTTP_CLIENT = b"HTTPClient"  # option 60 of UEFI HTTP boot clients, echoed in our offers
PXE_PORT = 4011  # PXE 2.1: ProxyDHCP / boot server requests
RELAYS_CACHED = 1024  # relay destinations remembered
SEEN_LIMIT = 200_000  # unknown MACs whose last sighting is remembered (rate limit)
# iPXE's no-pxedhcp setting (175.176 = 1): PXE-CLIENTS.md 5 measured iPXE REQUESTing
# 3 ms after the OFFER with it, instead of about 3 s later.
IPXE_NO_PROXY_WAIT = o.build_tlv({o.IPXE_NO_PXEDHCP: b"\x01"})
# ProxyDHCP's option 43: PXE_DISCOVERY_CONTROL = "use the boot file in this offer".
__all__ = ["BROADCAST", "CLIENT_PORT", "PXE_PORT", "SERVER_PORT", "TO_BROADCAST", "TO_SOURCE",
           "Decision", "Destination", "DhcpPolicy", "DhcpSettings", "Link", "build_pool"]

PXE_VENDOR_BOOTFILE = o.build_tlv({o.PXE_DISCOVERY_CONTROL: bytes((o.PXE_DISCOVERY_USE_BOOTFILE,))},
                                  end=True)


class DhcpPolicy:
    """Answers DHCPv4 (and ProxyDHCP) requests from the inventory and the lease table."""

    def __init__(self, inventory: Inventory, table: LeaseTable,
                 settings: DhcpSettings | None = None) -> None:
        self.settings = settings or DhcpSettings()
        self.table = table
        self._seen: dict[str, float] = {}  # unknown MAC -> when its sighting was recorded
        self._tokens = float(max(1, self.settings.new_mac_burst))  # new-MAC bucket
        self._tokens_at: float | None = None
        # A master of a pair that cannot reach its peer (communication-interrupted):
        # "primary" or "secondary", the half of each free pool it may give out alone;
        # None when it may use all of it (a single master, or a pair in sync).
        self.side: str | None = None
        self.me: str | None = None  # "primary"/"secondary" in a pair: its half goes first
        self.fresh: dict[int, str] = {}  # new bindings in the peer's half, not yet acked
        self.mclt = 0.0  # s a pool lease may be extended past what the peer knows
        self._synced: dict[int, float] = {}  # ip -> expiry the peer knew (set with side)
        self.whole_after: float | None = None  # alone: the whole pool from then (partner-down)
        self.reload(inventory)

    def interrupted(self, side: str | None, mclt: float = 0.0,
                    whole_after: float | None = None) -> None:
        """Enter (``side``) or leave (None) communication-interrupted. Pool leases are
        then given or extended at most ``mclt`` past the expiry the peer last knew (a new
        one: ``mclt`` from now), and an address another machine held is not reused
        until ``mclt`` after its end. ``whole_after`` (partner-down: the peer is taken
        to be down): from then on new addresses come from the whole pool, not only this
        side's half (ISC failover: MCLT after the peer was last known to give any)."""
        if side is not None and self.side is None:
            self._synced = {ip: lease.expires for ip, lease in self.table.by_ip.items()}
        self.side, self.mclt = side, (mclt if side is not None else 0.0)
        self.whole_after = whole_after if side is not None else None
        if side is None:
            self._synced = {}

    def _alone_side(self, now: float) -> str | None:
        """The half new addresses come from: None (the whole pool) in sync, or alone in
        partner-down once ``whole_after`` has passed."""
        if self.side is None or (self.whole_after is not None and now >= self.whole_after):
            return None
        return self.side

    def reload(self, inventory: Inventory) -> None:
        self.inv = inventory
        self._pools: dict[tuple[str, bytes], Pool] = {}  # (network, link.key)
        self._hosts = {mac: h for h in inventory.hosts.values() for mac in h.macs}
        self._net_options = {name: network_options(net)
                             for name, net in inventory.networks.items()}
        self._networks = [(net.cidr, net) for net in inventory.networks.values()]
        self._lease_options = {known: lease_options(t) for known, t in (
            (True, self.settings.lease_time), (False, self.settings.pool_lease_time))}
        # What every reply of one kind on one network starts with (``_answer``), and the
        # destination of replies through each relay: the same few, built once per reload.
        self._base_options: dict[tuple[int, bytes, bool, bool, str], dict[int, bytes]] = {}
        self._relays: dict[IPv4Address, Destination] = {}
        # The last relay seen: (giaddr, its network, where replies through it go). The
        # decoder gives one object per header address, so ``is`` finds it without the
        # Python-level hash and containment tests of IPv4Address (perfdhcp, a rack's
        # relay: every request comes through the same one).
        self._relay: tuple[IPv4Address, Network | None, Destination] | None = None

    # -- entry point -------------------------------------------------------------
    def handle(self, req: DhcpPacket, link: Link, now: float) -> Decision:
        drop = _not_for_us(req)
        if drop:
            return Decision(drop=drop)
        host = self._hosts.get(req.mac)
        if host is None and not self.settings.discovery:
            return Decision(drop="unknown_mac")
        if self.settings.proxy:
            return self._proxy(req, link, host)
        if link.port != SERVER_PORT:
            return Decision(drop="wrong_port")
        net = self._network(req, link)
        if net is None:
            return Decision(drop="unknown_network")
        return self._dispatch(req, link, host, net, now)

    def _dispatch(self, req: DhcpPacket, link: Link, host: Host | None, net: Network,
                  now: float) -> Decision:
        mt = req.message_type
        if mt == o.DISCOVER:
            return self._discover(req, link, host, net, now)
        if mt == o.REQUEST:
            return self._request(req, link, host, net, now)
        if mt == o.INFORM:
            return self._inform(req, link, host, net)
        if mt == o.DECLINE:
            return self._decline(req, link, host, net, now)
        return self._release(req, link, host, net, now)

    def _network(self, req: DhcpPacket, link: Link) -> Network | None:
        """The client's network: the relay's (giaddr); else, for a client that has an
        address and talks to us directly (RENEWING, INFORM), the network of ciaddr,
        which may sit behind a router; else the receiving interface's."""
        giaddr = req.giaddr
        relay = self._relay
        if relay is not None and giaddr is relay[0]:
            return relay[1]
        if giaddr != ZERO:
            net = self._network_of(giaddr)
            self._relay = (giaddr, net, Destination(giaddr, SERVER_PORT))
            return net
        if req.ciaddr != ZERO and link.unicast:
            net = self._network_of(req.ciaddr)
            if net is not None:
                return net
        return self._network_of(link.address)

    def _network_of(self, address: IPv4Address) -> Network | None:
        for cidr, net in self._networks:
            if address in cidr:
                return net
        return None

    # -- message types -------------------------------------------------------------
    def _discover(self, req: DhcpPacket, link: Link, host: Host | None, net: Network,
                  now: float) -> Decision:
        if host is not None:
            ip = host.addresses.get(net.name)
            if ip is None:
                return Decision(drop="host_not_on_network", host=host.name)
            return self._answer(req, link, o.OFFER, ip, host, net, "init")
        if self.table.of(net.name, req.mac) is None and not self._admit_new(now):
            return Decision(drop="discovery_rate_limited", state="init")
        pool = self._pool(net, link)
        hint = req.requested_ip
        got = pool.allocate(self.table, req.mac, now, int(hint) if hint else None,
                            self._alone_side(now), self.mclt, self.me)
        lazy = self._sighting(req, link, net, now)
        if got is None:
            return Decision(drop="pool_exhausted", lazy=lazy)
        lazy += self.table.offer(net.name, req.mac, got, now + self.settings.offer_hold)
        d = self._answer(req, link, o.OFFER, IPv4Address(got), None, net, "init")
        d.lazy = lazy
        return d

    def _request(self, req: DhcpPacket, link: Link, host: Host | None, net: Network,
                 now: float) -> Decision:
        asked = self._requested(req, link, net)
        if isinstance(asked, Decision):
            return asked
        state, want = asked
        if host is not None:
            ip = host.addresses.get(net.name)
            if ip is None or want != ip:
                return self._nak(req, link, state, host.name, f"{want} is not {host.name}'s")
            return self._ack(req, link, host, net, ip, now, state)
        if want not in net.cidr:
            return self._nak(req, link, state, "", f"{want} is not on network {net.name}")
        if self.table.of(net.name, req.mac) is None:
            if state == "init-reboot":
                return Decision(drop="init_reboot_unknown", state=state)  # RFC 2131 4.3.2
            if not self._admit_new(now):
                return Decision(drop="discovery_rate_limited", state=state)
        pool = self._pool(net, link)
        if self._peer_answers(req, net, pool, want, now):
            # Alone, this side gives out only its own half, and no address the peer
            # may still have given: the peer (if it is up) answers this one.
            return Decision(drop="peer_half", state=state)
        asked_ip = int(want)
        if asked_ip not in pool or not self.table.free_for(asked_ip, req.mac, now):
            return self._nak(req, link, state, "", f"{want} is not free for {req.mac}")
        self._mark_fresh(req, net, pool, want)
        return self._ack(req, link, None, net, want, now, state)

    def _requested(self, req: DhcpPacket, link: Link,
                   net: Network) -> tuple[str, IPv4Address] | Decision:
        """The client's state (RFC 2131 4.3.2) and the address it asks for."""
        sid, want = req.server_id, req.requested_ip
        if sid is not None:
            if sid != link.address:  # the client chose another server's offer
                self.table.forget_offer(net.name, req.mac)
                return Decision(drop="other_server", state="selecting")
            state = "selecting"
            want = want or (req.ciaddr if req.ciaddr != ZERO else None)
        elif want is not None:
            state = "init-reboot"
        elif req.ciaddr != ZERO:
            state, want = ("renewing" if link.unicast else "rebinding"), req.ciaddr
        else:
            return Decision(drop="request_without_address")
        if want is None:
            return Decision(drop="request_without_address", state=state)
        return state, want

    def _peer_answers(self, req: DhcpPacket, net: Network, pool: Pool, want: IPv4Address,
                      now: float) -> bool:
        """Alone (communication-interrupted): is ``want`` one this side may not give?"""
        if self.side is None or int(want) not in pool:
            return False
        mine = self.table.of(net.name, req.mac)
        known = mine is not None and mine.ip == int(want)
        return not known and pool.allocate(self.table, req.mac, now, int(want),
                                           self._alone_side(now), self.mclt) != int(want)

    def _mark_fresh(self, req: DhcpPacket, net: Network, pool: Pool,
                    want: IPv4Address) -> None:
        """A new binding in the peer's half (ours is full): it must reach the peer before
        its ACK, or be dropped (see Replicator.replicate)."""
        if self.me is None or self.side is not None:
            return
        prior = self.table.of(net.name, req.mac)
        peer = "secondary" if self.me == "primary" else "primary"
        lo, hi = pool.half(peer)
        if lo <= int(want) <= hi and not (prior is not None and prior.ip == int(want)
                                          and prior.state == BOUND):
            self.fresh[int(want)] = req.mac

    def _ack(self, req: DhcpPacket, link: Link, host: Host | None, net: Network,
             ip: IPv4Address, now: float, state: str) -> Decision:
        lease_time = self.settings.lease_time if host else self.settings.pool_lease_time
        name = host.name if host else ""
        d = self._answer(req, link, o.ACK, ip, host, net, state)
        expires = now + lease_time
        if host is None and self.side is not None:
            # Alone: at most MCLT past the expiry the peer knows (it reuses the address
            # only MCLT after that; a lease it never heard of, MCLT from now), as ISC
            # failover does: a peer in partner-down may take its address MCLT after.
            expires = min(expires, self._synced.get(int(ip), now) + self.mclt)
            if expires <= now + 1:
                return Decision(drop="mclt_passed", state=state)
            if d.reply is not None and expires < now + lease_time:
                d.reply = replace(d.reply, options={**d.reply.options,
                                                    **lease_options(int(expires - now))})
        d.durable = self.table.bind(net.name, req.mac, int(ip), expires, name)
        if host is None:
            d.lazy = self._sighting(req, link, net, now)
        return d

    def _inform(self, req: DhcpPacket, link: Link, host: Host | None,
                net: Network) -> Decision:
        d = self._answer(req, link, o.ACK, ZERO, host, net, "inform", lease=False)
        return d

    def _decline(self, req: DhcpPacket, link: Link, host: Host | None, net: Network,
                 now: float) -> Decision:
        ip = req.requested_ip
        if req.server_id != link.address or ip is None:
            return Decision(drop="other_server", state="decline")
        name = host.name if host else ""
        if host is not None:  # an inventory address is in use by someone else
            return Decision(host=name, state="decline",
                            note=f"address conflict: {host.name} declined {ip}")
        share = self.settings.share
        if share is not None and int(ip) % share[1] != share[0]:
            return Decision(drop="decline_other_worker", state="decline")  # not ours to give
        lease = self.table.at(int(ip))
        if lease is None or lease.mac != req.mac:
            return Decision(drop="decline_not_leased", state="decline")
        changes = self.table.decline(net.name, int(ip), now + self.settings.decline_quarantine)
        return Decision(lazy=changes, state="decline",
                        note=f"{ip} declined by {req.mac}: quarantined")

    def _release(self, req: DhcpPacket, link: Link, host: Host | None, net: Network,
                 now: float) -> Decision:
        if req.server_id is not None and req.server_id != link.address:
            return Decision(drop="other_server", state="release")
        lease = self.table.at(int(req.ciaddr))
        if lease is None or lease.mac != req.mac:
            return Decision(drop="release_not_leased", state="release")
        return Decision(lazy=self.table.release(lease, now), state="release",
                        host=host.name if host else "")

    # -- ProxyDHCP -----------------------------------------------------------------
    def _proxy(self, req: DhcpPacket, link: Link, host: Host | None) -> Decision:
        """Boot information only, never an address (PXE 2.1 ProxyDHCP)."""
        if not (req.is_pxe or req.is_ipxe):
            return Decision(drop="not_pxe")
        mt = req.message_type
        if link.port == SERVER_PORT and mt != o.DISCOVER:
            return Decision(drop="proxy_not_discover")
        if link.port == PXE_PORT and mt not in (o.REQUEST, o.INFORM):
            return Decision(drop="proxy_not_request")
        boot = self.boot_file(req, host, link)
        if boot is None:
            return Decision(drop="no_boot_file")
        opts = {o.MESSAGE_TYPE: bytes((o.OFFER if mt == o.DISCOVER else o.ACK,)),
                o.SERVER_ID: link.address.packed, o.VENDOR_CLASS: b"PXEClient",
                o.VENDOR_SPECIFIC: PXE_VENDOR_BOOTFILE}
        if o.CLIENT_UUID in req.options:
            opts[o.CLIENT_UUID] = req.options[o.CLIENT_UUID]
        reply = self._boot_into(_reply_base(req, link, ZERO, opts), boot, link)
        to = TO_SOURCE if link.port == PXE_PORT else self._destination(req, reply)
        return Decision(reply=reply, to=to, host=host.name if host else "", state="proxy")

    # -- replies -------------------------------------------------------------------
    def _answer(self, req: DhcpPacket, link: Link, mtype: int, ip: IPv4Address,
                host: Host | None, net: Network, state: str, lease: bool = True) -> Decision:
        key = (mtype, link.key, host is not None, lease, net.name)
        base = self._base_options.get(key)
        if base is None:
            base = {o.MESSAGE_TYPE: bytes((mtype,)), o.SERVER_ID: link.address.packed}
            if lease:
                base.update(self._lease_options[host is not None])
            base.update(self._net_options[net.name])
            self._base_options[key] = base
        opts = dict(base)  # the reply's own: the steps below add to it
        if host is not None:
            opts[o.HOST_NAME] = host.name.encode("ascii")
            opts[o.DOMAIN_NAME] = self.inv.cluster.domain.encode("ascii")
        reply = _reply_base(req, link, ip, opts)
        if mtype == o.ACK and not lease:  # DHCPINFORM: RFC 2131 4.3.5
            reply = replace(reply, ciaddr=req.ciaddr)
        boot = self.boot_file(req, host, link)
        if boot is not None:
            reply = self._boot_into(reply, boot, link)
            if req.is_ipxe:  # no ProxyDHCP here: iPXE need not wait ~3 s for one
                reply.options[o.IPXE_ENCAP] = IPXE_NO_PROXY_WAIT
            if _http_client(req):  # UEFI 2.5+ 24.7.2: an HTTP boot offer echoes the class
                reply.options[o.VENDOR_CLASS] = HTTP_CLIENT
        return Decision(reply=reply, to=self._destination(req, reply),
                        host=host.name if host else "", state=state)

    def _nak(self, req: DhcpPacket, link: Link, state: str, host: str, why: str) -> Decision:
        opts = {o.MESSAGE_TYPE: bytes((o.NAK,)), o.SERVER_ID: link.address.packed,
                o.MESSAGE: why.encode("ascii", "replace")[:255]}
        reply = _reply_base(req, link, ZERO, opts)
        if req.giaddr != ZERO:  # RFC 2131 4.1: the relay must broadcast the NAK
            reply = replace(reply, flags=reply.flags | FLAG_BROADCAST)
        return Decision(reply=reply, to=self._destination(req, reply), host=host, state=state,
                        note=f"NAK: {why}")

    def _destination(self, req: DhcpPacket, reply: DhcpPacket) -> Destination:
        """RFC 2131 4.1, except that a client without an address always gets a broadcast:
        unicast to yiaddr needs an ARP entry the kernel cannot make (PXE-CLIENTS.md 5)."""
        relay = self._relay
        if relay is not None and req.giaddr is relay[0]:
            return relay[2]
        if req.giaddr != ZERO:
            to = self._relays.get(req.giaddr)
            if to is None:
                if len(self._relays) >= RELAYS_CACHED:  # bounded: giaddr is the client's word
                    self._relays.clear()
                to = self._relays[req.giaddr] = Destination(req.giaddr, SERVER_PORT)
            return to
        if reply.message_type == o.NAK:
            return TO_BROADCAST
        if req.ciaddr != ZERO:
            return Destination(req.ciaddr, CLIENT_PORT)
        return TO_BROADCAST

    # -- boot selection ------------------------------------------------------------
    def boot_file(self, req: DhcpPacket, host: Host | None, link: Link) -> str | None:
        """The boot file (a TFTP name or, for iPXE, an HTTP URL), or None for clients that
        do not netboot (udhcpc, dhclient) and architectures we have no loader for."""
        vendor = req.vendor_class
        if vendor.startswith(HTTP_CLIENT):  # UEFI HTTP boot: a URL on our HTTP service
            if req.client_arch == o.ARCH_EFI_X64_HTTP and self._have(layout.LOADER_EFI_X64):
                return self.http_url(link, layout.LOADER_EFI_X64)
            return None
        if not (vendor.startswith(b"PXEClient") or req.is_ipxe):  # req.is_pxe
            return None  # udhcpc, dhclient, perfdhcp: nothing to boot, no more to look at
        arch = req.client_arch
        bios = arch is None or arch == o.ARCH_X86_BIOS
        if host is not None and host.loader == "pxelinux" and bios:
            # even for the iPXE ROM: it is the BIOS's PXE
            return layout.LOADER_PXELINUX if self._have(layout.LOADER_PXELINUX) else None
        if req.is_ipxe:
            path = layout.ipxe_script_path(host) if host is not None else layout.DISCOVERY_SCRIPT
            return self.http_url(link, path)
        loader = None
        if arch in (o.ARCH_EFI_X64, o.ARCH_EFI_BC):
            # Secure Boot: Debian's signed shim, never the unsigned ipxe.efi (refused)
            secure = host is not None and host.loader == "grub-secure"
            loader = layout.LOADER_SHIM if secure else layout.LOADER_EFI_X64
        elif arch == o.ARCH_EFI_ARM64:
            loader = layout.LOADER_EFI_ARM64
        elif bios:
            loader = layout.LOADER_BIOS
        # Never a file that is not there: a firmware told to fetch it would only fail.
        return loader if loader is not None and self._have(loader) else None

    def _have(self, loader: str) -> bool:
        return self.settings.loaders is None or loader in self.settings.loaders

    def http_url(self, link: Link, path: str) -> str:
        port = self.settings.http_port
        base = f"http://{link.address}" + ("" if port == 80 else f":{port}")
        return f"{base}/{path}"

    @staticmethod
    def _boot_into(reply: DhcpPacket, boot: str, link: Link) -> DhcpPacket:
        """siaddr, 'file', 66 and 67 all agree (PXE-CLIENTS.md 5: set siaddr; send both)."""
        name = boot.encode("ascii")
        opts = dict(reply.options)
        opts[o.TFTP_SERVER] = str(link.address).encode("ascii")
        opts[o.BOOTFILE_NAME] = name + b"\0"
        return replace(reply, siaddr=link.address, file=name if len(name) < 128 else b"",
                       options=opts)

    # -- discovery pool ------------------------------------------------------------
    def _pool(self, net: Network, link: Link) -> Pool:
        key = (net.name, link.key)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = build_pool(self.inv, net, [link.address])
            pool.share = self.settings.share
        return pool

    def _admit_new(self, now: float) -> bool:
        """May one more new unknown MAC be answered now (the token bucket)?"""
        rate = self.settings.new_mac_rate
        if rate <= 0:
            return True
        burst = float(max(1, self.settings.new_mac_burst))
        if self._tokens_at is not None:
            self._tokens = min(burst, self._tokens + max(0.0, now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def pool_free(self, now: float) -> dict[str, int]:
        """Free addresses of each discovery pool in use, by network name (for /metrics)."""
        pools = {net: pool for (net, _), pool in self._pools.items()}
        used = dict.fromkeys(pools, 0)
        for lease in self.table.by_ip.values():
            if not lease.live(now):
                continue
            pool = pools.get(lease.network)
            if pool is not None and lease.ip in pool:
                used[lease.network] += 1
        return {net: max(0, pool.size - used[net]) for net, pool in pools.items()}

    def _sighting(self, req: DhcpPacket, link: Link, net: Network, now: float) -> list[Change]:
        last = self._seen.get(req.mac)
        if last is not None and now - last < self.settings.sighting_interval:
            return []
        if len(self._seen) >= SEEN_LIMIT:  # a flood of forged MACs must not grow it forever
            self._seen.clear()
        self._seen[req.mac] = now
        uuid = req.uuid
        return [Sighting(
            mac=req.mac, when=now, arch=req.client_arch,
            vendor_class=req.vendor_class.decode("ascii", "replace"),
            user_class=",".join(c.decode("ascii", "replace") for c in req.user_classes),
            uuid=uuid.hex() if uuid else "", interface=link.interface, network=net.name)]


def _not_for_us(req: DhcpPacket) -> str:
    """Why a packet is no request this server answers ('' if it is one)."""
    if req.op != BOOTREQUEST:
        return "not_request"
    mt = req.message_type
    if mt is None:
        return "bootp"
    if mt in (o.OFFER, o.ACK, o.NAK):
        return "server_message"
    return ""


def _http_client(req: DhcpPacket) -> bool:
    """A UEFI HTTP boot client (vendor class HTTPClient:Arch:...; arch 16 on x86-64)."""
    return req.vendor_class.startswith(HTTP_CLIENT)


def _reply_base(req: DhcpPacket, link: Link, yiaddr: IPv4Address,
                opts: dict[int, bytes]) -> DhcpPacket:
    if o.RELAY_AGENT_INFO in req.options:  # RFC 3046 2.2: echo it back
        opts[o.RELAY_AGENT_INFO] = req.options[o.RELAY_AGENT_INFO]
    return make_packet(BOOTREPLY, req.xid, req.chaddr, htype=req.htype, flags=req.flags,
                       yiaddr=yiaddr, giaddr=req.giaddr, options=opts)
