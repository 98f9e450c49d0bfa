"""The supervisor behind `dsas serve`: reload keeps a good inventory, a dead service stops it."""

from __future__ import annotations

import shutil
import threading
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


def test_reload_takes_a_valid_inventory(tmp_path: Path) -> None:
    sup, svc, path = make(tmp_path)
    path.write_text(path.read_text().replace("name: lab", "name: lab2"))
    assert sup.reload() is True
    assert sup.ctx.inventory.cluster.name == "lab2"
    assert svc.reloaded and svc.reloaded[-1].cluster.name == "lab2"


def test_reload_refuses_a_broken_inventory_and_keeps_the_old(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    sup, svc, path = make(tmp_path)
    path.write_text(path.read_text().replace("vlan: 2", "vlan: 5000"))
    assert sup.reload() is False
    assert sup.ctx.inventory.cluster.name == "lab" and svc.reloaded == []
    assert "networks.outside.vlan" in caplog.text and "keeping the old one" in caplog.text


def test_a_dead_service_stops_the_supervisor_with_status_1(tmp_path: Path) -> None:
    sup, svc, _ = make(tmp_path)
    threading.Timer(0.1, lambda: setattr(svc, "dead", True)).start()
    assert sup.run() == 1
    assert svc.started and svc.stopped


def test_stop_request_ends_cleanly(tmp_path: Path) -> None:
    sup, svc, _ = make(tmp_path)
    threading.Timer(0.1, sup.request_stop).start()
    assert sup.run() == 0
    assert svc.stopped
