"""--json on `dsas hosts`, `dsas check` and `dsas discovered`, for scripts: the output
parses and carries what the tables show. (`dsas push log` and `dsas-push --status`:
tests/lab/test_push_silent_lab.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from provision.cli.main import cli
from provision.policy.dhcp import DhcpPolicy, DhcpSettings
from provision.policy.leases import LeaseTable
from provision.protocol import dhcp_options as o
from provision.state import StateStore
from provision.state.leases import LeaseJournal
from tests.support.dhcp_policy_support import INV, T0, run
from tests.support.dhcp_support import OVMF, SERVER, UNKNOWN_MAC
from tests.support.paths import EXAMPLE, FIXTURES


def invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_hosts_json() -> None:
    code, out, _ = invoke("hosts", "-i", str(EXAMPLE), "--json")
    assert code == 0
    hosts = {h["host"]: h for h in json.loads(out)["hosts"]}
    assert len(hosts) == 17
    lvs1 = hosts["lvs1"]
    assert lvs1["role"] == "lvs" and lvs1["macs"] and all(":" in m for m in lvs1["macs"])
    assert {"device": "bond0.2", "network": lvs1["interfaces"][1]["network"],
            "address": "203.0.113.11", "cidr": "203.0.113.11/24"} in lvs1["interfaces"]
    assert hosts["w103"]["image"] and hosts["w103"]["boot"] == "netboot"
    code, out, _ = invoke("hosts", "-i", str(EXAMPLE), "--json", "--role", "lvs")
    assert code == 0 and [h["host"] for h in json.loads(out)["hosts"]] == ["lvs1", "lvs2"]


def test_check_json_clean_and_with_problems() -> None:
    code, out, err = invoke("check", "-i", str(EXAMPLE), "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["ok"] is True and doc["cluster"] == "example" and doc["hosts"] == 17
    code, out, err = invoke("check", "-i", str(FIXTURES / "bad" / "duplicate-mac.yaml"),
                            "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False and len(doc["problems"]) == 1
    p = doc["problems"][0]
    assert p["file"].endswith("duplicate-mac.yaml") and p["key"] == "hosts.w2.macs[0]"
    assert isinstance(p["line"], int) and p["reason"] and p["message"].startswith(p["file"])


def test_discovered_json(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    store = StateStore(tmp_path / "state")
    journal = LeaseJournal(store)
    p = DhcpPolicy(INV, LeaseTable(), DhcpSettings(discovery=True))
    offer = run(p, o.DISCOVER, UNKNOWN_MAC, extra=OVMF)
    a = offer.reply.yiaddr  # type: ignore[union-attr]
    ack = run(p, o.REQUEST, UNKNOWN_MAC, requested=str(a), server=SERVER, extra=OVMF)
    journal.commit(offer.lazy + ack.durable + ack.lazy, T0)
    store.close()
    code, out, _ = invoke("discovered", "--state-dir", str(tmp_path / "state"), "--json")
    assert code == 0, out
    [m] = json.loads(out)["machines"]
    assert m["mac"] == UNKNOWN_MAC and m["address"] == str(a)
    assert m["arch"] == 7 and m["arch_name"] == "efi-x64"
    assert m["vendor_class"].startswith("PXEClient:Arch:00007") and m["seen"] >= 1
    assert m["first_seen"] == T0
    empty = tmp_path / "empty"
    empty.mkdir()
    s = StateStore(empty)
    LeaseJournal(s).discovered()  # creates the schema, records nothing
    s.close()
    code, out, _ = invoke("discovered", "--state-dir", str(empty), "--json")
    assert code == 0 and json.loads(out) == {"machines": []}
