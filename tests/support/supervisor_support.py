"""A supervisor with a fake service (test_supervisor, test_reload_limits)."""

from __future__ import annotations

import shutil
from pathlib import Path

from provision.inventory import Inventory, load
from provision.services.base import ServeContext, Service
from provision.services.supervisor import Supervisor
from tests.support.paths import FIXTURES


class FakeService(Service):
    """A pure stand-in recording calls (the supervisor is the unit under test)."""

    name = "fake"

    def __init__(self, ctx: ServeContext):
        super().__init__(ctx)
        self.started = self.stopped = False
        self.reloaded: list[Inventory] = []
        self.dead = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def reload(self, inventory: Inventory) -> None:
        self.reloaded.append(inventory)

    def alive(self) -> bool:
        return not self.dead


def make(tmp_path: Path) -> tuple[Supervisor, FakeService, Path]:
    inv_path = tmp_path / "cluster.yaml"
    shutil.copy(FIXTURES / "small.yaml", inv_path)
    ctx = ServeContext(load(inv_path), ["br0"], tmp_path / "state", tmp_path / "boot")
    svc = FakeService(ctx)
    return Supervisor(ctx, [svc], str(inv_path), poll=0.02), svc, inv_path
