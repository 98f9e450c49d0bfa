"""Hostile inventories (issue 13 item 8): refused as ordinary errors, never a crash or a hang.

A 2 KB file of 1,000 nested ``[`` used to raise RecursionError (a traceback from
`dsas check`, the end of `dsas serve` on SIGHUP); an 11-line alias bomb spun a
core forever, deaf to SIGTERM. Here: the loader, `dsas check` as a real process,
the supervisor, and a real `dsas serve` in a namespace answering dig throughout.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.testing import Lab, require_tool
from provision.inventory import InventoryError, load, loads
from provision.inventory.isolated import load_isolated
from tests.support.dns_helpers import DOMAIN, inventory_text
from tests.support.paths import FIXTURES
from tests.support.supervisor_support import make

DSAS = str(Path(sys.executable).parent / "dsas")

NESTED = "cluster: " + "[" * 1000 + "]" * 1000 + "\n"  # 2 KB
BOMB = """\
# the last alias stands for 9**9 (387 million) strings
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
cluster: *i
"""
HOSTILE = {"nested": NESTED, "bomb": BOMB}


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

SERVER, CLIENT = "198.18.0.1", "198.18.0.50"


def dig_a(lab_client, name: str) -> str:  # noqa: ANN001
    r = lab_client.run(["dig", f"@{SERVER}", "+short", "+time=1", "+tries=2", name],
                       check=False, timeout=15)
    return r.stdout.strip()


def wait_for(predicate, what: str, tries: int = 150) -> None:  # noqa: ANN001
    for _ in range(tries):  # bounded: 150 x 0.1 s plus the predicate's own time
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"never: {what}")


def test_serve_survives_sighup_with_each_hostile_file_then_stops_on_sigterm(
        tmp_path: Path) -> None:
    require_tool("dig")
    with Lab() as lab:
        master, client = lab.netns("rlm"), lab.netns("rlc")
        lab.veth(master, client, f"{SERVER}/24", f"{CLIENT}/24")
        inv = tmp_path / "c.yaml"
        inv.write_text(inventory_text(3))
        log_path = tmp_path / "serve.log"
        with open(log_path, "w") as log:
            proc = master.popen([DSAS, "serve", "-i", str(inv), "--only", "dns", "--state-dir",
                                 str(tmp_path / "state"), "--boot-root", str(tmp_path)],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: proc.poll() is None and dig_a(client, f"w101.{DOMAIN}")[:1].isdigit(),
                     "dsas serve answers")
            before = dig_a(client, f"w101.{DOMAIN}")
            for n, kind in enumerate(HOSTILE, start=1):
                inv.write_text(HOSTILE[kind])
                proc.send_signal(signal.SIGHUP)
                wait_for(lambda n=n: log_path.read_text().count("keeping the old one") >= n
                         or proc.poll() is not None, f"reload of {kind} refused")
                assert proc.poll() is None, f"dsas serve exited on the {kind} file:\n" \
                    + log_path.read_text()[-3000:]
                assert dig_a(client, f"w101.{DOMAIN}") == before  # the old inventory serves
            text = log_path.read_text()
            assert "nested deeper than 64" in text and "alias bomb" in text
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            lab.stop(proc)
        text = log_path.read_text()
        assert "Traceback" not in text, text[-3000:]
