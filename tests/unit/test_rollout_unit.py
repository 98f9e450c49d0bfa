"""`dsas rollout` (issue 23) as pure units: the plan (hosts, versions, boot modes,
batches, canary, pools) and the execution per batch with fake pools and nodes, recorded
in a real state store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.assign.live import StepFailed
from provision.balancer.members import Override, Overrides
from provision.inventory import load
from provision.rollout import plan as rplan
from provision.rollout import run as rrun
from provision.rollout.plan import HostMove, Plan, PlanError, Request
from provision.state import StateStore
from provision.state.rollout import RolloutStore
from tests.support.fake_clock import Clock
from tests.support.paths import EXAMPLE

VERSIONS = {("web", "current"): "A", ("web", "A"): "A", ("web", "B"): "B",
            ("base", "current"): "X", ("base", "X"): "X", ("base", "Y"): "Y"}


def resolve(image: str, version: str) -> str | None:
    return VERSIONS.get((image, version))


def make(pins: dict[str, str] | None = None, **kw: object) -> Plan:  # noqa: ANN003
    inv = load(EXAMPLE)
    req = Request(**{"image": "web", "version": "B", **kw})  # type: ignore[arg-type]
    return rplan.make(inv, req, resolve, pins or {})


def test_every_host_of_the_image_in_inventory_order_batched_after_the_canary() -> None:
    p = make(batch=3, canary="w103")
    assert [m.host for m in p.moves] == [f"w10{i}" for i in range(1, 9)]
    assert p.batches == [["w103"], ["w101", "w102", "w104"], ["w105", "w106", "w107"],
                         ["w108"]]
    assert (p.version, p.previous, p.inventory_after) == ("B", "A", True)
    m = p.move("w101")
    assert (m.role, m.boot, m.current, m.address) == ("web", "netboot", "A", "198.18.1.1")
    assert sorted(m.pools) == ["web"]
    j = p.as_json()
    assert j["batches"][0] == ["w103"] and j["hosts"][0]["pools"] == ["web"]


def test_part_of_an_image_leaves_the_inventory_alone_and_skips_hosts_already_there() -> None:
    p = make(hosts=["w101", "w102"], pins={"w102": "B"})
    assert [m.host for m in p.moves] == ["w101"]
    assert p.skipped == [("w102", "already on B")]
    assert not p.inventory_after
    assert "unchanged" in rplan.describe(p)
    # every other host already pinned to B: this one completes the image
    pins = {f"w10{i}": "B" for i in range(2, 9)}
    assert make(hosts=["w101"], pins=pins).inventory_after


def test_a_disk_role_and_its_pools() -> None:
    p = make(image="base", version="Y", roles=["db"])
    assert [(m.host, m.boot, sorted(m.pools)) for m in p.moves] == [
        ("db1", "disk", ["db"]), ("db2", "disk", ["db"]), ("db3", "disk", ["db"])]
    assert not p.inventory_after  # base is booted by the masters, lvs and log too
    assert "disk" in rplan.describe(p)


@pytest.mark.parametrize(("kw", "msg"), [
    ({"image": "nope"}, "no image 'nope'"),
    ({"version": "Z"}, "no image web@Z in the image store"),
    ({"roles": ["nope"]}, "--role nope: no such role"),
    ({"roles": ["db"]}, "--role db: none of its hosts boots image web"),
    ({"hosts": ["db1"]}, "--host db1 boots image base, not web"),
    ({"hosts": ["zz"]}, "--host zz: no such host"),
    ({"canary": "db1"}, "--canary db1: not a host of this rollout"),
    ({"batch": 0}, "--batch and --max-failures must be at least 1"),
])
def test_bad_requests_are_one_line_errors(kw: dict[str, object], msg: str) -> None:
    with pytest.raises(PlanError, match=msg.replace("@", "@").replace("'", "'")):
        make(**kw)  # type: ignore[arg-type]


# -- execution -----------------------------------------------------------------


@dataclass
class FakePools:
    ov: Overrides = field(default_factory=dict)
    refuse: bool = False
    unhealthy: set[str] = field(default_factory=set)  # addresses never serving
    log: list[str] = field(default_factory=list)

    def overrides(self) -> Overrides:
        return dict(self.ov)

    def set_host(self, host: str, rows: list[Override]) -> None:
        self.ov = {k: v for k, v in self.ov.items() if k[0] != host}
        self.ov.update({(o.host, o.role): o for o in rows})
        self.log.append(f"{host}: " + ",".join(f"{o.state}:{o.role}" for o in rows))

    def reload(self, roles: set[str]) -> str | None:
        self.log.append("reload")
        return "lvs1: config test failed" if self.refuse else None

    def drained(self, roles: set[str], address: str) -> tuple[bool, str]:
        return True, f"{address}: 0 active"

    def serving(self, roles: set[str], address: str) -> tuple[bool, str]:
        return address not in self.unhealthy, f"{address}: weight 1"


@dataclass
class FakeNodes:
    broken: set[str] = field(default_factory=set)   # hosts that report failed
    moved: list[tuple[str, str]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def move(self, m: HostMove, image: str, version: str) -> float:
        self.moved.append((m.host, version))
        self.calls.append(f"move {m.host}")
        return 0.0

    def wait_ready(self, m: HostMove, image: str, version: str, since: float,
                   timeout: float) -> str:
        self.calls.append(f"ready? {m.host}")
        if m.host in self.broken:
            raise StepFailed(f"{m.host} reports failed: dsas-init: IMAGE broken")
        return f"{m.host} reports ready on {image}@{version}"


def execute(p: Plan, tmp_path: Path, pools: FakePools, nodes: FakeNodes,
            pause: float = 0, wait: bool = False) -> tuple[rrun.Result, RolloutStore, int]:
    rs = RolloutStore(StateStore(tmp_path))
    run = rs.start(p.image, p.version, p.previous, False, p.as_json(),
                   [(h, i, p.move(h).current) for i, b in enumerate(p.batches) for h in b])
    clock = Clock()
    out = rrun.run(p, pools, nodes, rs, run, rrun.Timeouts(check=5, pause=pause, wait=wait),
                   clock=clock, sleep=clock.sleep)
    return out, rs, run


def test_a_role_moves_canary_first_and_every_host_ends_on_the_version(tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102", "w103"], batch=2, canary="w101")
    pools, nodes = FakePools(), FakeNodes()
    out, rs, run = execute(p, tmp_path, pools, nodes, pause=7)
    assert out.outcome == "done" and out.moved == ["w101", "w102", "w103"]
    assert nodes.moved == [("w101", "B"), ("w102", "B"), ("w103", "B")]
    assert rs.pins("web") == {"w101": "B", "w102": "B", "w103": "B"}
    assert pools.ov == {}  # every drain gone: all back in their pools
    # drained, then back: one reload to drain and one to rejoin per batch
    assert pools.log[:4] == ["w101: drain:web", "reload", "w101: ", "reload"]
    r = rs.runs()[-1]
    assert [(h.host, h.batch, h.outcome) for h in r.hosts] == [
        ("w101", 0, "done"), ("w102", 1, "done"), ("w103", 1, "done")]


def test_a_failing_canary_stops_the_rollout_held_out_others_untouched(tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102", "w103"], batch=2, canary="w101")
    pools, nodes = FakePools(), FakeNodes(broken={"w101"})
    out, rs, _ = execute(p, tmp_path, pools, nodes)
    assert out.outcome == "stopped" and "--max-failures 1" in out.why
    assert out.failed.keys() == {"w101"} and out.not_run == ["w102", "w103"]
    assert nodes.moved == [("w101", "B")]
    assert {k: o.state for k, o in pools.ov.items()} == {("w101", "web"): "hold"}
    assert [(h.host, h.outcome) for h in rs.runs()[-1].hosts] == [
        ("w101", "failed"), ("w102", "not-run"), ("w103", "not-run")]


def test_max_failures_lets_the_rollout_go_on_past_one_failure(tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102", "w103"], max_failures=2)
    out, _, _ = execute(p, tmp_path, FakePools(), FakeNodes(broken={"w102"}))
    assert out.outcome == "done" and out.moved == ["w101", "w103"]
    assert list(out.failed) == ["w102"]


def test_a_host_whose_health_check_never_passes_fails_and_is_held(tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102"])
    pools = FakePools(unhealthy={"198.18.1.1"})
    out, _, _ = execute(p, tmp_path, pools, FakeNodes())
    assert out.outcome == "stopped" and "health check" in out.failed["w101"]
    assert pools.ov[("w101", "web")].state == "hold" and out.not_run == ["w102"]


def test_refused_directors_stop_the_rollout_with_the_pools_as_they_were(tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102"])
    pools = FakePools(refuse=True)
    nodes = FakeNodes()
    out, _, _ = execute(p, tmp_path, pools, nodes)
    assert out.outcome == "failed" and out.why.startswith("drain: lvs1")
    assert nodes.moved == [] and pools.ov == {}
    assert out.not_run == ["w101", "w102"]


def test_moving_back_to_the_inventory_version_drops_the_pin(tmp_path: Path) -> None:
    p = make(hosts=["w101"], version="A", pins={"w101": "B"})
    assert [m.current for m in p.moves] == ["B"]
    rs = RolloutStore(StateStore(tmp_path))
    rs.pin("w101", "web", "B", 1)
    out, rs2, _ = execute(p, tmp_path, FakePools(), FakeNodes())
    assert out.outcome == "done" and rs2.pins() == {}


# -- the pin: what the master's boot files name --------------------------------


def test_a_pinned_host_boots_the_pinned_version_and_the_others_the_inventorys(
        tmp_path: Path) -> None:
    from provision.policy.boottree import BootTree

    inv = load(EXAMPLE)
    tree = BootTree(tmp_path, inv)
    pins = {"w101": ("web", "B"), "db1": ("web", "B")}  # db1 boots base: not its image
    tree.image_pins = lambda: pins

    def conf(host: str) -> str:
        data = tree.lookup(f"hosts/{host}/dsas.conf").data
        assert data is not None
        return data.decode()

    assert "IMAGE_VERSION=B" in conf("w101")
    assert "IMAGE_VERSION=current" in conf("w102")
    assert "IMAGE_VERSION=current" in conf("db1")
    ipxe = tree.lookup("hosts/w101/boot.ipxe").data
    assert ipxe is not None and b"images/web/B/" in ipxe
    pins.clear()  # the inventory caught up: read at every request
    assert "IMAGE_VERSION=current" in conf("w101")


def test_wait_stops_after_a_good_canary_with_the_rest_pending(tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102", "w103"], batch=2, canary="w102")
    nodes = FakeNodes()
    out, rs, run = execute(p, tmp_path, FakePools(), nodes, wait=True)
    assert out.outcome == "paused" and out.moved == ["w102"]
    assert out.pending == ["w101", "w103"] and nodes.moved == [("w102", "B")]
    rs.finish(run, out.outcome)
    assert rs.running() is not None and rs.running().outcome == "paused"  # type: ignore[union-attr]
    assert [(h.host, h.outcome) for h in rs.runs()[-1].hosts] == [
        ("w102", "done"), ("w101", "pending"), ("w103", "pending")]
    rs.resume(run)
    assert rs.runs()[-1].outcome == "running"


def test_a_failed_host_held_out_rejoins_its_pools_when_it_moves_back(tmp_path: Path) -> None:
    p = make(hosts=["w101"])
    pools = FakePools()
    out, _, _ = execute(p, tmp_path / "a", pools, FakeNodes(broken={"w101"}))
    assert pools.ov[("w101", "web")].state == "hold"
    inv = load(EXAMPLE)
    back = rplan.make(inv, Request("web", "A", hosts=["w101"]), resolve, {"w101": "B"},
                      pools.overrides())
    assert sorted(back.move("w101").pools) == ["web"]  # the rollout's hold is not a pool
    out, _, _ = execute(back, tmp_path / "b", pools, FakeNodes())
    assert out.outcome == "done" and pools.ov == {}  # back in the web pool


def test_a_ready_report_names_the_version_or_a_name_the_store_resolves_to_it(
        tmp_path: Path) -> None:
    from provision.imaging.store import ImageStore
    from provision.rollout.farm import LiveNodes

    for v in ("A", "B"):
        (tmp_path / "images" / "web" / v).mkdir(parents=True)
    (tmp_path / "images" / "web" / "current").symlink_to("B")
    nodes = LiveNodes(load(EXAMPLE), None, None, ImageStore(tmp_path / "images"))  # type: ignore[arg-type]
    assert nodes._is("web@B", "web", "B") and nodes._is("web@current", "web", "B")
    assert not nodes._is("web@A", "web", "B") and not nodes._is("web", "web", "B")
    assert not nodes._is("base@B", "web", "B") and not nodes._is(None, "web", "B")


def test_a_batch_moves_at_once_then_each_host_is_waited_for(tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102", "w103"], batch=2)
    nodes = FakeNodes(broken={"w101"})
    out, _, _ = execute(p, tmp_path, FakePools(), nodes)
    assert nodes.calls == ["move w101", "move w102", "ready? w101", "ready? w102"]
    assert out.moved == ["w102"] and list(out.failed) == ["w101"] and out.not_run == ["w103"]


# -- interrupted and killed rollouts -------------------------------------------


def test_a_stop_signal_ends_the_rollout_after_its_batch_the_rest_pending(
        tmp_path: Path) -> None:
    p = make(hosts=["w101", "w102", "w103"], batch=1)
    pools, nodes = FakePools(), FakeNodes()
    rs = RolloutStore(StateStore(tmp_path))
    run = rs.start(p.image, p.version, p.previous, False, p.as_json(),
                   [(h, i, p.move(h).current) for i, b in enumerate(p.batches) for h in b])
    clock = Clock()
    asked: list[str] = []

    def stop() -> bool:  # SIGTERM arrives while the first batch moves
        asked.append("?")
        return True

    out = rrun.run(p, pools, nodes, rs, run, rrun.Timeouts(check=5), clock=clock,
                   sleep=clock.sleep, stop=stop)
    assert out.outcome == "interrupted" and "after batch 1/3" in out.why
    assert out.moved == ["w101"] and out.pending == ["w102", "w103"]
    assert nodes.moved == [("w101", "B")] and pools.ov == {}  # its batch finished, rejoined
    rs.finish(run, out.outcome)
    r = rs.unfinished()
    assert r is not None and r.id == run and r.outcome == "interrupted"
    assert [(h.host, h.outcome) for h in r.hosts] == [
        ("w101", "done"), ("w102", "pending"), ("w103", "pending")]


def test_the_drains_a_killed_rollout_left_are_lifted_and_the_others_kept() -> None:
    pools = FakePools(ov={
        ("w101", "web"): Override("w101", "web", "drain", "198.18.1.1", "rollout run 4"),
        ("w102", "web"): Override("w102", "web", "drain", "198.18.1.2", "maintenance"),
        ("w103", "web"): Override("w103", "web", "drain", "198.18.1.3", "rollout run 3")})
    lifted, why = rrun.lift_drains(pools, 4, ["w101", "w102", "w103"])
    assert lifted == ["w101"] and why is None and pools.log[-1] == "reload"
    assert sorted(pools.ov) == [("w102", "web"), ("w103", "web")]
    assert rrun.lift_drains(pools, 4, ["w101"]) == ([], None)  # nothing left: no reload
    assert pools.log.count("reload") == 1


def test_a_host_moved_again_after_a_kill_leaves_no_drain_behind(tmp_path: Path) -> None:
    left = {("w101", "web"): Override("w101", "web", "drain", "198.18.1.1", "rollout run 1")}
    inv = load(EXAMPLE)
    p = rplan.make(inv, Request("web", "B", hosts=["w101"]), resolve, {}, left)
    assert not p.move("w101").pools["web"].drained  # the killed run's drain is no pool state
    pools = FakePools(ov=dict(left))
    out, _, _ = execute(p, tmp_path, pools, FakeNodes())
    assert out.outcome == "done" and pools.ov == {}  # not put back after the move


def test_the_host_that_was_moving_is_done_if_its_report_says_so_else_redone() -> None:
    seen = {"w101": 10.0}  # w101 reported ready on the version at 10 s

    def reported(host: str, since: float) -> bool:
        return host in seen and seen[host] >= since

    assert rrun.check_moving([("w101", 5.0), ("w102", 5.0)], reported) == (
        ["w101"], ["w102"])
    assert rrun.check_moving([("w101", 11.0)], reported) == ([], ["w101"])  # a report before


def test_a_disk_host_gets_its_dsas_conf_for_the_new_version_then_reapplies(
        tmp_path: Path) -> None:
    """`dsas-init reapply` needs /etc/dsas.conf.new: the default --then of a disk host's
    push writes it (the host's dsas.conf rendered with the new version, checked by its
    sha256) before the detached reapply; an operator's --reapply-command runs as given."""
    import base64
    import re

    from provision.assign.farm import REAPPLY
    from provision.imaging.store import ImageStore
    from provision.rollout.farm import LiveNodes

    nodes = LiveNodes(load(EXAMPLE), None, None, ImageStore(tmp_path / "images"))  # type: ignore[arg-type]
    script = nodes.reapply_script("w101", "web", "B")
    assert script.endswith(REAPPLY)
    m = re.search(r"printf %s (\S+) \| base64 -d", script)
    assert m, script
    conf = base64.b64decode(m.group(1)).decode()
    assert "\nSYSTEMNAME=w101\n" in conf or "SYSTEMNAME='w101'" in conf, conf
    assert re.search(r"^IMAGE_VERSION='?B'?$", conf, re.M), conf
    assert "mv -f \"$t\" /etc/dsas.conf.new" in script
    # the inventory's own version, when the move is back to it
    back = base64.b64decode(re.search(r"printf %s (\S+) \|", nodes.reapply_script(
        "w101", "web", "current")).group(1)).decode()  # type: ignore[union-attr]
    assert re.search(r"^IMAGE_VERSION='?current'?$", back, re.M), back


def test_a_netboot_host_s_new_host_key_is_trusted_only_from_its_own_verified_report(
        tmp_path: Path) -> None:
    """A netboot host comes back from its move with new SSH host keys: the key of its
    ready report since the move replaces the trusted one, but only when the report came
    from the host's own address with a valid boot token; otherwise nothing changes."""
    import base64

    from provision.imaging.store import ImageStore
    from provision.policy.httpfiles import Event
    from provision.rollout.farm import LiveNodes
    from provision.sshtrust.hostkeys import trusted_keys
    from provision.sshtrust.sshconf import SshConfig, add_known_host
    from provision.state import events

    def k(name: str) -> str:  # a key blob (base64, as sshd writes them)
        return base64.b64encode(name.encode() * 8).decode()

    inv = load(EXAMPLE)
    store, cfg = StateStore(tmp_path / "state"), SshConfig(tmp_path / "state")
    events.ensure_events_schema(store)
    nodes = LiveNodes(inv, cfg, store, ImageStore(tmp_path / "images"))
    own = str(inv.hosts["w101"].primary_interface.address)
    add_known_host(cfg, own, [("ssh-ed25519", k("OLD")), ("ecdsa-sha2-nistp256", k("OLDEC"))])
    m = HostMove("w101", "web", own, "netboot", "A", {})

    def report(key: str, ts: float, address: str = own, verified: bool = True) -> None:
        events.record(store, Event("w101", "ready", None, "web@B", address,
                                   ("ssh-ed25519", key), "boot1"), ts, verified, 100)

    report(k("BEFORE"), 100.0)  # the boot before the move
    assert "no host key in its ready report" in nodes.trust_new_key(m, 200.0)
    report(k("FORGED"), 201.0, address="198.18.9.9")
    assert "NOT trusted" in nodes.trust_new_key(m, 200.0)
    report(k("NOTOKEN"), 202.0, verified=False)
    assert "NOT trusted" in nodes.trust_new_key(m, 200.0)
    assert trusted_keys(cfg, own) == [("ssh-ed25519", k("OLD")),
                                      ("ecdsa-sha2-nistp256", k("OLDEC"))]
    report(k("NEW"), 203.0)
    assert "trusted from its ready report" in nodes.trust_new_key(m, 200.0)
    # the old boot's keys of every type go: a client that prefers ECDSA would meet
    # the new boot's ECDSA key, not the old one
    assert trusted_keys(cfg, own) == [("ssh-ed25519", k("NEW"))]
    assert "already trusted" in nodes.trust_new_key(m, 200.0)
    # wait_ready does it once the ready report is in; with trust_reported off, it does not
    report(k("NEWER"), 204.0)
    nodes.trust_reported = False
    said = nodes.wait_ready(m, "web", "B", 200.0, 1)
    assert "reports ready on web@B" in said and "trusted" not in said
    assert trusted_keys(cfg, own) == [("ssh-ed25519", k("NEW"))]
    nodes.trust_reported = True
    assert "trusted from its ready report" in nodes.wait_ready(m, "web", "B", 200.0, 1)
    assert trusted_keys(cfg, own) == [("ssh-ed25519", k("NEWER"))]
