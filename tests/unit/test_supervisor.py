"""The supervisor behind `dsas serve`: reload keeps a good inventory, a dead service stops it."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

from provision.services.supervisor import GC_THRESHOLDS
from tests.support.supervisor_support import make


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


def test_serving_tunes_the_cyclic_gc_once_the_services_run(tmp_path: Path) -> None:
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)  # Python's defaults
        sup, _, _ = make(tmp_path)
        threading.Timer(0.1, sup.request_stop).start()
        assert sup.run() == 0
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # what was built at start is out of the walks
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
