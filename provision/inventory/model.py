"""Typed, validated view of the cluster inventory.

Every object here is immutable and already checked: code that receives an
``Inventory`` never has to re-validate it. The loader (``load.py``) is the only
place that builds these from the loose on-disk YAML.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

IPv4Address = ipaddress.IPv4Address
IPv4Network = ipaddress.IPv4Network
IPv6Address = ipaddress.IPv6Address
IPv6Network = ipaddress.IPv6Network

# Linux bonding modes (Documentation/networking/bonding.rst) and how many
# slaves each needs to be worth having. "none" means a single NIC, no bond.
BOND_MODES: dict[str, int] = {
    "balance-rr": 2,
    "active-backup": 2,
    "balance-xor": 2,
    "broadcast": 2,
    "802.3ad": 2,
    "balance-tlb": 2,
    "balance-alb": 2,
    "none": 1,
}

# IPVS schedulers known to ipvsadm(8) and keepalived.
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh")
FORWARDING = ("NAT", "DR", "TUN")
PROTOCOLS = ("TCP", "UDP", "SCTP")
CHECK_TYPES = ("HTTP_GET", "SSL_GET", "TCP_CHECK", "SMTP_CHECK", "MISC_CHECK")
BOOT_MODES = ("netboot", "disk")
LOADERS = ("ipxe", "pxelinux", "grub-secure")
FIRMWARES = ("bios", "uefi")  # what a hardware type can boot from (hwtypes.X.firmware)
DISK_PARTS = ("boot", "swap", "db", "fs")


@dataclass(frozen=True)
class MasterPair:
    """cluster.masters.pair: two masters behind one VIP (issue 18). ``master_address``
    is then the VIP; each master keeps its own inventory address, and the two talk
    (lease replication) between those addresses."""

    vrid: int  # VRRP virtual router id of the master VIP (1-255)
    port: int = 6767  # TCP port of the replication channel, on each master's own address
    preempt: bool = True  # the primary takes the VIP back once it has resynced
    key_file: str = "master-pair.key"  # relative: in the state dir (`dsas master key`)
    peer_timeout: float = 1.0  # s the active waits for the peer's ack before going on alone
    mclt: int = 600  # s a lease may outlive what the peer knows (ISC failover's MCLT)
    advert_int: float = 1.0  # s between VRRP adverts (takeover ~3 x this); < 1 s: VRRPv3
    # Alone for MCLT, take the whole pool (ISC failover's partner-down, entered without
    # an operator like dhcpd's auto-partner-down): safe only if the peer is down, not cut off
    auto_partner_down: bool = False


@dataclass(frozen=True)
class Cluster:
    """The cluster section: name, domain, masters and cluster-wide settings."""

    name: str
    domain: str
    master_address: IPv4Address
    primary_master: str
    secondary_master: str | None
    http_port: int = 80
    kernel_args: str = ""
    templates: str | None = None  # directory of template overrides
    master_address6: IPv6Address | None = None  # the master's IPv6 address (netboot6 hosts)
    pair: MasterPair | None = None  # two masters behind the VIP master_address (issue 18)


@dataclass(frozen=True)
class Network:
    """A network of the inventory: its prefix, gateway, VLAN and options."""

    name: str
    cidr: IPv4Network
    gateway: IPv4Address | None
    vlan: int | None
    dns: tuple[IPv4Address, ...]
    mtu: int | None = None
    ipv6: IPv6Network | None = None  # the network's IPv6 prefix (advertised by RA)
    gateway6: IPv6Address | None = None  # an IPv6 router on it (hosts' default route)

    @property
    def prefixlen(self) -> int:
        return self.cidr.prefixlen

    @property
    def netmask(self) -> IPv4Address:
        return self.cidr.netmask


@dataclass(frozen=True)
class Partition:
    """One partition of a hardware type's disk layout."""

    part: str  # boot | swap | db | fs
    device: str  # e.g. /dev/sda1
    size_mib: int | None  # None: the rest of the disk
    fstype: str
    mountpoint: str | None


@dataclass(frozen=True)
class Module:
    """A kernel module a hardware type loads, with its options."""

    name: str
    options: str = ""

    def line(self) -> str:
        return f"{self.name} {self.options}".strip()


@dataclass(frozen=True)
class HwType:
    """A hardware type: its NICs, disk, layout and modules."""

    name: str
    nics: tuple[str, ...]
    disk: str | None  # whole-disk device, e.g. /dev/sda
    label: str  # gpt | msdos
    partitions: tuple[Partition, ...]
    modules: tuple[Module, ...]
    firmware: tuple[str, ...] = FIRMWARES  # loader grub-secure needs "uefi"

    def partition(self, part: str) -> Partition | None:
        for p in self.partitions:
            if p.part == part:
                return p
        return None


@dataclass(frozen=True)
class Image:
    """An image a role boots: name, version and kernel arguments."""

    name: str
    version: str
    kernel_args: str = ""


@dataclass(frozen=True)
class Bond:
    """A bond of a host's NICs (Linux bonding options)."""

    mode: str = "active-backup"
    miimon: int = 100
    primary: str | None = None
    arp_ip_target: tuple[IPv4Address, ...] = ()
    arp_interval: int = 0

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def options(self) -> str:
        """Bonding driver options, as `modprobe bonding` or sysfs take them."""
        opts = [f"mode={self.mode}"]
        if self.arp_ip_target:
            opts.append(f"arp_interval={self.arp_interval}")
            opts.append("arp_ip_target=" + ",".join(str(a) for a in self.arp_ip_target))
        else:
            opts.append(f"miimon={self.miimon}")
        if self.primary:
            opts.append(f"primary={self.primary}")
        return " ".join(opts)


@dataclass(frozen=True)
class Push:
    """``push: {multicast: true, root: /srv}`` on a role or host: the node runs uftpd from
    boot (dsas-init), receiving dsas-push's multicast sessions under ``root``; with
    ``agent: true`` that uftpd applies the push's signed orders itself (push/agent.py)."""

    multicast: bool = False
    root: str = "/srv"
    agent: bool = False


@dataclass(frozen=True)
class Role:
    """A role: its services, networks, boot mode and image."""

    name: str
    services: tuple[str, ...]
    networks: tuple[str, ...]
    boot: str
    image: str | None
    loader: str
    hwtype: str | None
    bond: Bond
    modules: tuple[Module, ...]
    kernel_args: str = ""
    push: Push = field(default_factory=lambda: Push())


@dataclass(frozen=True)
class Interface:
    """One layer-3 interface of a host: an address on one network."""

    network: Network
    address: IPv4Address
    device: str  # bond0, bond0.2, eth0, eth0.2
    address6: IPv6Address | None = None  # on network.ipv6, when the host has one

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.network.prefixlen}"

    @property
    def cidr6(self) -> str:
        """address6/prefix length, or "" without an IPv6 address."""
        if self.address6 is None or self.network.ipv6 is None:
            return ""
        return f"{self.address6}/{self.network.ipv6.prefixlen}"


@dataclass(frozen=True)
class Host:
    """A host of the inventory: its role, hardware, MACs and addresses."""

    name: str
    role: Role
    hwtype: HwType
    macs: tuple[str, ...]  # lower-case aa:bb:cc:dd:ee:ff, in hwtype NIC order
    addresses: dict[str, IPv4Address]  # network name -> address (in inventory order)
    bond: Bond
    boot: str
    image: str | None
    loader: str
    kernel_args: str
    services: tuple[str, ...]
    networks_in_order: tuple[Network, ...] = field(default=(), repr=False)
    addresses6: dict[str, IPv6Address] = field(default_factory=dict)  # network -> address
    netboot6: bool = False  # boots over IPv6: its boot files name the master's IPv6 address
    push: Push = field(default_factory=lambda: Push())  # the role's, or the host's own

    @property
    def base_device(self) -> str:
        """The device that carries untagged traffic: bond0, or the single NIC."""
        return "bond0" if self.bond.enabled else self.hwtype.nics[0]

    @cached_property
    def interfaces(self) -> tuple[Interface, ...]:
        out = []
        for net in self.networks_in_order:
            dev = self.base_device if net.vlan is None else f"{self.base_device}.{net.vlan}"
            out.append(Interface(net, self.addresses[net.name], dev,
                                 self.addresses6.get(net.name)))
        return tuple(out)

    @property
    def primary_interface(self) -> Interface:
        """The first network: the one the host boots and is known on."""
        return self.interfaces[0]

    @property
    def nic_macs(self) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.hwtype.nics, self.macs, strict=True))

    def interface_on(self, network: str) -> Interface | None:
        for itf in self.interfaces:
            if itf.network.name == network:
                return itf
        return None


@dataclass(frozen=True)
class HealthCheck:
    """How a balancer checks a real server of a virtual service."""

    type: str
    path: str | None = None
    status: int | None = None
    digest: str | None = None
    port: int | None = None
    command: str | None = None
    connect_timeout: int = 3
    retry: int = 3
    delay_before_retry: int = 3


@dataclass(frozen=True)
class VirtualService:
    """A balanced service: its VIP, port, protocol and the role that serves it."""

    name: str
    vip: IPv4Address
    port: int
    protocol: str
    scheduler: str
    forwarding: str
    persistence: int
    role: str
    real_port: int
    weight: int
    check: HealthCheck
    pair: str


# Backups' priorities step down by this much. When the VIP holder dies, each backup
# takes over after 3 adverts plus its skew, (256 - priority) / 256 advert intervals: one
# priority apart, two backups' timers are 4 ms apart at advert_int 1, less than a busy
# guest takes to hear the first one's advert (CI saw w2 take the inside VIP beside lvs2).
# 20 apart they are 78 ms apart.
BACKUP_PRIORITY_STEP = 20
# A director taking the VIPs from one that leaves its pair (`dsas assign`) runs this for
# a moment, with preempt: above every priority an inventory may give (the active's is
# at most 253), so it takes them while the leaving one still holds them.
TAKEOVER_PRIORITY = 254


@dataclass(frozen=True)
class LvsPair:
    """Two directors (active, backup) that hold the VIPs with keepalived."""

    name: str
    active: str
    backup: str
    virtual_router_id: int
    priority_active: int
    priority_backup: int
    auth_type: str | None
    auth_pass: str | None
    advert_int: float = 1  # seconds; fractional (VRRPv3, centiseconds) when sub-second
    gateway_vips: dict[str, IPv4Address] = field(default_factory=dict)  # network -> VIP
    # Further backups after ``backup``, in inventory order, each BACKUP_PRIORITY_STEP
    # lower: a host moved to the lvs role joins the pair this way (issue 16).
    more_backups: tuple[str, ...] = ()
    preempt: bool = True  # the active takes the VIPs back when it returns
    preempt_delay: int = 0  # seconds it waits first (keepalived's preempt_delay)

    @property
    def backups(self) -> tuple[str, ...]:
        return (self.backup, *self.more_backups)

    @property
    def directors(self) -> tuple[str, ...]:
        return (self.active, *self.backups)

    @property
    def vrrp_version(self) -> int:
        """3 when advert_int is sub-second or fractional (VRRPv3 adverts are in
        centiseconds; v2's in whole seconds)."""
        return 2 if float(self.advert_int).is_integer() else 3

    def priority_of(self, host: str) -> int:
        if host == self.active:
            return self.priority_active
        return self.priority_backup - BACKUP_PRIORITY_STEP * self.backups.index(host)


@dataclass(frozen=True)
class Inventory:
    """The whole validated inventory, with lookups by MAC, address and name."""

    source: str
    cluster: Cluster
    networks: dict[str, Network]
    hwtypes: dict[str, HwType]
    images: dict[str, Image]
    roles: dict[str, Role]
    hosts: dict[str, Host]
    virtual_services: dict[str, VirtualService]
    lvs_pairs: dict[str, LvsPair]
    service_units: dict[str, tuple[str, ...]] = field(default_factory=dict)

    # -- lookups shared by every service (the "policy" questions) --------------

    @cached_property
    def _by_mac(self) -> dict[str, Host]:
        return {mac: h for h in self.hosts.values() for mac in h.macs}

    @cached_property
    def _by_ip(self) -> dict[IPv4Address, Host]:
        return {addr: h for h in self.hosts.values() for addr in h.addresses.values()}

    def host_by_mac(self, mac: str) -> Host | None:
        return self._by_mac.get(normalize_mac(mac))

    def host_by_ip(self, address: str | IPv4Address | IPv6Address) -> Host | None:
        """The host with this inventory address (IPv4 ``addresses`` or ``addresses6``)."""
        try:
            a = ipaddress.ip_address(str(address).split("%")[0])
        except ValueError:
            return None
        if isinstance(a, IPv6Address):
            if a.ipv4_mapped is not None:
                return self._by_ip.get(a.ipv4_mapped)
            return self._by_ip6.get(a)
        return self._by_ip.get(a)

    @cached_property
    def _by_ip6(self) -> dict[IPv6Address, Host]:
        return {a: h for h in self.hosts.values() for a in h.addresses6.values()}

    def hosts_of_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts.values() if h.role.name == role]

    def network_of(self, address: IPv4Address) -> Network | None:
        for net in self.networks.values():
            if address in net.cidr:
                return net
        return None

    def lvs_hosts(self) -> Iterator[tuple[Host, LvsPair, str]]:
        """(host, pair, 'active'|'backup') for every LVS host."""
        for pair in self.lvs_pairs.values():
            yield self.hosts[pair.active], pair, "active"
            for b in pair.backups:
                yield self.hosts[b], pair, "backup"

    def services_of_pair(self, pair: str) -> list[VirtualService]:
        return [vs for vs in self.virtual_services.values() if vs.pair == pair]

    @property
    def masters(self) -> list[Host]:
        names = [self.cluster.primary_master, self.cluster.secondary_master]
        return [self.hosts[n] for n in names if n and n in self.hosts]


def normalize_mac(mac: str) -> str:
    """Canonical MAC: lower case, colon separated. Raises ValueError if malformed."""
    raw = mac.strip().lower().replace("-", ":").replace(".", "")
    if ":" not in raw and len(raw) == 12:
        raw = ":".join(raw[i : i + 2] for i in range(0, 12, 2))
    parts = raw.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"malformed MAC address {mac!r}")
    try:
        for p in parts:
            int(p, 16)
    except ValueError:
        raise ValueError(f"malformed MAC address {mac!r}") from None
    return ":".join(parts)
