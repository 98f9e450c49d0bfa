"""The live steps of `dsas assign` (issue 17): drain, deliver, re-apply (or reboot),
rebalance, each journaled; a failure stops the sequence and leaves the balancers as
they were.

The pools are never edited on a director by hand: what a director runs is what the
master renders from the inventory and the overrides of ``balancer.members`` (drain,
hold, keep), and a reload makes each director fetch it. So:

- before the inventory is written, the host is *drained* in every pool it is in now
  (weight 0, even once the inventory has moved it) and *held* out of the pools of
  its new role (it has not come up in it yet);
- drain: reload the directors, wait (``drain_timeout``) until IPVS shows no active
  connection for it on every director;
- deliver: the new dsas.conf to /etc/dsas.conf.new over SSH (host key verified);
- reapply: ``dsas-init reapply`` on the host, detached (its addresses may change
  under the SSH session); wait for its ``ready`` report with the new role (or its
  ``failed`` report, with the reason); or reboot, and wait for ``ready``;
- rebalance: the overrides go; reload the directors; keepalived's ``alpha`` keeps
  the host down in its new pools until its health check passes; wait until IPVS
  has it with a weight on every director. ``alpha`` rather than "weight 0, then
  raise it once the check passes": without alpha keepalived puts a new server in
  IPVS as up before its first check, so its presence proves nothing, and raising
  the weight would take a second reload; with alpha keepalived itself never gives
  an unchecked server traffic, and one reload suffices.

On a failure the previous state comes back, in this order:

1. the inventory: ``revert`` (the command's) writes the file as it was before the
   assign (a new revision) and the serve reloads it. Reverted after the failure
   rather than written only after the live steps succeed: the steps need the serve
   to serve the new facts (the new role's keepalived.conf pools, the boot files of
   a reboot, the host's report from its new address);
2. the host, if the move touched it (a failure at or after re-apply/reboot): its
   old dsas.conf delivered and re-applied (or a reboot, on the reboot path), and
   its ``ready`` report with the old role awaited;
3. the pools: with the inventory and the host back, the overrides are the ones
   the host had before the assign (none, usually: it is in its old pools at its
   old weight); a host that could not be put back stays drained where it was and
   held out of its new role's pools; the inventory not reverted, ``as_before()``
   (kept where it was, held out of its new pools). The directors are reloaded: a
   host that did not come up in its new role never joins a pool.

``Farm`` is what the sequence does to the world; ``LiveFarm`` does it over SSH and
HTTP, the unit tests give a fake.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..balancer.members import Member, Override

DRAIN_TIMEOUT = 30.0
READY_TIMEOUT = 300.0
CHECK_TIMEOUT = 120.0


class StepFailed(Exception):
    """A step of the move failed; ``reason`` is one line naming host and cause."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Farm(Protocol):
    """What the steps do to the live farm: pools, directors, the host (``farm.LiveFarm``)."""

    def set_members(self, rows: list[Override]) -> None: ...
    def reload(self, roles: set[str], pairs: set[str]) -> None: ...  # raises StepFailed
    def hand_over(self, address: str, pair: str) -> str: ...  # raises StepFailed
    def director_up(self, address: str, pair: str) -> tuple[bool, str]: ...
    def drained(self, roles: set[str], address: str) -> tuple[bool, str]: ...
    def serving(self, roles: set[str], address: str) -> tuple[bool, str]: ...
    def deliver(self, address: str, text: str) -> str: ...  # raises StepFailed
    def reapply(self, address: str) -> float: ...  # started at (master's clock)
    def reboot(self, address: str) -> float: ...
    def wait_report(self, since: float, role: str | None,
                    timeout: float) -> str: ...  # raises StepFailed
    def trust_new_key(self, address: str, since: float) -> str: ...  # "" if not netboot


class Journal(Protocol):
    """Where each step's outcome is recorded (``state.assign.AssignJournal``)."""

    def step(self, run_id: int, step: str, status: str, detail: str = "") -> None: ...


@dataclass
class Move:
    """One host moving from one role to another: addresses, pools and the path (live or reboot)."""

    host: str
    old_role: str
    new_role: str
    old_address: str            # where the host answers now (SSH)
    new_address: str            # its address in the new role
    before: dict[str, Member]   # role -> how the host is in its pools now
    new_pooled: bool            # the new role has virtual services
    reboot: bool
    dsas_conf: str              # the new dsas.conf
    drain_timeout: float = DRAIN_TIMEOUT
    ready_timeout: float = READY_TIMEOUT
    check_timeout: float = CHECK_TIMEOUT
    why: str = ""               # e.g. "assign run 7", kept with the overrides
    old_dsas_conf: str = ""     # the host's dsas.conf now (to put it back on a failure)
    leaves_pair: str | None = None  # the LVS pair the host is a director of, and leaves
    joins_pair: str | None = None   # the LVS pair it becomes a director of
    prior: list[Override] = field(default_factory=list)  # its overrides before the assign

    def _o(self, role: str, state: str, address: str) -> Override:
        return Override(self.host, role, state, address, self.why)

    def transitional(self) -> list[Override]:
        """Drained where it is; held out of its new role's pools."""
        rows = [self._o(r, "drain", m.address) for r, m in sorted(self.before.items())]
        if self.new_pooled and self.new_role not in self.before:
            rows.append(self._o(self.new_role, "hold", self.new_address))
        return rows

    def as_before(self) -> list[Override]:
        """The pools as they were: kept (or drained, if it was) where it was, held out
        of its new role's pools."""
        rows = [self._o(r, "drain" if m.drained else "keep", m.address)
                for r, m in sorted(self.before.items())]
        if self.new_pooled and self.new_role not in self.before:
            rows.append(self._o(self.new_role, "hold", self.new_address))
        return rows

    def held_out(self) -> list[Override]:
        """Came up in the new role but not healthy in its pools: out of them."""
        return [self._o(self.new_role, "hold", self.new_address)] if self.new_pooled else []

    @property
    def roles(self) -> set[str]:
        """The roles whose pools this move touches."""
        return set(self.before) | ({self.new_role} if self.new_pooled else set())

    @property
    def pairs(self) -> set[str]:
        """The LVS pairs the host leaves or joins as a director (all their directors
        are reloaded: priorities and peers change)."""
        return {p for p in (self.leaves_pair, self.joins_pair) if p}

    def order(self) -> list[str]:
        """The steps of this move; "handover" when it takes a director out of its pair."""
        return ["drain", *(["handover"] if self.leaves_pair else []), "deliver",
                "reboot" if self.reboot else "reapply", "rebalance"]


@dataclass
class Outcome:
    """How a move ended: the failed step and why, and every step with its status."""

    ok: bool
    failed_step: str | None = None
    reason: str = ""
    steps: list[tuple[str, str, str]] = field(default_factory=list)  # (step, status, detail)
    timings: dict[str, float] = field(default_factory=dict)
    restored: bool = True  # after a failure: the directors run the pools as they were
    reverted: bool = False  # after a failure: the inventory is as it was
    host_back: bool = True  # after a failure: the host runs its old role (or was untouched)
    back: list[str] = field(default_factory=list)  # after a failure: what was put back


Revert = Callable[[], tuple[bool, str]]  # the inventory as before: (done, detail)


def run(move: Move, farm: Farm, journal: Journal, run_id: int,
        say: Callable[[str], None] = lambda s: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        revert: Revert | None = None) -> Outcome:
    """The live steps, in order; the overrides must already be ``move.transitional()``
    (set before the inventory was written). On a failure ``revert`` puts the inventory
    back, then the host and the pools are put back (see the module doc)."""
    steps = _Steps(move, farm, clock, sleep)
    out = steps.out
    order = move.order()

    def record(step: str, status: str, detail: str) -> None:
        journal.step(run_id, step, status, detail)
        out.steps.append((step, status, detail))
        say(f"  {step}: {status}" + (f" ({detail})" if detail else ""))

    for i, step in enumerate(order):
        t0 = clock()
        try:
            detail = getattr(steps, step)()
        except StepFailed as e:
            out.timings[step] = clock() - t0
            out.ok, out.failed_step, out.reason = False, step, e.reason
            record(step, "failed", f"{move.host}: {e.reason}")
            for rest in order[i + 1:]:
                record(rest, "not-run", f"{step} failed")
            _put_back(move, farm, steps, revert, record)
            return out
        out.timings[step] = clock() - t0
        record(step, "done", detail)
    return out


class _Steps:
    """The four steps of one move, each returning its detail or raising StepFailed."""

    def __init__(self, move: Move, farm: Farm, clock: Callable[[], float],
                 sleep: Callable[[float], None]) -> None:
        self.move, self.farm, self.clock, self.sleep = move, farm, clock, sleep
        self.out = Outcome(ok=True)
        self.reapplied = False  # the host runs its new role (restore must undo that)
        self.touched = False  # the host's services changed (a failure must put them back)

    def drain(self) -> str:
        move, farm = self.move, self.farm
        if not move.before:
            return "in no pool: nothing to drain"
        farm.reload(move.roles, set())
        addrs = {m.address for m in move.before.values()}
        deadline = self.clock() + move.drain_timeout
        while True:
            states = [(a, *farm.drained(set(move.before), a)) for a in sorted(addrs)]
            if all(ok for _, ok, _ in states):
                return "weight 0 on every director, 0 active connections: " + "; ".join(
                    d for _, _, d in states)
            if self.clock() >= deadline:
                return (f"--drain-timeout {move.drain_timeout:g} s ran out; going on with: "
                        + "; ".join(d for _, _, d in states))
            self.sleep(0.5)

    def handover(self) -> str:
        """A director leaving its pair: another director of the pair must run its virtual
        services; keepalived stops on the host (its VIPs go, VRRP priority 0), and
        another director must hold every VIP of the pair before the move goes on."""
        assert self.move.leaves_pair is not None
        self.touched = True
        return self.farm.hand_over(self.move.old_address, self.move.leaves_pair)

    def deliver(self) -> str:
        return self.farm.deliver(self.move.old_address, self.move.dsas_conf)

    def reapply(self) -> str:
        self.touched = True
        since = self.farm.reapply(self.move.old_address)
        said = self.farm.wait_report(since, self.move.new_role, self.move.ready_timeout)
        self.reapplied = True
        return said

    def reboot(self) -> str:
        self.touched = True
        since = self.farm.reboot(self.move.old_address)
        said = self.farm.wait_report(since, None, self.move.ready_timeout)
        self.reapplied = True
        # a netboot host made new SSH host keys at this boot: the rebalance (a new
        # director's IPVS) and every later push log in with the one it reported
        trusted = self.farm.trust_new_key(self.move.new_address, since)
        return f"{said}; {trusted}" if trusted else said

    def back_to_old_role(self) -> str:
        """The old dsas.conf delivered and re-applied (or a reboot), at whichever of the
        host's addresses answers; its ready report with the old role."""
        move, farm = self.move, self.farm
        last: StepFailed | None = None
        for address in dict.fromkeys([move.new_address, move.old_address]):
            try:
                farm.deliver(address, move.old_dsas_conf)
            except StepFailed as e:
                last = e
                continue
            since = farm.reboot(address) if move.reboot else farm.reapply(address)
            said = farm.wait_report(since, None if move.reboot else move.old_role,
                                    move.ready_timeout)
            return f"its dsas.conf of role {move.old_role} back ({address}): {said}"
        assert last is not None
        raise last

    def rebalance(self) -> str:
        move, farm = self.move, self.farm
        farm.set_members([])
        if not move.roles and not move.pairs:
            return "in no pool before or after: nothing to reload"
        farm.reload(move.roles, move.pairs)
        said = []
        if move.joins_pair:
            pair = move.joins_pair
            said.append(f"a director of LVS pair {pair}: " + self._wait(
                lambda: farm.director_up(move.new_address, pair),
                f"a director of LVS pair {pair}"))
        if move.new_pooled:
            said.append("health check passed, in the pools: " + self._wait(
                lambda: farm.serving({move.new_role}, move.new_address),
                f"in the pools of role {move.new_role}", " (health check failing?)"))
        if not said:
            return f"{move.host} is in no pool of role {move.new_role}"
        return "; ".join(said)

    def _wait(self, check: Callable[[], tuple[bool, str]], what: str, hint: str = "") -> str:
        deadline = self.clock() + self.move.check_timeout
        while True:
            ok, detail = check()
            if ok:
                return detail
            if self.clock() >= deadline:
                raise StepFailed(f"not {what} after {self.move.check_timeout:g} s{hint}: "
                                 f"{detail}")
            self.sleep(1.0)


def _put_back(move: Move, farm: Farm, steps: _Steps, revert: Revert | None,
              record: Callable[[str, str, str], None]) -> None:
    """After a failed step: the inventory, the host and the pools as they were."""
    out = steps.out
    if revert is not None:
        ok, detail = revert()
        out.reverted = ok
        record("revert", "done" if ok else "failed", detail)
        if ok:
            out.back.append(f"inventory back to role {move.old_role}")
    if revert is not None and steps.touched:
        _host_back(move, steps, record)
    status, detail = _restore(move, farm, out.reverted, out.host_back, steps.reapplied)
    out.restored = status == "done"
    record("restore", status, detail)
    if out.restored:
        out.back.append("the balancers as they were")


def _host_back(move: Move, steps: _Steps, record: Callable[[str, str, str], None]) -> None:
    """The move touched the host: its old role back, once the inventory is."""
    out = steps.out
    if not out.reverted or not move.old_dsas_conf:
        out.host_back = False
        record("host-back", "not-run", "the inventory is not reverted: the host is left "
               "as it is")
        return
    try:
        detail = steps.back_to_old_role()
    except StepFailed as e:
        out.host_back = False
        record("host-back", "failed", f"{move.host}: {e.reason}")
        return
    record("host-back", "done", detail)
    out.back.append(f"{move.host} runs role {move.old_role} again")


def _restore(move: Move, farm: Farm, reverted: bool, host_back: bool,
             reapplied: bool) -> tuple[str, str]:
    """The balancers back as they were: the host's overrides from before the assign when
    the inventory and the host are back; else out of its new pools (and drained where it
    was, when it could not be put back)."""
    if reverted and host_back:
        rows = list(move.prior)
    elif reapplied and not reverted:  # up in its new role, not healthy in its pools
        rows = move.held_out()
    elif host_back:
        rows = move.as_before()
    else:  # in no role for sure: weight 0 where it was, out of its new pools
        rows = move.transitional()
    try:
        farm.set_members(rows)
        if move.roles or move.pairs:
            farm.reload(move.roles, move.pairs)
    except StepFailed as e:
        return "failed", f"the directors could not be reloaded as they were: {e.reason}"
    what = ", ".join(f"{o.state} {o.role}" for o in rows) or "no override"
    return "done", f"pools as before the assign ({what})"
