"""Run a set of services: start them, reload on SIGHUP, stop on SIGTERM/SIGINT.

A service that dies is reported and the supervisor exits non-zero rather than
limping on with part of the boot path missing.
"""

from __future__ import annotations

import gc
import importlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from ..inventory import Inventory, InventoryError
from ..inventory.isolated import load_isolated
from ..inventory.load import read_bytes
from ..state.inventory import sha256
from .base import SERVICE_NAMES, ServeContext, Service

log = logging.getLogger(__name__)


def create_services(ctx: ServeContext, names: list[str]) -> list[Service]:
    services = []
    for name in names:
        if name not in SERVICE_NAMES:
            raise ValueError(f"unknown service {name!r} (known: {', '.join(SERVICE_NAMES)})")
        module = importlib.import_module(f"provision.services.{name}")
        services.append(module.create(ctx))
    return services


class Supervisor:
    """Runs the services, reloads them on SIGHUP, stops all when one dies."""

    def __init__(self, ctx: ServeContext, services: list[Service], inventory_path: str,
                 poll: float = 1.0, on_loaded: Callable[[str], None] | None = None):
        self.ctx = ctx
        self.on_loaded = on_loaded  # called with the sha256 of each inventory taken
        self.services = services
        self.inventory_path = inventory_path
        self.poll = poll
        self._stop = threading.Event()
        self._reload = threading.Event()

    def reload(self) -> bool:
        """Load the inventory again; keep the old one if the new one is broken.

        The file is parsed in a child process with a deadline (``load_isolated``):
        whatever it holds, the services go on serving, and SIGTERM still stops the
        process while a reload runs."""
        try:
            # The exact bytes loaded, so the receipt's sha256 names what is served.
            data = read_bytes(self.inventory_path)
            inv: Inventory = load_isolated(self.inventory_path, cancel=self._stop, data=data)
        except InventoryError as e:
            log.error("reload refused: inventory has %d problem(s); keeping the old one",
                      len(e.problems))
            for p in e.problems:
                log.error("reload refused: %s", p)
            return False
        except (OSError, ValueError) as e:  # no child process (e.g. out of descriptors)
            log.error("reload refused: cannot load %s (%s); keeping the old one",
                      self.inventory_path, e)
            return False
        self.ctx.inventory = inv
        for s in self.services:
            try:
                s.reload(inv)
            except Exception:
                log.exception("service %s could not take the new inventory", s.name)
        if self.on_loaded is not None:
            self.on_loaded(sha256(data))
        log.info("reloaded inventory %s: %d hosts", self.inventory_path, len(inv.hosts))
        return True

    def request_reload(self) -> None:
        """Reload at the next tick (as SIGHUP does)."""
        self._reload.set()

    def request_stop(self) -> None:
        self._stop.set()

    def install_signals(self) -> None:
        def on_term(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self._reload.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)

    def run(self, on_tick: Callable[[], None] | None = None,
            on_started: Callable[[], None] | None = None) -> int:
        started: list[Service] = []
        try:
            for s in self.services:
                s.start()
                started.append(s)
                log.info("service %s started", s.name)
            tune_gc()
            if on_started is not None:
                on_started()
            while not self._stop.wait(self.poll):
                if self._reload.is_set():
                    self._reload.clear()
                    self.reload()
                dead = [s.name for s in started if not s.alive()]
                if dead:
                    log.error("service(s) died: %s; stopping", ", ".join(dead))
                    return 1
                if on_tick:
                    on_tick()
            return 0
        finally:
            for s in reversed(started):
                try:
                    s.stop()
                except Exception:
                    log.exception("service %s did not stop cleanly", s.name)
            log.info("stopped")


# The cyclic GC, for a long-running server (issue 20). Its full collections walk every
# tracked object, and a DHCP lease table of 100,000 leases is that many: with Python's
# defaults (700, 10, 10) they cost a quarter of a 4-way exchange's CPU at 100,000 leases
# (`python -m bench dhcpcpu` with a preloaded table: 118 us per client, 84 with the GC
# off, 89 with these thresholds). Young collections stay (cycles are still freed), 70
# times less often; what the services built at start (the inventory, the loaded leases)
# is frozen out of the collections.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Once every service has started: freeze what exists, collect less often."""
    gc.collect()
    gc.freeze()
    if gc.get_threshold()[0] < GC_THRESHOLDS[0]:
        gc.set_threshold(*GC_THRESHOLDS)
