"""Hostile inventories (issue 13 item 8): refused as ordinary errors, never a crash or a hang.

A 2 KB file of 1,000 nested ``[`` used to raise RecursionError (a traceback from
`dsas check`, the end of `dsas serve` on SIGHUP); an 11-line alias bomb spun a
core forever, deaf to SIGTERM. Here: the loader, `dsas check` as a real process,
the supervisor; a real `dsas serve` in a namespace answering dig throughout is in
tests/lab/test_reload_limits_lab.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from provision.inventory import InventoryError, load, loads
from provision.inventory.isolated import load_isolated
from tests.support.paths import FIXTURES
from tests.support.reload_support import BOMB, DSAS, HOSTILE, NESTED
from tests.support.supervisor_support import make


def test_the_hostile_files_are_what_the_issue_describes() -> None:
    assert len(NESTED) < 2100 and NESTED.count("[") == 1000
    assert len(BOMB.splitlines()) == 11


@pytest.mark.parametrize("kind", HOSTILE)
def test_loader_refuses_with_one_problem_and_a_line(kind: str) -> None:
    with pytest.raises(InventoryError) as info:
        loads(HOSTILE[kind], f"{kind}.yaml")
    (p,) = info.value.problems
    assert p.file == f"{kind}.yaml" and p.line is not None
    assert ("nested deeper than 64" if kind == "nested" else "alias bomb") in p.reason


def test_a_few_aliases_still_load() -> None:
    text = (FIXTURES / "small.yaml").read_text()
    text = text.replace("  vm:\n    nics: [eth0, eth1]", "  vm:\n    nics: &two [eth0, eth1]")
    text = text.replace("  single:\n    nics: [eth0]", "  single:\n    nics: *two")
    assert load_ok(text).hwtypes["single"].nics == ("eth0", "eth1")


def load_ok(text: str):  # noqa: ANN201
    return loads(text, "ok.yaml")


@pytest.mark.parametrize("kind", HOSTILE)
def test_dsas_check_one_line_error_exit_1_no_traceback(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(HOSTILE[kind])
    r = subprocess.run([DSAS, "check", "-i", str(path)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"{path}:" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr


@pytest.mark.parametrize("kind", HOSTILE)
def test_supervisor_reload_refuses_and_keeps_the_old(kind: str, tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    sup, svc, path = make(tmp_path)
    path.write_text(HOSTILE[kind])
    assert sup.reload() is False
    assert sup.ctx.inventory.cluster.name == "lab" and svc.reloaded == []
    assert "keeping the old one" in caplog.text


def test_isolated_load_gives_the_inventory_and_the_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    shutil.copy(FIXTURES / "small.yaml", good)
    assert load_isolated(good).hosts.keys() == load(good).hosts.keys()
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("vlan: 2", "vlan: 5000"))
    with pytest.raises(InventoryError) as info:
        load_isolated(bad)
    assert "networks.outside.vlan" in [p.key for p in info.value.problems]


def test_isolated_load_has_a_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "good.yaml"
    shutil.copy(FIXTURES / "small.yaml", path)
    # No Python starts, let alone parses, in a millisecond: the deadline always passes.
    monkeypatch.setenv("DSAS_INVENTORY_PARSE_TIMEOUT", "0.001")
    with pytest.raises(InventoryError, match="not parsed within 0.001 s"):
        load_isolated(path)


def test_isolated_load_stops_when_asked(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "good.yaml"
    shutil.copy(FIXTURES / "small.yaml", path)
    stop = threading.Event()
    stop.set()
    with pytest.raises(InventoryError, match="stopping"):
        load_isolated(path, cancel=stop)


# -- a real server -------------------------------------------------------------------------


