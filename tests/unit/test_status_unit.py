"""The status view model (pure) and its reader of the state store (a real sqlite file)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from provision.cli.main import cli
from provision.observability import status
from provision.policy.leases import BOUND, Lease, LeasePut, Sighting
from provision.state import StateStore, schema
from provision.state.leases import LeaseJournal
from provision.state.pushes import History, HostResult
from tests.support.paths import EXAMPLE
from tests.support.statuspage_support import INVENTORY, LB2_DOWN, record_lb_read


def inv():  # type: ignore[no-untyped-def]
    from provision.inventory import loads

    return loads(INVENTORY, "lab.yaml")


def store(tmp_path: Path) -> StateStore:
    s = StateStore(tmp_path)
    s.ensure(schema.HTTP)
    return s


def event(s: StateStore, ts: float, host: str, stage: str, reason: str | None = None) -> None:
    s.execute("INSERT INTO http_events(ts, host, stage, reason, address, image)"
              " VALUES (?, ?, ?, ?, ?, ?)", (ts, host, stage, reason, "198.18.4.11", None))


def test_mask_secrets() -> None:
    text = ("SYSTEMNAME=w1\nVRRP_PASS=hunter2\nAPI_TOKEN='abc def'\n    auth_pass Vr5ecr3t\n"
            "ssh_key: AAAAC3Nza\nsecret = x\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n"
            "-----END OPENSSH PRIVATE KEY-----\nIPADDRESS0=198.18.4.11/24\n")
    out = status.mask_secrets(text)
    for secret in ("hunter2", "abc def", "Vr5ecr3t", "AAAAC3Nza", "b3Blbn", "= x"):
        assert secret not in out, secret
    assert "VRRP_PASS=********" in out and "    auth_pass ********" in out
    assert "SYSTEMNAME=w1\n" in out and "IPADDRESS0=198.18.4.11/24\n" in out


def test_states_and_timeline() -> None:
    assert [status.state_of(s) for s in (None, "kernel", "ready", "failed")] == [
        "unknown", "booting", "ready", "failed"]
    evs = [{"stage": s, "ts": t, "reason": None} for s, t in
           (("dhcp", 0), ("kernel", 1), ("failed", 2), ("dhcp", 10), ("kernel", 12),
            ("initramfs", 40))]
    tl = status.timeline(evs)  # the newest boot only, each stage with its duration
    assert [(e["stage"], e["seconds"]) for e in tl] == [("dhcp", 2), ("kernel", 28),
                                                        ("initramfs", None)]


def test_host_view_from_the_store(tmp_path: Path) -> None:
    i = inv()
    s = store(tmp_path)
    src = status.StatusSource(s)
    assert src.refresh() is None  # the first read: everything
    event(s, 100.0, "w1", "dhcp")
    event(s, 105.0, "w1", "failed", "no disk")
    event(s, 101.0, "w2", "kernel")
    assert src.refresh() == {"w1", "w2"}  # only the hosts with new events
    assert src.refresh() == set()
    v = status.host_view(i, i.hosts["w1"], src.obs)
    assert (v["state"], v["stage"], v["reason"], v["stage_at"]) == ("failed", "failed",
                                                                     "no disk", 105.0)
    assert v["image"] == "tiny" and v["version"] == "7" and v["release"] is None
    assert [p["service"] for p in v["pools"]] == ["www"] and v["pools"][0]["health"] is None
    lb1 = status.host_view(i, i.hosts["lb1"], src.obs)
    assert lb1["state"] == "unknown" and lb1["pools"][0]["as"] == "director (active, lb)"
    # A push and a lease change everything that depends on them: refresh says "all".
    hist = History(s)
    for rel, hosts in (("r1", ["w1", "w2"]), ("r2", ["w1"])):
        run = hist.start("push", "/srv/site", hosts, release=rel)
        hist.finish(run, [HostResult(h, True, rel) for h in hosts], rel)
    LeaseJournal(s).commit([LeasePut(Lease(int.from_bytes(bytes([198, 18, 4, 12]), "big"),
                                           "52:54:00:04:00:12", "inside", BOUND, 5000.0)),
                            Sighting("52:54:00:99:00:01", 90.0, None, "", "", "", "eth0",
                                     "inside")], 200.0)
    assert src.refresh() is None
    w1, w2 = (status.host_view(i, i.hosts[h], src.obs) for h in ("w1", "w2"))
    assert (w1["release"], w1["drift"]) == ("r2", "current")
    assert (w2["release"], w2["drift"]) == ("r1", "behind")
    assert w2["lease_expires"] == 5000.0 and w2["last_seen"] == 200.0
    doc = status.snapshot(i, src.obs, 300.0)
    assert doc["counts"] == {"unknown": 5, "booting": 1, "ready": 0, "failed": 1}
    assert [d["mac"] for d in doc["discovered"]] == ["52:54:00:99:00:01"]
    assert doc["latest_releases"] == {"/srv/site": "r2"}
    assert doc["masters"] == [{"host": "m1", "role": "primary", "state": None}]


def test_pools_as_last_read_by_lb_status(tmp_path: Path) -> None:
    """A `dsas lb status` read in the store: each pool's health, live weight,
    connections, director and read time; an unreachable director said so."""
    from provision.balancer import reads as lbreads
    from provision.balancer.status import DirectorView
    from provision.balancer.status import status as lb_status

    i = inv()
    s = store(tmp_path)
    src = status.StatusSource(s)
    src.refresh()
    assert status.host_view(i, i.hosts["w2"], src.obs)["pools"][0]["health"] is None
    record_lb_read(s, 1000.0)
    assert src.refresh() is None  # a new read: every host may have changed

    def pool(host: str) -> dict:
        (p,) = status.host_view(i, i.hosts[host], src.obs)["pools"]
        return {k: p[k] for k in ("health", "live_weight", "active", "inactive", "director",
                                  "read_at", "error")}

    # from lb1, which holds the VIP (lb2 could not be read)
    assert pool("w2") == {"health": "up", "live_weight": 1, "active": 0, "inactive": 102,
                          "director": "lb1", "read_at": 1000.0, "error": None}
    assert pool("w1") == {"health": "out", "live_weight": None, "active": None,
                          "inactive": None, "director": "lb1", "read_at": 1000.0,
                          "error": None}
    assert pool("lb1") == {"health": "holds the VIP", "live_weight": None, "active": 0,
                           "inactive": 102, "director": "lb1", "read_at": 1000.0,
                           "error": None}
    assert pool("lb2") == {"health": None, "live_weight": None, "active": None,
                           "inactive": None, "director": "lb2", "read_at": 1000.0,
                           "error": "director lb2 unreachable: connection refused on port 22"}
    assert status.host_view(i, i.hosts["d1"], src.obs)["pools"] == []  # in no pool
    # Only the latest read per director: lb1 now unreachable too; w2 says so.
    views = [DirectorView("lb1", "198.18.4.2", error="host key mismatch"),
             DirectorView("lb2", "198.18.4.3", error=LB2_DOWN)]
    lbreads.record(s, i, views, lb_status(i, views), 2000.0)
    assert s.query("SELECT COUNT(*) FROM lb_reads")[0][0] == 2
    assert src.refresh() is None
    assert pool("w2")["health"] is None and pool("w2")["read_at"] == 2000.0
    assert pool("w2")["error"] == "director lb1 unreachable: host key mismatch"
    assert lbreads.latest(s)["lb1"]["services"] == []


def test_terminal_lines_escape_reports() -> None:
    i = inv()
    obs = status.Observed()
    obs.last["w1"] = status.LastEvent(1, 90.0, "failed", "bad\x1b[2Jdisk", "198.18.4.11", None)
    lines = status.format_lines(status.snapshot(i, obs, 100.0), 100.0)
    assert lines[0].split()[:4] == ["HOST", "ROLE", "STATE", "STAGE"]
    w1 = next(ln for ln in lines if ln.startswith("w1 "))
    assert "\x1b" not in w1 and "failed: bad\\x1b[2Jdisk" in w1 and " 10s " in w1
    assert lines[-1].startswith("7 hosts: 6 unknown, 1 failed")


def test_status_cli_usage_errors() -> None:
    r = CliRunner().invoke(cli, ["status", "-i", str(EXAMPLE), "--count", "2"])
    assert r.exit_code == 2 and "--count needs --watch" in r.output
    r = CliRunner().invoke(cli, ["status", "--master", "ftp://198.18.4.1/", "--json"])
    assert r.exit_code == 1 and "must be http:// or https://" in r.output


def test_a_running_rollout_and_the_reported_version_show(tmp_path: Path) -> None:
    from provision.state.rollout import RolloutStore

    i = inv()
    s = store(tmp_path)
    src = status.StatusSource(s)
    src.refresh()
    s.execute("INSERT INTO http_events(ts, host, stage, reason, address, image)"
              " VALUES (?, ?, ?, ?, ?, ?)", (100.0, "w1", "ready", "role web", "198.18.4.11",
                                             "tiny@8"))
    rs = RolloutStore(s)
    run = rs.start("tiny", "8", "7", False, {}, [("w1", 0, "7"), ("w2", 1, "7")])
    rs.host(run, "w1", "done", "on 8")
    rs.host(run, "w2", "moving", "netboot: moving to 8")
    assert src.refresh() is None
    v = status.host_view(i, i.hosts["w1"], src.obs)
    assert (v["image"], v["version"]) == ("tiny", "8")  # as the node reported it
    doc = status.snapshot(i, src.obs, 300.0)
    assert doc["rollout"]["image"] == "tiny" and doc["rollout"]["outcome"] == "running"
    lines = status.format_lines(doc, 300.0)
    assert any(ln.startswith(f"rollout {run} (") and "image tiny to 8: 1/2 hosts moved" in ln
               for ln in lines)
    assert "  w2: moving netboot: moving to 8" in lines
    rs.finish(run, "done")
    src.refresh()
    assert status.snapshot(i, src.obs, 301.0)["rollout"] is None
