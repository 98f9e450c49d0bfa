"""Stored state has one owner, provision/state/ (issue 15): no table, no SQL and no sqlite3
outside it; StateStore.tables() lists every table; a state.db from before the move opens."""

from __future__ import annotations

import ast
import re
import sqlite3
from pathlib import Path

from provision.state import StateStore, discovered, events, leases, members, schema
from provision.state import balancer as lb
from provision.state.assign import AssignJournal
from provision.state.inventory import InventoryHistory
from provision.state.pushes import History
from provision.state.rollout import RolloutStore
from tests.support.paths import ROOT
from tests.support.state_support import OLD

PROVISION = ROOT / "provision"
STATE = PROVISION / "state"
CREATE = re.compile(r"\bCREATE\s+(TABLE|INDEX)\b", re.IGNORECASE)
SQL = re.compile(r"\b(SELECT\s.*\bFROM|INSERT\s(OR\s\w+\s)?INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET"
                 r"|PRAGMA\s+\w+|ALTER\s+TABLE|DROP\s+TABLE)\b", re.DOTALL)
RAW = ("query", "execute", "executemany", "executescript", "transaction", "ensure_schema",
       "ensure_columns")


def outside_state() -> list[Path]:
    files = [p for p in sorted(PROVISION.rglob("*.py")) if STATE not in p.parents]
    assert len(files) > 50, f"found only {len(files)} modules under {PROVISION}"
    return files


def offences(path: Path, root: Path = PROVISION.parent) -> list[str]:
    text = path.read_text()
    where = path.relative_to(root)
    out = [f"{where}: CREATE {m.group(1).upper()}" for m in CREATE.finditer(text)]
    for node in ast.walk(ast.parse(text, str(path))):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlite3"
                                                for a in node.names):
            out.append(f"{line}: import sqlite3")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlite3":
            out.append(f"{line}: from sqlite3 import")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                SQL.search(node.value):
            out.append(f"{line}: SQL {node.value.strip()[:40]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                node.func.attr in RAW:
            out.append(f"{line}: .{node.func.attr}() (the store's raw SQL methods)")
    return out


def test_no_table_sql_or_sqlite3_outside_provision_state() -> None:
    found = [o for p in outside_state() for o in offences(p)]
    assert found == [], "stored state belongs in provision/state/:\n" + "\n".join(found)


def test_the_check_sees_what_it_forbids(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('import sqlite3\nfrom sqlite3 import Row\nDDL = "create table t (a)"\n'
                   'def f(s):\n    return s.query("SELECT a FROM t")\n')
    kinds = [o.split(": ", 1)[1] for o in offences(bad, tmp_path)]
    assert kinds == ["CREATE TABLE", "import sqlite3", "from sqlite3 import",
                     ".query() (the store's raw SQL methods)", "SQL 'SELECT a FROM t'"]


def test_every_table_the_ddl_creates_is_listed_and_made(tmp_path: Path) -> None:
    for s in schema.SCHEMAS:
        made = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", s.ddl)
        assert tuple(made) == s.tables, s.component
    store = StateStore(tmp_path)
    store.ensure_all()
    assert store.existing_tables() - {"sqlite_sequence"} == set(StateStore.tables())
    assert len(set(StateStore.tables())) == len(StateStore.tables())
    names = {r["component"] for r in store.query("SELECT component FROM schema_components")}
    assert names == {"dhcp", "http", "push", "inventory", "assign", "lb", "lb_members",
                     "rollout"}
    store.close()


def test_dump_reads_every_table_in_one_snapshot(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.ensure_all()
    History(store).start("push", "/srv/www", ["w1"], options={})
    lb.record(store, [lb.LbRead("lb1", "198.18.0.2", 5.0, None, [], [])])
    dump = store.dump()
    assert set(dump) == set(StateStore.tables())
    assert [r["to_path"] for r in dump["push_runs"]] == ["/srv/www"]
    assert dump["lb_reads"][0]["director"] == "lb1"
    assert dump["dhcp_leases"] == []
    assert {r["component"] for r in dump["schema_components"]} >= {"push", "lb"}
    store.close()




def test_a_state_db_from_before_the_move_opens_with_its_rows(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.executescript(OLD)
    db.close()
    store = StateStore(tmp_path)
    assert [(x.address.exploded, x.hostname) for x in leases.LeaseJournal(store).load()] == [
        ("198.18.0.16", "w1")]
    assert [(m["mac"], m["address"]) for m in discovered.list_machines(store)] == [
        ("52:54:00:00:00:01", "198.18.0.16")]
    assert [(e.host, e.stage) for e in events.since(store, 0, 10)] == [("w1", "ready")]
    keys = events.reported_keys(store)  # adds boot_id and verified to the old table
    assert [(k.host, k.key, k.boot_id, k.verified) for k in keys] == [
        ("w1", "AAAA", None, False)]
    assert History(store).latest_release("/srv/www") == "r1"
    revs = InventoryHistory(store).revisions("/etc/dsas/inventory.yaml")
    assert [(r.rev, r.content) for r in revs] == [(1, b"hi")]
    runs = AssignJournal(store).runs("w1")
    assert [(r.new_role, [s.step for s in r.steps]) for r in runs] == [("db", ["inventory"])]
    assert lb.latest(store)["lb1"].address == "198.18.0.2"
    assert members.load(store) == {}  # a table added since: made on first use
    assert RolloutStore(store).pins() == {}  # so are the rollout tables (issue 23)
    assert set(store.dump()) == set(StateStore.tables())
    store.close()
