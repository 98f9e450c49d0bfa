"""The live steps of `dsas assign` (issue 17) as a sequence, with a fake farm: order,
journal, drain wait, failure stops and restores the pools as they were. And the
pool overrides (drain, hold, keep) as keepalived.conf renders them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from provision.assign import live
from provision.balancer import members as lbmembers
from provision.balancer import rolling
from provision.balancer.members import Member, Override
from provision.balancer.reload import PoolRead, drained, last_line, serving
from provision.inventory import load
from provision.push.targets import Target
from provision.render import render_keepalived
from provision.state import StateStore
from tests.support.fake_clock import Clock
from tests.support.paths import EXAMPLE, FIXTURES


@dataclass
class FakeFarm:
    fail: str | None = None        # the call that raises StepFailed
    fails: int = 10**6             # ... this many times (then it works)
    busy_polls: int = 0            # drained() says "1 active" this many times
    unhealthy: bool = False
    director_polls: int = 0        # director_up() says no this many times
    calls: list[str] = field(default_factory=list)
    members: list[list[Override]] = field(default_factory=list)

    def _maybe(self, what: str) -> None:
        self.calls.append(what)
        if self.fail == what and self.fails > 0:
            self.fails -= 1
            raise live.StepFailed(f"{what} broke")

    def set_members(self, rows: list[Override]) -> None:
        self.members.append(rows)
        self.calls.append("members " + ",".join(f"{o.state}:{o.role}" for o in rows))

    def reload(self, roles: set[str], pairs: set[str]) -> None:
        self._maybe("reload" + (" " + ",".join(sorted(pairs)) if pairs else ""))

    def hand_over(self, address: str, pair: str) -> str:
        self._maybe("hand_over")
        return f"lvs2 holds the VIPs of {pair}"

    def director_up(self, address: str, pair: str) -> tuple[bool, str]:
        self.calls.append("director_up?")
        if self.director_polls > 0:
            self.director_polls -= 1
            return False, "IPVS has not the virtual services"
        return True, "keepalived runs the 1 virtual services"

    def drained(self, roles: set[str], address: str) -> tuple[bool, str]:
        self.calls.append("drained?")
        if self.busy_polls > 0:
            self.busy_polls -= 1
            return False, "1 active"
        return True, "0 active"

    def serving(self, roles: set[str], address: str) -> tuple[bool, str]:
        self.calls.append("serving?")
        return not self.unhealthy, "weight 1"

    def deliver(self, address: str, text: str) -> str:
        self._maybe("deliver")
        self.calls.append(f"conf {text.strip()}")
        return "delivered"

    def reapply(self, address: str) -> float:
        self._maybe("reapply")
        return 0.0

    def reboot(self, address: str) -> float:
        self._maybe("reboot")
        return 0.0

    def wait_report(self, since: float, role: str | None, timeout: float) -> str:
        self._maybe("wait_report")
        return f"ready as {role}"

    def trust_new_key(self, address: str, since: float) -> str:
        self.calls.append(f"trust {address}")
        return "host key trusted"


class FakeJournal:
    def __init__(self) -> None:
        self.steps: list[tuple[str, str, str]] = []

    def step(self, run_id: int, step: str, status: str, detail: str = "") -> None:
        self.steps.append((step, status, detail))


def move(before: dict[str, Member] | None = None, new_pooled: bool = True,
         reboot: bool = False, drain_timeout: float = 30) -> live.Move:
    return live.Move(host="w1", old_role="web", new_role="db", old_address="198.18.1.1",
                     new_address="198.18.1.1",
                     before={"web": Member("w1", "198.18.1.1", False)} if before is None
                     else before, new_pooled=new_pooled, reboot=reboot, dsas_conf="ROLE=db\n",
                     drain_timeout=drain_timeout, check_timeout=10, why="assign run 1")


def go(m: live.Move, farm: FakeFarm,
       revert: live.Revert | None = None) -> tuple[live.Outcome, FakeJournal]:
    j, clock = FakeJournal(), Clock()
    return live.run(m, farm, j, 1, clock=clock, sleep=clock.sleep, revert=revert), j


class Reverter:
    def __init__(self, ok: bool = True) -> None:
        self.ok, self.calls = ok, 0

    def __call__(self) -> tuple[bool, str]:
        self.calls += 1
        return self.ok, "revision 3" if self.ok else "the file changed since"


def revertible(**kw: object) -> live.Move:
    m = move(**kw)  # type: ignore[arg-type]
    m.old_dsas_conf = "ROLE=web\n"
    m.prior = []
    return m


def test_transitional_overrides_drain_where_it_is_and_hold_out_of_the_new_pools() -> None:
    m = move()
    assert [(o.role, o.state) for o in m.transitional()] == [("web", "drain"), ("db", "hold")]
    assert [(o.role, o.state) for o in m.as_before()] == [("web", "keep"), ("db", "hold")]
    assert [(o.role, o.state) for o in m.held_out()] == [("db", "hold")]
    assert move(new_pooled=False).transitional()[-1].state == "drain"


def test_the_steps_run_in_order_and_are_journaled() -> None:
    farm = FakeFarm(busy_polls=2)
    out, j = go(move(), farm)
    assert out.ok and out.failed_step is None
    assert [(s, st) for s, st, _ in j.steps] == [
        ("drain", "done"), ("deliver", "done"), ("reapply", "done"), ("rebalance", "done")]
    assert farm.calls == ["reload", "drained?", "drained?", "drained?", "deliver",
                          "conf ROLE=db", "reapply", "wait_report", "members ", "reload",
                          "serving?"]
    assert "0 active connections" in j.steps[0][2]


def test_a_reboot_plan_reboots_instead_of_reapplying() -> None:
    farm = FakeFarm()
    out, j = go(move(reboot=True), farm)
    assert out.ok and [s for s, _, _ in j.steps] == ["drain", "deliver", "reboot", "rebalance"]
    assert "reapply" not in farm.calls and "reboot" in farm.calls
    # the reboot's ready report is followed by the trust of the new boot's host key,
    # for the address the host has in its new role, and the journal says so
    assert farm.calls[farm.calls.index("wait_report") + 1] == "trust 198.18.1.1"
    assert "host key trusted" in dict((st, d) for st, _, d in j.steps)["reboot"]
    live_farm = FakeFarm()
    go(move(), live_farm)
    assert not any(c.startswith("trust") for c in live_farm.calls)  # no reboot, same keys


def test_assign_trusts_a_rebooted_netboot_host_s_reported_key_only_if_its_own(
        tmp_path: Path) -> None:
    """`dsas assign` on the reboot path (LiveFarm.trust_new_key): a netboot host's new
    boot made new host keys; the key of its ready report since the reboot replaces
    every trusted one, but only when the report came from the host's own address with a
    valid boot token. A disk host's keys are not touched (they are on its disk). Before,
    assign left the old key trusted and the rebalance's SSH to a new director, and every
    later push, met a changed host key."""
    import base64

    from provision.assign.farm import LiveFarm
    from provision.policy.httpfiles import Event
    from provision.sshtrust.hostkeys import trusted_keys
    from provision.sshtrust.sshconf import SshConfig, add_known_host
    from provision.state import events

    def k(name: str) -> str:
        return base64.b64encode(name.encode() * 8).decode()

    inv = load(EXAMPLE)
    netboot = next(h for h in inv.hosts.values() if h.boot == "netboot")
    disk = next(h for h in inv.hosts.values() if h.boot == "disk")
    store, cfg = StateStore(tmp_path / "state"), SshConfig(tmp_path / "state")
    events.ensure_events_schema(store)
    for h in (netboot, disk):
        own = str(h.primary_interface.address)
        add_known_host(cfg, own, [("ssh-ed25519", k("OLD" + h.name))])
        events.record(store, Event(h.name, "ready", None, "web@B", own,
                                   ("ssh-ed25519", k("NEW" + h.name)), "boot1"), 110.0, True,
                      100)
    own = str(netboot.primary_interface.address)
    farm = LiveFarm(netboot.name, inv, cfg, store)
    assert "no host key in its ready report" in farm.trust_new_key(own, 200.0)
    events.record(store, Event(netboot.name, "ready", None, "web@B", "198.18.9.9",
                               ("ssh-ed25519", k("FORGED")), "boot2"), 201.0, True, 100)
    assert "NOT trusted" in farm.trust_new_key(own, 200.0)
    assert trusted_keys(cfg, own) == [("ssh-ed25519", k("OLD" + netboot.name))]
    events.record(store, Event(netboot.name, "ready", None, "web@B", own,
                               ("ssh-ed25519", k("NEW2")), "boot2"), 202.0, True, 100)
    assert "trusted from its ready report" in farm.trust_new_key(own, 200.0)
    assert trusted_keys(cfg, own) == [("ssh-ed25519", k("NEW2"))]
    d_own = str(disk.primary_interface.address)
    assert LiveFarm(disk.name, inv, cfg, store).trust_new_key(d_own, 100.0) == ""
    assert trusted_keys(cfg, d_own) == [("ssh-ed25519", k("OLD" + disk.name))]


def test_the_drain_timeout_goes_on_and_says_so() -> None:
    farm = FakeFarm(busy_polls=10**6)
    out, j = go(move(drain_timeout=3), farm)
    assert out.ok
    assert "--drain-timeout 3 s ran out" in j.steps[0][2] and "1 active" in j.steps[0][2]


def test_a_host_in_no_pool_is_not_drained_and_the_directors_not_reloaded() -> None:
    farm = FakeFarm()
    out, j = go(move(before={}, new_pooled=False), farm)
    assert out.ok and "reload" not in farm.calls
    assert j.steps[0] == ("drain", "done", "in no pool: nothing to drain")


@pytest.mark.parametrize("fail,step", [("deliver", "deliver"), ("wait_report", "reapply"),
                                        ("reapply", "reapply")])
def test_a_failure_stops_names_the_step_and_restores_the_pools_as_they_were(
        fail: str, step: str) -> None:
    farm = FakeFarm(fail=fail)
    out, j = go(move(), farm)
    assert not out.ok and out.failed_step == step and out.reason == f"{fail} broke"
    names = [s for s, _, _ in j.steps]
    assert names[-1] == "restore" and j.steps[-1][1] == "done"
    assert all(st == "not-run" for s, st, _ in j.steps[names.index(step) + 1:-1])
    assert ("rebalance", "not-run", f"{step} failed") in j.steps
    # kept in its old pool, held out of the new one, and the directors told so
    assert [(o.role, o.state) for o in farm.members[-1]] == [("web", "keep"), ("db", "hold")]
    assert farm.calls[-1] == "reload" and "serving?" not in farm.calls
    assert f"w1: {fail} broke" in dict((s, d) for s, _, d in j.steps)[step]


@pytest.mark.parametrize("fail,step", [("wait_report", "reapply"), ("reapply", "reapply")])
def test_a_failure_that_touched_the_host_reverts_the_inventory_and_puts_it_back(
        fail: str, step: str) -> None:
    farm, rv = FakeFarm(fail=fail, fails=1), Reverter()
    out, j = go(revertible(), farm, rv)
    assert not out.ok and out.failed_step == step and rv.calls == 1
    assert out.reverted and out.host_back and out.restored
    assert [s for s, _, _ in j.steps][-3:] == ["revert", "host-back", "restore"]
    assert all(st == "done" for s, st, _ in j.steps[-3:])
    # after the revert: the old dsas.conf delivered and re-applied, its ready report
    # with the old role; then the pools as before the assign (no override) and a reload
    tail = farm.calls[farm.calls.index("conf ROLE=web"):]
    assert tail[:3] == ["conf ROLE=web", "reapply", "wait_report"]
    assert farm.members[-1] == [] and farm.calls[-1] == "reload"
    assert out.back == ["inventory back to role web", "w1 runs role web again",
                        "the balancers as they were"]


def test_a_failure_at_deliver_reverts_the_inventory_and_leaves_the_host_alone() -> None:
    farm, rv = FakeFarm(fail="deliver"), Reverter()
    out, j = go(revertible(), farm, rv)
    assert out.reverted and out.host_back and rv.calls == 1
    assert "host-back" not in [s for s, _, _ in j.steps]
    assert farm.calls.count("deliver") == 1 and farm.members[-1] == []


def test_a_host_that_cannot_be_put_back_stays_out_of_every_pool() -> None:
    farm, rv = FakeFarm(fail="reapply"), Reverter()
    out, j = go(revertible(), farm, rv)
    assert out.reverted and not out.host_back and out.restored
    assert ("host-back", "failed") == j.steps[-2][:2] and "w1: reapply broke" in j.steps[-2][2]
    assert [(o.role, o.state) for o in farm.members[-1]] == [("web", "drain"), ("db", "hold")]


def test_an_inventory_that_cannot_be_reverted_leaves_the_host_and_keeps_the_pools() -> None:
    farm, rv = FakeFarm(fail="wait_report"), Reverter(ok=False)
    out, j = go(revertible(), farm, rv)
    assert not out.reverted and not out.host_back
    assert j.steps[-3][:2] == ("revert", "failed") and j.steps[-2][:2] == ("host-back",
                                                                          "not-run")
    assert [(o.role, o.state) for o in farm.members[-1]] == [("web", "drain"), ("db", "hold")]


def director_move(**kw: object) -> live.Move:
    m = revertible(**kw)
    m.old_role, m.new_role, m.before, m.new_pooled = "lvs", "web", {}, True
    m.leaves_pair = "lb"
    return m


def test_a_director_leaving_its_pair_hands_the_vips_over_before_anything_changes() -> None:
    farm = FakeFarm()
    out, j = go(director_move(), farm, Reverter())
    assert out.ok, out.reason
    assert [s for s, _, _ in j.steps] == ["drain", "handover", "deliver", "reapply",
                                          "rebalance"]
    assert farm.calls.index("hand_over") < farm.calls.index("deliver")
    assert "reload lb" in farm.calls  # the pair's directors: new priorities
    assert "lvs2 holds the VIPs of lb" in j.steps[1][2]


def test_a_handover_no_other_director_takes_stops_and_puts_the_director_back() -> None:
    farm, rv = FakeFarm(fail="hand_over"), Reverter()
    out, j = go(director_move(), farm, rv)
    assert not out.ok and out.failed_step == "handover"
    assert "conf ROLE=db" not in farm.calls  # the new dsas.conf never went
    assert out.reverted and out.host_back and rv.calls == 1
    # keepalived may have stopped: its old dsas.conf re-applied (dsas-init starts it)
    assert "conf ROLE=web" in farm.calls and farm.calls[-1] == "reload lb"


def test_a_new_director_must_run_the_pairs_services_before_the_move_is_done() -> None:
    m = revertible(before={}, new_pooled=False)
    m.old_role, m.new_role, m.joins_pair = "spare", "lvs", "lb"
    farm = FakeFarm(director_polls=2)
    out, j = go(m, farm, Reverter())
    assert out.ok and farm.calls.count("director_up?") == 3
    assert "a director of LVS pair lb: keepalived runs" in j.steps[-1][2]
    farm = FakeFarm(director_polls=10**6)
    out, j = go(m, farm, Reverter())
    assert out.failed_step == "rebalance" and "not a director of LVS pair lb" in out.reason
    assert out.reverted and out.host_back  # back to spare: keepalived stopped again


def test_a_host_up_in_its_new_role_but_unhealthy_is_held_out_of_its_pools() -> None:
    farm = FakeFarm(unhealthy=True)
    out, j = go(move(), farm)
    assert not out.ok and out.failed_step == "rebalance"
    assert "health check failing" in out.reason
    assert [(o.role, o.state) for o in farm.members[-1]] == [("db", "hold")]


def test_a_restore_that_cannot_reload_says_so() -> None:
    farm = FakeFarm(fail="reload")
    out, j = go(move(), farm)
    assert out.failed_step == "drain" and not out.restored
    assert j.steps[-1][:2] == ("restore", "failed")


def test_overrides_render_drained_held_and_kept_servers(tmp_path: Path) -> None:
    inv = load(EXAMPLE)
    lvs1 = inv.hosts["lvs1"]
    web = [h.name for h in inv.hosts_of_role("web")]
    a, b = web[0], web[1]
    addr_a = str(inv.hosts[a].primary_interface.address)
    addr_b = str(inv.hosts[b].primary_interface.address)
    ov = {(a, "web"): Override(a, "web", "drain", addr_a),
          (b, "web"): Override(b, "web", "hold", addr_b),
          ("log1", "web"): Override("log1", "web", "keep", "198.18.9.9")}
    plain = render_keepalived(inv, lvs1)
    text = render_keepalived(inv, lvs1, overrides=ov)
    assert f"real_server {addr_b} " in plain and f"real_server {addr_b} " not in text
    assert f"real_server {addr_a} 80 {{\n        weight 0\n" in text
    assert f"real_server {addr_a} 80 {{\n        weight 0\n" not in plain
    assert "real_server 198.18.9.9 80 {" in text and "alpha" in text
    ms = lbmembers.members(inv, "web", ov)
    assert [m.host for m in ms if m.drained] == [a] and b not in [m.host for m in ms]
    # kept in the store, as the serve's renderer reads them
    store = StateStore(tmp_path)
    try:
        assert lbmembers.load_quiet(store) == {}
        lbmembers.set_host(store, a, [ov[(a, "web")]])
        lbmembers.set_host(store, b, [ov[(b, "web")]])
        assert set(lbmembers.load(store)) == {(a, "web"), (b, "web")}
        lbmembers.set_host(store, a, [])
        assert set(lbmembers.load_quiet(store)) == {(b, "web")}
    finally:
        store.close()


def test_pool_reads_drained_and_serving() -> None:
    def r(present: bool, w: int | None, act: int | None, err: str | None = None) -> PoolRead:
        return PoolRead("lvs1", "www", "198.18.1.1", present, w, act, err)

    assert drained([r(True, 0, 0), r(False, None, None)])
    assert not drained([r(True, 0, 1)]) and not drained([r(True, 1, 0)])
    assert not drained([r(False, None, None, "unreachable")])
    assert serving([r(True, 1, 0), r(True, 3, 2)]) and not serving([])
    assert not serving([r(True, 0, 0)]) and not serving([r(False, None, None)])
    assert last_line("dsas-init: a\ndsas-init: FAILED: LVS_CONF_URL: bad\n=BODY x\n") == \
        "FAILED: LVS_CONF_URL: bad"


class FakePools:
    def __init__(self, reload_fails: bool = False, never_back: bool = False) -> None:
        self.ov: dict[tuple[str, str], Override] = {}
        self.calls: list[str] = []
        self.reload_fails, self.never_back = reload_fails, never_back

    def overrides(self) -> dict[tuple[str, str], Override]:
        return dict(self.ov)

    def set_host(self, host: str, rows: list[Override]) -> None:
        self.ov = {k: v for k, v in self.ov.items() if k[0] != host}
        self.ov.update({(o.host, o.role): o for o in rows})
        self.calls.append(f"set {host} " + ",".join(o.state for o in rows))

    def reload(self, roles: set[str]) -> str | None:
        self.calls.append("reload " + ",".join(sorted(
            f"{h}:{o.state}" for (h, _), o in self.ov.items())))
        return "lvs1: refused" if self.reload_fails else None

    def drained(self, roles: set[str], address: str) -> tuple[bool, str]:
        return True, "0 active"

    def serving(self, roles: set[str], address: str) -> tuple[bool, str]:
        return not self.never_back, "weight 1"


def _targets(n: int) -> list[Target]:
    return [Target(f"w{i}", f"198.18.1.{i}", "web") for i in range(1, n + 1)]


def _where(host: str, ov: object) -> dict[str, Member]:
    return {"web": Member(host, "198.18.1." + host[1:], False)}


def test_a_rolling_push_drains_each_batch_pushes_it_and_puts_it_back() -> None:
    pools, pushed = FakePools(), []

    def push(batch: list[Target]) -> list[tuple[str, bool, str]]:
        assert all(pools.ov[(t.name, "web")].state == "drain" for t in batch)
        pushed.append([t.name for t in batch])
        return [(t.name, True, "") for t in batch]

    clock = Clock()
    ro = rolling.run(_where, pools, _targets(5), 2, push, clock=clock, sleep=clock.sleep)
    assert pushed == [["w1", "w2"], ["w3", "w4"], ["w5"]] and ro.stopped is None
    assert pools.ov == {}  # every host back in its pools as it was
    assert pools.calls[:4] == ["set w1 drain", "set w2 drain", "reload w1:drain,w2:drain",
                               "set w1 "]


def test_a_failed_batch_stops_the_rollout_and_is_put_back() -> None:
    pools = FakePools()

    def push(batch: list[Target]) -> list[tuple[str, bool, str]]:
        return [(t.name, t.name != "w3", "rsync failed") for t in batch]

    clock = Clock()
    ro = rolling.run(_where, pools, _targets(6), 2, push, clock=clock, sleep=clock.sleep)
    assert [b.hosts for b in ro.batches] == [["w1", "w2"], ["w3", "w4"]]
    assert ro.stopped == "push failed on w3: rsync failed" and ro.not_pushed == ["w5", "w6"]
    assert pools.ov == {}


def test_a_batch_that_does_not_come_back_stops_the_rollout() -> None:
    clock = Clock()
    ro = rolling.run(_where, FakePools(never_back=True), _targets(3), 1,
                     lambda b: [(t.name, True, "") for t in b], check_timeout=5,
                     clock=clock, sleep=clock.sleep)
    assert len(ro.batches) == 1 and ro.stopped and "not back in the pools" in ro.stopped
    ro = rolling.run(_where, FakePools(reload_fails=True), _targets(3), 1,
                     lambda b: pytest.fail("pushed without a drain"), clock=clock,
                     sleep=clock.sleep)
    assert ro.stopped == "drain: lvs1: refused"


def test_the_served_keepalived_conf_follows_the_overrides_in_the_store(tmp_path: Path) -> None:
    import hashlib

    from provision.policy.boottree import BootTree

    inv = load(FIXTURES / "small.yaml")
    store = StateStore(tmp_path / "state")
    try:
        tree = BootTree(tmp_path, inv)
        tree.lb_overrides = lambda: lbmembers.load_quiet(store)
        before = tree.lookup("hosts/lb1/keepalived.conf", peer="198.18.0.11").data
        web = inv.hosts_of_role("web")[0]
        addr = str(web.primary_interface.address)
        assert f"real_server {addr} ".encode() in before
        lbmembers.set_host(store, web.name, [Override(web.name, "web", "drain", addr)])
        f = tree.lookup("hosts/lb1/keepalived.conf", peer="198.18.0.11")
        assert f.data != before and b"weight 0\n" in f.data
        s = tree.lookup("hosts/lb1/keepalived.conf.sha256", peer="198.18.0.11")
        assert s.data.startswith(hashlib.sha256(f.data).hexdigest().encode())
        lbmembers.set_host(store, web.name, [Override(web.name, "web", "hold", addr)])
        held = tree.lookup("hosts/lb1/keepalived.conf", peer="198.18.0.11").data
        assert f"real_server {addr} ".encode() not in held
    finally:
        store.close()
