"""Inventory edits through the real `dsas` command: only the lines that must change, the
whole result validated first, a lock, stale edits refused, atomic writes, history."""

from __future__ import annotations

import difflib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from provision.inventory import load, loads
from provision.inventory.commit import StaleError, commit, read
from provision.inventory.edit import (
    Document,
    EditError,
    add_host,
    assign_role,
    merge_lines,
    remove_host,
    set_host,
)
from provision.services.servepid import PID_FILE, notify_serve
from tests.support.paths import EXAMPLE

DSAS = str(Path(sys.executable).with_name("dsas"))
W108_BOND = "    bond: {primary: eth1}         # eth0's switch port is flaky: prefer eth1\n"


def dsas(*args: str, state: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # `assign --yes` runs the live steps, which try the example's directors over SSH:
    # in a network namespace of its own (loopback only, down) nothing leaves this machine
    alone = ["unshare", "--map-root-user", "--net"] if args[:1] == ("assign",) else []
    return subprocess.run([*alone, DSAS, *args, "--state-dir", str(state)], capture_output=True,
                          text=True, timeout=60, input=stdin if stdin is not None else "")


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    p = tmp_path / "cluster.yaml"
    shutil.copy(EXAMPLE, p)
    return p


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def changes(before: str, after: str) -> list[tuple[str, list[str], list[str]]]:
    """(tag, old lines, new lines) for every block that differs."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    return [(tag, a[i1:i2], b[j1:j2])
            for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False)
            .get_opcodes() if tag != "equal"]


def test_host_add_inserts_one_line_after_its_role_and_nothing_else(inv: Path,
                                                                   state: Path) -> None:
    before = inv.read_text()
    r = dsas("host", "add", "w109", "-i", str(inv), "--role", "web",
             "--mac", "52:54:00:00:01:09", "--mac", "52-54-00-00-11-09", state=state)
    assert r.returncode == 0, r.stderr
    after = inv.read_text()
    new = ('  w109: {role: web, macs: ["52:54:00:00:01:09", "52:54:00:00:11:09"], '
           'addresses: {inside: 198.18.0.3}}\n')
    assert changes(before, after) == [("insert", [], [new])]
    lines = after.splitlines(keepends=True)
    assert lines[lines.index(new) - 1] == W108_BOND  # after the last web host (w108)
    assert "inside 198.18.0.3 (lowest free)" in r.stdout
    assert load(inv).hosts["w109"].addresses["inside"].exploded == "198.18.0.3"


def test_host_set_and_rm_touch_only_their_lines_and_keep_comments(inv: Path,
                                                                  state: Path) -> None:
    before = inv.read_text()
    r = dsas("host", "set", "w108", "bond.primary=eth0", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    mid = inv.read_text()
    assert changes(before, mid) == [("replace", [W108_BOND], [W108_BOND.replace("eth1}", "eth0}")])]
    r = dsas("host", "rm", "db3", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    [(tag, old, new)] = changes(mid, inv.read_text())
    assert tag == "delete" and old[0].startswith("  db3: {role: db") and new == []


def test_a_bad_edit_gets_every_error_at_once_and_the_file_is_untouched(inv: Path,
                                                                       state: Path) -> None:
    before = inv.read_bytes()
    # w101's MAC and address, and a second NIC too many for the hardware type
    r = dsas("host", "add", "w109", "-i", str(inv), "--role", "web",
             "--mac", "52:54:00:00:01:01", "--mac", "52:54:00:00:11:09",
             "--mac", "52:54:00:00:21:09", "--address", "inside=198.18.1.1", state=state)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "nothing written" in r.stderr
    assert "MAC 52:54:00:00:01:01 is already used by host" in r.stderr
    assert "198.18.1.1 is already used by host" in r.stderr
    assert "3 MACs for hardware type S6014HT" in r.stderr
    assert inv.read_bytes() == before
    # edit-level errors come all together too
    r = dsas("host", "add", "w109", "-i", str(inv), "--role", "web", "--mac", "zz",
             "--mac", "yy", state=state)
    assert r.returncode == 1 and "'zz'" in r.stderr and "'yy'" in r.stderr
    assert inv.read_bytes() == before
    assert not (state / "state.db").exists() or "no history" in dsas(
        "inventory", "log", "-i", str(inv), state=state).stdout


def test_addresses_are_the_lowest_free_skipping_everything_claimed(tmp_path: Path) -> None:
    text = """\
cluster: {name: t, domain: t.test, master_address: 198.18.4.1, masters: {primary: m}}
networks:
  a: {cidr: 198.18.4.0/29, gateway: 198.18.4.2, dns: [198.18.4.3]}
  b: {cidr: 198.18.5.0/30, vlan: 2}
hwtypes: {vm: {nics: [eth0]}}
images: {i: {version: '1'}}
roles:
  m: {services: [], networks: [a], hwtype: vm, boot: disk, bond: {mode: none}}
  web: {services: [], networks: [a, b], hwtype: vm, image: i, bond: {mode: none}}
hosts:
  m: {role: m, macs: ["52:54:00:00:00:01"], addresses: {a: 198.18.4.1}}
  w1: {role: web, macs: ["52:54:00:00:00:02"], addresses: {a: 198.18.4.5, b: 198.18.5.1}}
lvs_pairs: {}
virtual_services:
  v: {vip: 198.18.4.4, port: 80, role: web, check: {type: TCP_CHECK}}
"""
    doc = Document(text)
    # .0 network, .1 master, .2 gateway, .3 dns, .4 VIP, .5 w1 -> .6; b: .1 taken -> .2
    why = add_host(doc, "w2", "web", ["52:54:00:00:00:03"], {})
    assert why == {"a": "lowest free", "b": "lowest free"}
    assert dict(doc.host("w2")["addresses"]) == {"a": "198.18.4.6", "b": "198.18.5.2"}
    with pytest.raises(EditError, match=r"network a \(198.18.4.0/29\) has no free address"):
        add_host(doc, "w3", "web", ["52:54:00:00:00:04"], {})  # .7 is the broadcast
    assert "w3" not in doc.data["hosts"]


def test_merge_keeps_original_spacing_on_lines_the_edit_does_not_touch() -> None:
    original = "a:\n  x:   1    # aligned\n  y:   2\n"
    base = "a:\n  x: 1    # aligned\n  y: 2\n"
    edited = "a:\n  x: 1    # aligned\n  y: 3\n"
    assert merge_lines(original, base, edited) == "a:\n  x:   1    # aligned\n  y: 3\n"


def test_log_diff_and_revert_restore_the_previous_file_byte_for_byte(inv: Path,
                                                                    state: Path) -> None:
    original = inv.read_bytes()
    r = dsas("host", "set", "w101", "kernel_args=quiet", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    edited = inv.read_bytes()
    r = dsas("inventory", "diff", "-i", str(inv), state=state)
    assert r.returncode == 0 and r.stdout.startswith("--- ")
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("+  w101:")] == [
        '+  w101: {role: web, macs: ["52:54:00:00:01:01", "52:54:00:00:11:01"], '
        'addresses: {inside: 198.18.1.1}, kernel_args: quiet}']
    r = dsas("inventory", "revert", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    assert inv.read_bytes() == original
    log = dsas("inventory", "log", "-i", str(inv), state=state).stdout
    assert "found on disk" in log and "host set w101 kernel_args=quiet" in log
    assert "inventory revert 1" in log and "3*" in log
    # the revert is an edit with history: reverting it brings the edit back
    assert dsas("inventory", "revert", "-i", str(inv), state=state).returncode == 0
    assert inv.read_bytes() == edited
    r = dsas("inventory", "revert", "99", "-i", str(inv), state=state)
    assert r.returncode == 2 and "no revision 99" in r.stderr


def test_write_is_atomic_keeps_the_mode_and_leaves_no_temporary(inv: Path,
                                                                state: Path) -> None:
    inv.chmod(0o640)
    ino = inv.stat().st_ino
    assert dsas("host", "set", "w101", "boot=disk", "-i", str(inv), state=state).returncode == 0
    assert inv.stat().st_mode & 0o777 == 0o640
    assert inv.stat().st_ino != ino  # renamed into place, not rewritten in place
    assert sorted(p.name for p in inv.parent.iterdir()) == [".cluster.yaml.lock",
                                                            "cluster.yaml", "state"]


HOLD_LOCK = """
import sys
from provision.inventory.commit import EditLock
with EditLock(sys.argv[1], "hand-held lock for a test"):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_a_second_edit_is_refused_while_another_holds_the_lock(inv: Path, state: Path) -> None:
    before = inv.read_bytes()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(inv)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        r = dsas("host", "set", "w101", "boot=disk", "-i", str(inv), state=state)
        assert r.returncode == 1
        assert f"another edit of the inventory is in progress (pid {holder.pid}: " \
               "hand-held lock for a test); nothing written" in r.stderr
        assert inv.read_bytes() == before
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    r = dsas("host", "set", "w101", "boot=disk", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr


def test_an_edit_is_refused_if_the_file_changed_since_it_was_read(inv: Path,
                                                                  state: Path) -> None:
    snap = read(inv)  # this process starts an edit...
    doc = Document(snap.text, str(inv))
    add_host(doc, "w109", "web", ["52:54:00:00:01:09", "52:54:00:00:11:09"], {})
    # ...another process changes the file meanwhile
    r = dsas("host", "set", "w101", "boot=disk", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    theirs = inv.read_bytes()
    with pytest.raises(StaleError, match="changed since this command read it"):
        commit(inv, snap, doc.text(), "test", state)
    assert inv.read_bytes() == theirs
    # a hand edit (no lock, no history) is recorded as found on disk by the next edit
    inv.write_text(inv.read_text() + "# a hand edit\n")
    r = dsas("host", "set", "w102", "boot=disk", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    log = dsas("inventory", "log", "-i", str(inv), state=state).stdout
    assert log.count("found on disk") == 2


def test_assign_dry_run_prints_the_plan_and_writes_nothing(inv: Path, state: Path) -> None:
    before = inv.read_bytes()
    r = dsas("assign", "log1", "web", "--dry-run", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "plan: log1: role log -> web" in out
    assert "services stop:  syslog  (units rsyslog)" in out
    assert "services start: httpd, shop, blog" in out
    assert "pools leave:    mail (203.0.113.30:25, pair lb)" in out
    assert "pools join:     www (203.0.113.10:80, pair lb); www-tls" in out
    assert "reboot: yes (image base -> web)" in out
    assert "-ROLE=log" in out and "+ROLE=web" in out
    assert "dry run: nothing written" in out
    assert inv.read_bytes() == before
    r = dsas("assign", "log1", "lvs", "--dry-run", "--json", "-i", str(inv), state=state)
    plan = json.loads(r.stdout)
    assert plan["mode"] == "live" and plan["reboot"] is False
    assert plan["services_stop"] == ["syslog"] and plan["services_start"] == ["lvs"]
    assert [p["virtual_service"] for p in plan["pools_leave"]] == ["mail"]
    assert plan["pools_join"] == []
    # kept on inside; outside: .1 gateway, .10 .20 .30 VIPs, .11 .12 the directors -> .2
    assert plan["addresses_after"] == {"inside": "198.18.3.1", "outside": "203.0.113.2"}
    assert plan["addresses_chosen"] == {"inside": "kept", "outside": "lowest free"}
    assert plan["written"] is False and plan["live_steps_implemented"] is True
    assert inv.read_bytes() == before


def test_assign_asks_then_writes_and_names_the_live_step_that_failed(inv: Path,
                                                                    state: Path) -> None:
    before = inv.read_text()
    r = dsas("assign", "log1", "web", "-i", str(inv), state=state)  # stdin is no terminal
    assert r.returncode == 1 and "not confirmed" in r.stderr
    assert inv.read_text() == before
    # the example farm's directors do not answer here: the drain's reload fails, and the
    # inventory is put back byte for byte (a revision of its own), the host in its pools
    r = dsas("assign", "log1", "web", "--yes", "--timeout", "1", "-i", str(inv), state=state)
    assert r.returncode == 1, r.stderr
    [err] = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert err.startswith("error: log1: step drain failed: reload refused on lvs1"), err
    assert "put back: inventory back to role log" in err, err
    assert "deliver: not-run (drain failed)" in r.stdout
    assert "revert: done" in r.stdout
    assert inv.read_text() == before and load(inv).hosts["log1"].role.name == "log"
    log = dsas("inventory", "log", "-i", str(inv), state=state).stdout
    assert "assign log1 web" in log and "revert of the failed assign log1 web" in log
    from provision.balancer import members as lbmembers
    from provision.state import StateStore
    store = StateStore(state)
    try:
        assert lbmembers.of_host(lbmembers.load(store), "log1") == []  # not held anywhere
    finally:
        store.close()
    r = dsas("assign", "nosuch", "web", "--dry-run", "-i", str(inv), state=state)
    assert r.returncode == 1 and r.stderr.startswith("error: no host 'nosuch'")


def test_enlist_refuses_a_machine_that_was_never_discovered(inv: Path, state: Path) -> None:
    state.mkdir()
    (state / "state.db").touch()
    r = dsas("enlist", "52:54:00:aa:00:01", "w109", "--role", "web", "-i", str(inv),
             state=state)
    assert r.returncode == 1 and "is not in `dsas discovered`" in r.stderr


def test_help_teaches_with_examples() -> None:
    for cmd in (["host"], ["host", "add"], ["host", "set"], ["enlist"], ["assign"],
                ["inventory"]):
        r = subprocess.run([DSAS, *cmd, "--help"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "Example" in r.stdout, cmd


def test_a_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    # our own pid, in a pid file nobody holds the lock on (a serve that died): were it
    # signalled, SIGHUP would end this test run
    (tmp_path / PID_FILE).write_text(json.dumps({"pid": os.getpid(), "inventory": "x"}))
    old = signal.signal(signal.SIGHUP, lambda *a: pytest.fail("signalled a stale pid"))
    try:
        n = notify_serve(tmp_path, "x", "0" * 64, timeout=0.1)
    finally:
        signal.signal(signal.SIGHUP, old)
    assert n.pid is None and not n.reloaded and "no dsas serve runs" in n.message


def test_the_serve_receipt_names_the_exact_bytes_it_took(tmp_path: Path) -> None:
    from provision.services.base import ServeContext
    from provision.services.supervisor import Supervisor
    from provision.state.inventory import sha256

    inv = tmp_path / "cluster.yaml"
    shutil.copy(EXAMPLE, inv)
    got: list[str] = []
    ctx = ServeContext(load(inv), [], tmp_path / "state", tmp_path / "boot")
    sup = Supervisor(ctx, [], str(inv), on_loaded=got.append)
    inv.write_text(inv.read_text().replace("name: example", "name: example2"))
    assert sup.reload() is True and got == [sha256(inv.read_bytes())]
    inv.write_text("cluster: [")  # broken: refused, no receipt
    assert sup.reload() is False and len(got) == 1


def test_assign_yes_json_is_one_json_document_on_stdout(inv: Path, state: Path) -> None:
    r = dsas("assign", "log2", "web", "--yes", "--json", "--timeout", "1", "-i", str(inv),
             state=state)
    assert r.returncode == 1, r.stderr  # the example's directors do not answer here
    out = json.loads(r.stdout)
    assert out["written"] is True and isinstance(out["revision"], int)
    assert out["live_steps_implemented"] is True and out["ok"] is False
    assert out["failed_step"] == "drain" and "step drain failed" in r.stderr
    assert out["reverted"] is True and out["host_back"] is True
    assert load(inv).hosts["log2"].role.name == "log"  # put back


def test_history_keeps_the_last_revisions_only(tmp_path: Path) -> None:
    from provision.state import StateStore
    from provision.state.inventory import InventoryHistory

    store = StateStore(tmp_path)
    h = InventoryHistory(store, limit=3)
    f = tmp_path / "c.yaml"
    for i in range(6):
        with store.transaction() as conn:
            h.record(conn, f, str(i).encode(), str(i + 1).encode(), f"edit {i}")
    assert [r.content for r in h.revisions(f)] == [b"4", b"5", b"6"]
    store.close()


def test_comments_between_entries_stay_where_they_were(inv: Path, state: Path) -> None:
    # a comment introducing the db hosts, and a block-style host last before a section
    text = inv.read_text().replace("  db1: {", "\n  # the database servers\n  db1: {")
    text = text.replace(
        '  log2: {role: log, macs: ["52:54:00:00:03:02", "52:54:00:00:13:02"], '
        'addresses: {inside: 198.18.3.2}}\n',
        '  log2:\n    role: log\n    macs: ["52:54:00:00:03:02", "52:54:00:00:13:02"]\n'
        '    addresses:\n      inside: 198.18.3.2   # the last one\n')
    inv.write_text(text)
    r = dsas("host", "add", "w109", "-i", str(inv), "--role", "web", "--mac",
             "52:54:00:00:01:09", "--mac", "52:54:00:00:11:09", state=state)
    assert r.returncode == 0, r.stderr
    lines = inv.read_text().splitlines()
    i = lines.index("  # the database servers")
    assert lines[i - 2].startswith("  w109: {") and lines[i - 1] == "" and \
        lines[i + 1].startswith("  db1: {")
    r = dsas("host", "add", "log3", "-i", str(inv), "--role", "log", "--mac",
             "52:54:00:00:03:03", "--mac", "52:54:00:00:13:03", state=state)
    assert r.returncode == 0, r.stderr
    after_add = inv.read_text()
    assert "      inside: 198.18.3.2   # the last one\n  log3: {role: log," in after_add
    assert "addresses: {inside: 198.18.0.4}}\n\nlvs_pairs:\n" in after_add
    r = dsas("host", "rm", "log3", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    assert dsas("host", "rm", "w109", "-i", str(inv), state=state).returncode == 0
    assert inv.read_text() == text


def test_assign_undo_returns_the_host_to_its_role_and_addresses(inv: Path,
                                                                state: Path) -> None:
    original = inv.read_bytes()
    r = dsas("assign", "--undo", "log1", "--yes", "-i", str(inv), state=state)
    assert r.returncode == 1 and "nothing to undo" in r.stderr
    # a failed assign is reverted at once: nothing for --undo to walk back
    r = dsas("assign", "log1", "lvs", "--yes", "--timeout", "1", "-i", str(inv), state=state)
    assert r.returncode == 1 and "step drain failed" in r.stderr, r.stderr
    r = dsas("assign", "--undo", "log1", "--yes", "-i", str(inv), state=state)
    assert r.returncode == 1 and "nothing to undo" in r.stderr, r.stderr
    # an assign that went through (its live steps cannot here: its revision is written
    # as `dsas assign` writes it)
    doc = Document(inv.read_text())
    assign_role(doc, "log1", "lvs", {})
    assert commit(inv, read(inv), doc.text(), "assign log1 lvs", state) is not None
    assert dsas("host", "set", "w101", "boot=disk", "-i", str(inv), state=state).returncode == 0
    r = dsas("assign", "--undo", "log1", "--dry-run", "--json", "-i", str(inv), state=state)
    plan = json.loads(r.stdout)
    assert (plan["old_role"], plan["new_role"]) == ("lvs", "log")
    assert plan["addresses_after"] == {"inside": "198.18.3.1"}  # the outside one is let go
    r = dsas("assign", "--undo", "log1", "--yes", "--timeout", "1", "-i", str(inv),
             state=state)
    assert r.returncode == 1 and "failed" in r.stderr, r.stderr
    assert load(inv).hosts["log1"].role.name == "lvs"  # the failed undo is reverted too
    doc = Document(inv.read_text())
    assign_role(doc, "log1", "log", {})
    assert commit(inv, read(inv), doc.text(), "assign --undo log1 (back to log)",
                  state) is not None
    assert load(inv).hosts["log1"].role.name == "log"
    # only w101's edit is left: the log1 line is the original's, byte for byte
    [(tag, old, new)] = changes(original.decode(), inv.read_text())
    assert tag == "replace" and [ln[:7] for ln in old + new] == ["  w101:", "  w101:"]
    assert "assign --undo log1" in dsas("inventory", "log", "-i", str(inv), state=state).stdout
    r = dsas("assign", "log1", "--undo", "web", "-i", str(inv), state=state)
    assert r.returncode == 2 and "ROLE, or --undo without ROLE" in r.stderr


# -- properties of the line-preserving round trip (pure: no files, no processes) ----------

EXAMPLE_TEXT = EXAMPLE.read_text()
HOST_NAMES = list(load(EXAMPLE).hosts)
SET_VALUES = {
    "kernel_args": st.from_regex(r"[a-z][a-z0-9_=.]{0,12}", fullmatch=True),
    "boot": st.sampled_from(["netboot", "disk"]),
    "bond.primary": st.sampled_from(["eth0", "eth1"]),
    "image": st.sampled_from(["web", "base"]),
    "addresses.inside": st.integers(1, 250).map(lambda i: f"198.18.2.{i}"),
}


def _host_lines(text: str) -> dict[str, range]:
    """The lines (0-based) of each host's entry in ``text``."""
    hosts = Document(text).data["hosts"]
    names = list(hosts)
    out = {}
    for i, name in enumerate(names):
        start = hosts.lc.key(name)[0]
        out[name] = range(start, hosts.lc.key(names[i + 1])[0] if i + 1 < len(names)
                          else start + 1)
    return out


HOST_LINES = _host_lines(EXAMPLE_TEXT)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(HOST_NAMES),
       edits=st.lists(st.sampled_from(sorted(SET_VALUES)), min_size=1, max_size=3,
                      unique=True).flatmap(
           lambda keys: st.tuples(*[st.tuples(st.just(k), SET_VALUES[k]) for k in keys])))
def test_a_host_set_changes_no_line_outside_that_host(name: str,
                                                       edits: tuple[tuple[str, str], ...]
                                                       ) -> None:
    doc = Document(EXAMPLE_TEXT)
    set_host(doc, name, list(edits))
    after = doc.text()
    mine = HOST_LINES[name]
    a = EXAMPLE_TEXT.splitlines(keepends=True)
    b = after.splitlines(keepends=True)
    for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            assert all(i in mine or i == mine.stop for i in range(i1, max(i2, i1 + 1))), \
                (name, edits, tag, a[i1:i2])
    got = YAML(typ="safe").load(after)["hosts"][name]
    for k, v in edits:
        node = got
        for part in k.split("."):
            node = node[part]
        assert str(node) == v


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(role=st.sampled_from(["web", "db", "log", "lvs", "master"]),
       nic=st.integers(0, 0xfff), name=st.from_regex(r"n[a-z0-9]{1,8}", fullmatch=True))
def test_add_then_remove_gives_the_original_text_back(role: str, nic: int, name: str) -> None:
    doc = Document(EXAMPLE_TEXT)
    macs = [f"52:54:00:aa:{nic >> 8:02x}:{nic & 255:02x}", f"52:54:00:bb:{nic >> 8:02x}:00"]
    add_host(doc, name, role, macs, {})
    added = doc.text()
    assert added != EXAMPLE_TEXT and name in YAML(typ="safe").load(added)["hosts"]
    doc2 = Document(added)
    remove_host(doc2, name)
    assert doc2.text() == EXAMPLE_TEXT


def test_a_file_indented_by_four_gets_lines_indented_by_four() -> None:
    import re

    text = "\n".join(re.sub(r"^( +)", lambda m: " " * (2 * len(m.group(1))), ln)
                     for ln in EXAMPLE_TEXT.split("\n"))
    doc = Document(text)
    add_host(doc, "w109", "web", ["52:54:00:00:01:09", "52:54:00:00:11:09"], {})
    [(tag, old, new)] = changes(text, doc.text())
    assert tag == "insert" and new == [
        '    w109: {role: web, macs: ["52:54:00:00:01:09", "52:54:00:00:11:09"], '
        'addresses: {inside: 198.18.0.3}}\n']


def test_assign_runs_are_journaled_with_each_step_honestly(inv: Path, state: Path) -> None:
    r = dsas("assign", "log1", "web", "--yes", "--timeout", "1", "-i", str(inv), state=state)
    assert r.returncode == 1 and "step drain failed" in r.stderr, r.stderr
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(inv)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        r = dsas("assign", "db3", "web", "--yes", "-i", str(inv), state=state)
        assert r.returncode == 1 and "another edit" in r.stderr
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    out = dsas("assign", "--journal", "log1", "-i", str(inv), state=state).stdout
    lines = out.splitlines()
    assert lines[0].startswith("run 1 ") and lines[0].endswith("log1 log -> web (reboot)")
    assert lines[1] == "  1. inventory: done (revision 2)"
    assert lines[2].startswith("  2. drain: failed (log1: reload refused on lvs1")
    assert [ln.split(":")[0] for ln in lines[3:]] == ["  3. deliver", "  4. reboot",
                                                      "  5. rebalance", "  6. revert",
                                                      "  7. restore"]
    out = dsas("assign", "--journal", "db3", "-i", str(inv), state=state).stdout
    assert "  1. inventory: failed (another edit of the inventory is in progress" in out
    assert "  2. drain: not-run (the inventory edit failed)" in out


def test_assign_to_lvs_joins_the_pair_as_a_backup_and_leaving_lvs_leaves_it(
        inv: Path, state: Path) -> None:
    """A web server moved to the lvs role joins the one LVS pair (a further backup, 20
    priorities lower), so it boots as a director taking part in VRRP; moved back, it
    leaves the pair again (issue 16). Only the host's line and the pair's change."""
    before = inv.read_text()
    doc = Document(before)
    assign_role(doc, "w102", "lvs", {})
    after = doc.text()
    assert "    hosts: {lvs1: active, lvs2: backup, w102: backup}\n" in after
    inv.write_text(after)
    pair = load(inv).lvs_pairs["lb"]
    assert pair.directors == ("lvs1", "lvs2", "w102") and pair.priority_of("w102") == 80
    assert len(changes(before, after)) == 2, changes(before, after)
    doc = Document(after)
    assign_role(doc, "w102", "web", {})
    inv.write_text(doc.text())
    assert load(inv).lvs_pairs["lb"].directors == ("lvs1", "lvs2")
    assert "    hosts: {lvs1: active, lvs2: backup}\n" in inv.read_text()


def test_a_director_leaving_hands_its_place_on_and_a_pair_of_two_keeps_both() -> None:
    """Moving the active director out of a pair of three promotes the first backup; out
    of a pair of two it is refused with the reason (a pair needs an active and a
    backup), before anything is written (issue 17)."""
    from lab.assign import INVENTORY

    doc = Document(INVENTORY)
    with pytest.raises(EditError, match="one of the two directors of LVS pair lb: moving it "
                                        "would leave the pair without a backup"):
        assign_role(doc, "lvs1", "web", {})
    doc = Document(INVENTORY)
    assign_role(doc, "w1", "lvs", {})
    assert "hosts: {lvs1: active, lvs2: backup, w1: backup}" in doc.text()
    assign_role(doc, "lvs1", "web", {})
    assert "hosts: {lvs2: active, w1: backup}" in doc.text()
    inv = loads(doc.text(), "lab")
    assert inv.lvs_pairs["lb"].directors == ("lvs2", "w1")
    assert inv.hosts["lvs1"].role.name == "web"


# -- host entries keep the layout the operator wrote them in (issue 17) -----------------
# The example's w103 spread over lines (a flow mapping, one comment inside and one above);
# lvs1/lvs2 are block style, the others one-line flow.
W103_SPREAD = ('  # w103: the rack-2 spare\n'
               '  w103: {role: web,\n'
               '         macs: ["52:54:00:00:01:03", "52:54:00:00:11:03"],  # both NICs\n'
               '         addresses: {inside: 198.18.1.3}}\n')


def spread_example() -> str:
    t = EXAMPLE.read_text()
    one = ('  w103: {role: web, macs: ["52:54:00:00:01:03", "52:54:00:00:11:03"], '
           'addresses: {inside: 198.18.1.3}}\n')
    assert one in t
    return t.replace(one, W103_SPREAD)


def edited(text: str, edit: Any) -> str:
    doc = Document(text)
    edit(doc)
    return doc.text()


def test_editing_a_host_spread_over_lines_changes_only_the_line_of_the_key() -> None:
    t = spread_example()
    after = edited(t, lambda d: set_host(d, "w103", [("hwtype", "S6014HT")]))
    assert changes(t, after) == [("replace", ["         addresses: {inside: 198.18.1.3}}\n"],
                                  ["         addresses: {inside: 198.18.1.3}, hwtype: S6014HT}\n"])]
    after = edited(t, lambda d: set_host(
        d, "w103", [("macs", "[52:54:00:00:01:03, 52:54:00:00:11:33]")]))
    assert changes(t, after) == [("replace", [W103_SPREAD.splitlines(True)[2]],
                                  ['         macs: ["52:54:00:00:01:03", "52:54:00:00:11:33"],'
                                   '  # both NICs\n'])]
    assert list(loads(after).hosts["w103"].macs) == ["52:54:00:00:01:03", "52:54:00:00:11:33"]


def test_editing_another_host_leaves_a_spread_host_as_written() -> None:
    t = spread_example()
    for host in ("w101", "lvs1"):  # one-line flow, block style
        after = edited(t, lambda d, h=host: set_host(d, h, [("hwtype", "S6014HT")]))
        assert W103_SPREAD in after
        [(tag, old, new)] = changes(t, after)
        if host == "w101":
            assert tag == "replace" and old[0].startswith("  w101: {") \
                and new[0] == old[0].replace("}}\n", "}, hwtype: S6014HT}\n")
        else:  # a block-style entry gets a block-style line, after its last key
            assert (tag, old, new) == ("insert", [], ["    hwtype: S6014HT\n"])
            lines = after.splitlines(keepends=True)
            at = lines.index("  lvs1:\n")
            assert lines[at + 3:at + 5] == ["    addresses: {inside: 198.18.0.11, outside: "
                                            "203.0.113.11}\n", "    hwtype: S6014HT\n"]
        assert list(loads(after).hosts) == list(loads(t).hosts)  # key order kept


def test_a_host_added_among_block_style_neighbours_is_block_style() -> None:
    t = spread_example()
    after = edited(t, lambda d: add_host(d, "lvs3", "lvs", ["52:54:00:00:00:13"], {}))
    [(tag, old, new)] = changes(t, after)
    assert tag == "insert" and old == []
    assert new[0] == "  lvs3:\n" and new[1] == "    role: lvs\n"
    assert all(line.startswith("    ") for line in new[1:])
    lines = after.splitlines(keepends=True)
    assert lines[lines.index("  lvs3:\n") + len(new)].startswith("  w101: {")


def test_removing_a_host_removes_its_lines_and_the_comment_right_above_it() -> None:
    # A comment line directly above an entry (no blank line between) is the entry's own:
    # it goes with it. Comments after a blank line introduce what follows: they stay.
    t = spread_example()
    after = edited(t, lambda d: remove_host(d, "w103"))
    assert changes(t, after) == [("delete", W103_SPREAD.splitlines(True), [])]
    after = edited(t, lambda d: remove_host(d, "lvs2"))
    [(tag, old, new)] = changes(t, after)
    assert tag == "delete" and old[0] == "  lvs2:\n" and len(old) == 4 and new == []
    assert W103_SPREAD in after


def test_inventory_diff_after_editing_a_spread_host_shows_only_its_line(inv: Path,
                                                                        state: Path) -> None:
    inv.write_text(spread_example())
    r = dsas("host", "set", "w103", "hwtype=S6014HT", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    r = dsas("inventory", "diff", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    body = [line for line in r.stdout.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert body == ["-         addresses: {inside: 198.18.1.3}}",
                    "+         addresses: {inside: 198.18.1.3}, hwtype: S6014HT}"]
    assert "  # w103: the rack-2 spare\n" in inv.read_text()


def test_a_spread_host_with_a_comment_on_its_last_line_keeps_it_and_loses_emptied_lines() -> None:
    t = spread_example().replace("         addresses: {inside: 198.18.1.3}}\n",
                                 "         addresses: {inside: 198.18.1.3},\n"
                                 "         hwtype: S6014HT}   # the new box\n")
    after = edited(t, lambda d: set_host(d, "w103", [("addresses.inside", "198.18.1.33")]))
    assert changes(t, after) == [("replace", ["         addresses: {inside: 198.18.1.3},\n"],
                                  ["         addresses: {inside: 198.18.1.33},\n"])]
    after = edited(t, lambda d: set_host(d, "w103", [], unset=["hwtype"]))
    assert changes(t, after) == [("replace", ["         addresses: {inside: 198.18.1.3},\n",
                                              "         hwtype: S6014HT}   # the new box\n"],
                                  ["         addresses: {inside: 198.18.1.3}}\n"])]


# A block-style host with flow sequences spread over lines, side by side (issue 17):
# the example's w108 with its MACs and its services so written.
W108_SEQS = ('    macs: ["52:54:00:00:01:08",\n'
             '           "52:54:00:00:11:08"]   # two NICs\n'
             '    services: [httpd,\n'
             '               shop]\n')


def seqs_example(seqs: str = W108_SEQS) -> str:
    t = EXAMPLE.read_text()
    one = '    macs: ["52:54:00:00:01:08", "52:54:00:00:11:08"]\n'
    assert t.count(one) == 1
    return t.replace(one, seqs)


def test_editing_one_spread_sequence_changes_its_line_and_leaves_the_one_beside_it() -> None:
    t = seqs_example()
    after = edited(t, lambda d: set_host(d, "w108", [("services", "[httpd, blog]")]))
    assert changes(t, after) == [("replace", ["               shop]\n"],
                                  ["               blog]\n"])]
    after = edited(t, lambda d: set_host(
        d, "w108", [("macs", "[52:54:00:00:01:08, 52:54:00:00:11:88]")]))
    assert changes(t, after) == [("replace", ['           "52:54:00:00:11:08"]   # two NICs\n'],
                                  ['           "52:54:00:00:11:88"]   # two NICs\n'])]
    assert list(loads(after).hosts["w108"].macs) == ["52:54:00:00:01:08", "52:54:00:00:11:88"]
    # an edit of another key of the host, or of another host, copies both as written
    for edit in (lambda d: set_host(d, "w108", [("bond.primary", "eth0")]),
                 lambda d: assign_role(d, "w108", "log", {}),
                 lambda d: set_host(d, "w101", [("hwtype", "S6014HT")])):
        after = edited(t, edit)
        assert W108_SEQS in after and len(changes(t, after)) == 1


def test_an_edited_spread_sequence_keeps_the_operators_lines_order_and_comment() -> None:
    t = seqs_example()
    # a MAC added goes after the last, on its line; one inserted keeps the order
    after = edited(t, lambda d: set_host(d, "w108", [(
        "macs", "[52:54:00:00:01:08, 52:54:00:00:11:08, 52:54:00:00:21:08]")]))
    assert changes(t, after) == [("replace", ['           "52:54:00:00:11:08"]   # two NICs\n'],
                                  ['           "52:54:00:00:11:08", "52:54:00:00:21:08"]'
                                   '   # two NICs\n'])]
    after = edited(t, lambda d: set_host(d, "w108", [("services", "[httpd, blog, shop]")]))
    assert changes(t, after) == [("replace", ["    services: [httpd,\n"],
                                  ["    services: [httpd, blog,\n"])]
    assert YAML(typ="safe").load(after)["hosts"]["w108"]["services"] == ["httpd", "blog", "shop"]
    # the last line emptied: the sequence closes on the line before, with the comment
    after = edited(t, lambda d: set_host(d, "w108", [("macs", "[52:54:00:00:01:08]")]))
    assert changes(t, after) == [("replace", W108_SEQS.splitlines(True)[:2],
                                  ['    macs: ["52:54:00:00:01:08"]   # two NICs\n'])]


def test_a_spread_sequence_keeps_the_operators_spelling_and_its_own_closing_line() -> None:
    # unquoted MACs (the dump quotes them) and a closing bracket on a line of its own
    seqs = ('    macs: [52:54:00:00:01:08,   # eth0, the onboard NIC\n'
            '           52:54:00:00:11:08]\n'
            '    services: [\n'
            '      httpd,\n'
            '      shop\n'
            '    ]\n')
    t = seqs_example(seqs)
    after = edited(t, lambda d: set_host(
        d, "w108", [("macs", "[52:54:00:00:01:08, 52:54:00:00:11:88]")]))
    assert changes(t, after) == [("replace", ["           52:54:00:00:11:08]\n"],
                                  ['           "52:54:00:00:11:88"]\n'])]
    after = edited(t, lambda d: set_host(d, "w108", [("services", "[httpd, blog]")]))
    assert changes(t, after) == [("replace", ["      shop\n"], ["      blog\n"])]
    after = edited(t, lambda d: set_host(d, "w108", [("services", "[httpd]")]))
    assert changes(t, after) == [("delete", ["      shop\n"], [])]
    assert YAML(typ="safe").load(after)["hosts"]["w108"]["services"] == ["httpd"]


def test_inventory_diff_after_editing_a_spread_sequence_shows_only_its_line(inv: Path,
                                                                            state: Path) -> None:
    inv.write_text(seqs_example())
    r = dsas("host", "set", "w108", "macs=[52:54:00:00:01:08, 52:54:00:00:11:88]",
             "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    r = dsas("inventory", "diff", "-i", str(inv), state=state)
    assert r.returncode == 0, r.stderr
    body = [line for line in r.stdout.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert body == ['-           "52:54:00:00:11:08"]   # two NICs',
                    '+           "52:54:00:00:11:88"]   # two NICs']


def test_a_spread_sequence_that_ruamel_also_writes_over_lines_is_matched_by_its_brackets(
        ) -> None:
    # ruamel writes a flow sequence with a comment before a nested collection over lines
    # of its own (not the operator's): each entry runs to where its brackets close, on
    # both sides, also where the two happen to have as many lines
    for macs in ('    macs: ["52:54:00:00:01:08",   # eth0\n'
                 '           "52:54:00:00:11:08"]\n',
                 '    macs: ["52:54:00:00:01:08"\n'
                 '    ]\n'):
        t = seqs_example(macs + '    services: [httpd,   # the front\n'
                                '               [shop, blog]]\n')
        after = edited(t, lambda d: set_host(d, "w108", [("services", "[httpd, blog]")]))
        assert changes(t, after) == [("replace", ["               [shop, blog]]\n"],
                                      ["               blog]\n"])]
        after = edited(t, lambda d: set_host(d, "w108", [("hwtype", "S6014HT")]))
        assert changes(t, after) == [("insert", [], ["    hwtype: S6014HT\n"])]
