"""The values DHCP policy takes and returns: where a request arrived (``Link``), what was
decided (``Decision``, ``Destination``) and how it answers (``DhcpSettings``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from ..protocol import dhcp_options as o
from ..protocol.dhcp import DhcpPacket
from .leases import Change

BROADCAST = IPv4Address("255.255.255.255")
SERVER_PORT = 67  # RFC 2131 4.1
CLIENT_PORT = 68


@dataclass(frozen=True)
class Link:
    """Where a request arrived: our interface, our address on it and its subnet."""

    interface: str
    address: IPv4Address
    network: IPv4Network
    port: int = SERVER_PORT
    unicast: bool = False  # the request was addressed to us, not broadcast
    # address.packed, made once: the policy's per-link caches are keyed by it (bytes
    # hash once; an IPv4Address hashes in Python, hash(hex(int)), on every lookup)
    key: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.address.packed)


@dataclass(frozen=True)
class Destination:
    """Where a reply goes: an address and port, or back to the request's source."""

    address: IPv4Address | None  # None: back to the request's source address and port
    port: int = CLIENT_PORT
    # (str(address), port) for sendto, made once: None with address None
    sockaddr: tuple[str, int] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sockaddr", None if self.address is None
                           else (str(self.address), self.port))

    @property
    def broadcast(self) -> bool:
        return self.address == BROADCAST


TO_SOURCE = Destination(None, 0)
TO_BROADCAST = Destination(BROADCAST)


@dataclass
class Decision:
    """What the policy decided for one request: the reply, where, and the lease changes."""

    reply: DhcpPacket | None = None
    to: Destination | None = None
    durable: list[Change] = field(default_factory=list)  # commit before sending the reply
    lazy: list[Change] = field(default_factory=list)  # commit whenever convenient
    drop: str | None = None  # why nothing is sent (a metric label), None when handled
    host: str = ""
    state: str = ""  # RFC 2131 client state the request implies, for logs
    note: str = ""  # something the operator should see in the log
    max_size: int = 576  # the client's maximum message size (option 57)

    @property
    def kind(self) -> str:
        if self.reply is None:
            return "none"
        return o.MESSAGE_TYPE_NAMES.get(self.reply.message_type or 0, "BOOTREPLY")


@dataclass(frozen=True)
class DhcpSettings:
    """How the DHCP service answers (the `dsas serve` options)."""

    discovery: bool = False
    proxy: bool = False
    http_port: int = 80
    lease_time: int = 3600  # inventory hosts, seconds
    pool_lease_time: int = 600  # discovery pool
    # How long an OFFERed pool address is kept for the client: short, so a flood of
    # forged MACs cannot hold the pool (clients REQUEST within a few seconds of an offer).
    offer_hold: int = 10
    decline_quarantine: int = 3600  # RFC 2131 4.3.3: a DECLINEd address is not reused
    sighting_interval: float = 60.0  # rewrite a discovered machine's last_seen this often
    loaders: frozenset[str] | None = None  # loaders present in the boot tree; None: all
    # New unknown MACs (no lease, no offer) answered from the pool: a token bucket of
    # new_mac_burst refilled at new_mac_rate per second; 0: no limit. Beyond it their
    # DISCOVERs and REQUESTs are dropped ("discovery_rate_limited"); PXE clients retry.
    new_mac_rate: float = 16.0
    new_mac_burst: int = 64
    # (k, n): this is DHCP worker k of n; its pools give out ip % n == k only
    share: tuple[int, int] | None = None
