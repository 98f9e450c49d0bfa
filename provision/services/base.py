"""What every master service shares: its context and its life cycle.

A service module ``provision/services/<name>.py`` exposes
``create(ctx: ServeContext) -> Service``. ``start()`` binds sockets and starts
threads (never the constructor, so tests can build services freely);
``reload(inventory)`` swaps in a new, already validated inventory; ``alive()``
lets the supervisor notice a service that died.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..inventory.model import Inventory
from ..observability.metrics import Metrics
from ..state import StateStore

SERVICE_NAMES = ("dhcp", "tftp", "http", "dns", "ra", "dhcp6")
# What `dsas serve` runs without --only: DHCPv6 is asked for (--only ...,dhcp6).
DEFAULT_SERVICES = ("dhcp", "tftp", "http", "dns", "ra")


@dataclass
class ServeContext:
    """What every service of `dsas serve` is given: the inventory, paths, options."""

    inventory: Inventory
    interfaces: list[str]
    state_dir: Path
    boot_root: Path
    http_port: int = 80
    tftp_port: int = 69
    tftp_max_transfers: int = 128  # concurrent TFTP transfers; more get ERROR 0 "busy"
    tftp_max_per_client: int = 8  # concurrent TFTP transfers per client address
    tftp_timeout: float = 5.0  # s without progress before a TFTP transfer is abandoned
    tftp_busy_poll: int = 50  # us a TFTP transfer spins for an ACK before sleeping (0: off)
    tftp_batch: bool = True  # storms go to the batched engine (services/tftp_batch)
    tftp_batch_from: int | None = None  # live transfers from which to batch (None: CPUs)
    http_max_connections: int = 512  # open HTTP connections; more are refused at once
    http_max_per_client: int = 64  # open HTTP connections from one address
    http_header_timeout: float = 10.0  # s a connection may take to send a request head
    http_idle_timeout: float = 30.0  # s a keep-alive connection may idle between requests
    http_event_rate: float = 2.0  # boot reports per second per source address...
    http_event_burst: int = 20  # ...after a burst of this many; more get 429
    http_events_per_host: int = 100  # events kept per host (plus the last of each stage)
    dns_port: int = 53
    dns_forwarders: tuple[str, ...] = ()  # ADDR[:PORT] resolvers for names outside our zones
    dns_forward_timeout: float = 2.0  # seconds per forwarded query, all forwarders together
    bind_address: ipaddress.IPv4Address | None = None  # default: the master address
    discovery: bool = False
    discovery_rate: float = 16.0  # new unknown MACs answered per second (0: no limit)
    proxy: bool = False
    templates: Path | None = None
    dhcp6: bool = False  # DHCPv6 runs: the RA sets the managed flag on IPv6 links
    pair: Any = None  # provision.ha.pair.PairRuntime: this master of a pair (issue 18)
    inventory_path: str | None = None  # the file served (DHCP workers load it themselves)
    dhcp_workers: int = 1  # DHCP processes sharing the ports (dhcp_steer)
    dhcp_worker: int = 0  # which of them this process is (0: the one serve started)
    store: StateStore = field(init=False)
    metrics: Metrics = field(default_factory=Metrics)

    def __post_init__(self) -> None:
        self.store = StateStore(self.state_dir)
        if self.bind_address is None:
            self.bind_address = self.inventory.cluster.master_address


class Service(ABC):
    """A service of `dsas serve`: started, stopped, reloaded and watched alike."""

    name: str = "service"

    def __init__(self, ctx: ServeContext):
        self.ctx = ctx

    @abstractmethod
    def start(self) -> None:
        """Bind sockets and start serving in background threads; raise on failure."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving and release sockets; idempotent."""

    def reload(self, inventory: Inventory) -> None:  # noqa: B027 - optional hook
        """Take a new (validated) inventory. Default: services read ctx.inventory."""

    @abstractmethod
    def alive(self) -> bool:
        """False once the service has died (a thread crashed, a socket closed)."""


class SocketThreadService(Service):
    """A service that reads its own sockets (``_socks``: fd -> (interface, socket)) in one
    thread; a crash in that thread is kept in ``_error`` and makes ``alive()`` false."""

    def __init__(self, ctx: ServeContext):
        super().__init__(ctx)
        self._socks: dict[int, tuple[str, socket.socket]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for _, s in self._socks.values():
            s.close()
        self._socks.clear()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._error is None
