"""The execution of a rollout plan, batch by batch (issue 23).

For each batch:

1. drain: every host of the batch at weight 0 in the pools it is in (overrides of
   ``balancer.members``, the directors reloaded, as `dsas assign` and
   `dsas-push --rolling` do), then a bounded wait for its active connections to end;
2. move: a netboot host is pinned to the new version (the master's boot files name
   it from then on) and rebooted over SSH; a disk host gets the image's tree by the
   push's atomic, verified release and re-applies its dsas.conf;
3. ready: wait for the host's ``ready`` report carrying ``IMAGE@VERSION`` (a ``failed``
   report, another version or no report in ``--ready-timeout`` fails the host);
4. rejoin: the drains go, the directors are reloaded, and keepalived's health check
   must put each moved host back in IPVS with a weight (``--check-timeout``).

A failed host stays out of its pools (held). After ``max_failures`` failed hosts the
rollout stops: the later batches are not touched and stay on the old version.

``stop()`` (SIGINT/SIGTERM in `dsas rollout`) is asked after each batch: when it is set
the rollout ends ``interrupted`` there, the later batches ``pending`` for ``--resume``.
A rollout whose process was killed leaves its drains (``rollout run N``) behind:
``lift_drains`` takes them away before a ``--resume`` or an ``--abandon``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..assign.live import StepFailed
from ..balancer import members as lbmembers
from ..balancer.members import Override
from ..balancer.rolling import Pools
from .plan import HELD, HostMove, Plan


class Nodes(Protocol):
    """What a rollout does to the hosts themselves (``farm.LiveNodes``)."""

    def move(self, m: HostMove, image: str, version: str) -> float: ...  # raises StepFailed
    def wait_ready(self, m: HostMove, image: str, version: str, since: float,
                   timeout: float) -> str: ...  # raises StepFailed


class Recorder(Protocol):
    """Where the rollout is recorded as it goes (``state.rollout.RolloutStore``)."""

    def host(self, run: int, host: str, outcome: str, detail: str = "") -> None: ...
    def pin(self, host: str, image: str, version: str, run: int) -> None: ...
    def unpin(self, image: str, hosts: list[str] | None = None) -> None: ...


@dataclass(frozen=True)
class Timeouts:
    """How long each wait of a batch may take (seconds), and the canary's pause (or
    ``wait``: stop after the canary until `dsas rollout --continue`)."""

    drain: float = 30.0
    ready: float = 300.0
    check: float = 120.0
    pause: float = 0.0
    wait: bool = False


@dataclass
class Result:
    """How the rollout ended."""

    outcome: str = "done"               # done | stopped | failed | paused | interrupted
    why: str = ""
    moved: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # host -> why
    not_run: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # paused: left for --continue
    seconds: dict[str, float] = field(default_factory=dict)  # host -> drain..rejoin


Say = Callable[[str], None]


@dataclass
class _Ctx:
    plan: Plan
    pools: Pools
    nodes: Nodes
    rec: Recorder
    run_id: int
    t: Timeouts
    say: Say
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    out: Result = field(default_factory=Result)

    def record(self, host: str, outcome: str, detail: str = "") -> None:
        self.rec.host(self.run_id, host, outcome, detail)
        self.say(f"  {host}: {outcome}" + (f" ({detail})" if detail else ""))


def run(plan: Plan, pools: Pools, nodes: Nodes, rec: Recorder, run_id: int,
        t: Timeouts = Timeouts(), say: Say = lambda s: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stop: Callable[[], bool] = lambda: False) -> Result:
    """Every batch of ``plan`` in order, until the end, ``plan.max_failures`` or
    ``stop()`` (asked after each batch)."""
    c = _Ctx(plan, pools, nodes, rec, run_id, t, say, clock, sleep)
    for bi, batch in enumerate(plan.batches):
        say(f"batch {bi + 1}/{len(plan.batches)}: {', '.join(batch)}")
        if not _batch(c, [plan.move(h) for h in batch]):
            c.out.outcome = "failed"
        elif len(c.out.failed) >= plan.max_failures:
            c.out.outcome = "stopped"
            c.out.why = (f"{len(c.out.failed)} failed host(s), --max-failures "
                         f"{plan.max_failures}: " + "; ".join(
                             f"{h}: {w}" for h, w in c.out.failed.items()))
        if c.out.outcome != "done":
            for later in plan.batches[bi + 1:]:
                for h in later:
                    c.out.not_run.append(h)
                    c.record(h, "not-run", "the rollout stopped before it")
            return c.out
        if bi + 1 < len(plan.batches) and stop():
            c.out.outcome = "interrupted"
            c.out.pending = [h for b in plan.batches[bi + 1:] for h in b]
            c.out.why = (f"interrupted after batch {bi + 1}/{len(plan.batches)}; "
                         f"{len(c.out.pending)} host(s) pending")
            c.say(f"interrupted: stopped after batch {bi + 1}; "
                  f"`dsas rollout {plan.image} --resume` moves the other "
                  f"{len(c.out.pending)} host(s)")
            return c.out
        if bi == 0 and plan.canary is not None and len(plan.batches) > 1 and _canary_done(c):
            return c.out
    return c.out


DRAINED_BY = "rollout run "


def stale(o: Override, run_id: int | None = None) -> bool:
    """A drain a rollout (run ``run_id``, or any) put and did not lift (it was killed)."""
    return o.state == "drain" and (o.why == f"{DRAINED_BY}{run_id}" if run_id is not None
                                   else o.why.startswith(DRAINED_BY))


def lift_drains(pools: Pools, run_id: int, hosts: list[str]) -> tuple[list[str], str | None]:
    """The drains run ``run_id`` left on ``hosts`` gone, the directors reloaded: the
    hosts lifted, and why the directors refused (or None)."""
    lifted, roles = [], set()
    ov = pools.overrides()
    for h in hosts:
        rows = lbmembers.of_host(ov, h)
        keep = [o for o in rows if not stale(o, run_id)]
        if len(keep) < len(rows):
            roles |= {o.role for o in rows if stale(o, run_id)}
            pools.set_host(h, keep)
            lifted.append(h)
    return lifted, (pools.reload(roles) if roles else None)


def check_moving(hosts: list[tuple[str, float]], reported: Callable[[str, float], bool]
                 ) -> tuple[list[str], list[str]]:
    """The hosts a killed rollout was moving, (host, since): those whose ready report
    since then names the new version (``reported``) are done, the others redone."""
    done = [h for h, since in hosts if reported(h, since)]
    return done, [h for h, _ in hosts if h not in done]


def _canary_done(c: _Ctx) -> bool:
    """After a good canary: pause, or stop here for --continue (True)."""
    if c.t.wait:
        c.out.outcome = "paused"
        c.out.pending = [h for b in c.plan.batches[1:] for h in b]
        c.say(f"canary {c.plan.canary} done: paused; `dsas rollout {c.plan.image} --continue`"
              f" moves the other {len(c.out.pending)} host(s)")
        return True
    if c.t.pause > 0:
        c.say(f"canary {c.plan.canary} done: pausing {c.t.pause:g} s")
        c.sleep(c.t.pause)
    return False




def ours(o: Override) -> bool:
    """A hold a rollout put on a failed host, or a drain a killed one left: the next move
    of the host lifts it."""
    return (o.state == "hold" and o.why == HELD) or stale(o)


def _batch(c: _Ctx, moves: list[HostMove]) -> bool:
    """One batch; False when the directors refused (the rollout cannot go on)."""
    t0 = c.clock()
    prior = {m.host: [o for o in lbmembers.of_host(c.pools.overrides(), m.host) if not ours(o)]
             for m in moves}
    roles = {r for m in moves for r in m.pools}
    if roles:
        why = _drain(c, moves, prior, roles)
        if why is not None:
            _refused(c, moves, "not-run", f"the directors refused the drain: {why}")
            c.out.why = f"drain: {why}"
            _set(c, moves, prior, roles)
            return False
    # the whole batch moves at once (reboots or pushes), then each is waited for
    started = [(m, _start(c, m)) for m in moves]
    up = [m for m, since in started if since is not None and _wait(c, m, since)]
    for m in moves:
        if m.host in c.out.failed:
            c.pools.set_host(m.host, _held(m, prior[m.host]))
    if roles:
        why = _set(c, up, prior, roles)
        if why is not None:
            _refused(c, up, "failed", f"the directors refused the reload: {why}")
            c.out.why = f"rejoin: {why}"
            return False
        _rejoin(c, up, prior, roles)
    for m in up:
        if m.host not in c.out.failed:
            c.out.moved.append(m.host)
            c.out.seconds[m.host] = c.clock() - t0
            c.record(m.host, "done", f"on {c.plan.version}, back in its pools"
                     if m.pools else f"on {c.plan.version}")
    return True


def _refused(c: _Ctx, moves: list[HostMove], outcome: str, why: str) -> None:
    for m in moves:
        if outcome == "failed":
            c.out.failed[m.host] = why
        else:
            c.out.not_run.append(m.host)
        c.record(m.host, outcome, why)


def _drain(c: _Ctx, moves: list[HostMove], prior: dict[str, list[Override]],
           roles: set[str]) -> str | None:
    """The batch at weight 0, waiting (bounded) for its connections; why not, or None."""
    for m in moves:
        keep = [o for o in prior[m.host] if o.role not in m.pools]
        c.pools.set_host(m.host, keep + [
            Override(m.host, r, "drain", mb.address, f"rollout run {c.run_id}")
            for r, mb in sorted(m.pools.items())])
        c.record(m.host, "moving", "draining")
    why = c.pools.reload(roles)
    if why is not None:
        return why
    deadline = c.clock() + c.t.drain
    while True:
        states = [c.pools.drained(set(m.pools), mb.address)
                  for m in moves for mb in m.pools.values()]
        if all(ok for ok, _ in states):
            c.say("  drained: 0 active connections")
            return None
        if c.clock() >= deadline:
            c.say(f"  drain: --drain-timeout {c.t.drain:g} s ran out; going on with: "
                  + "; ".join(d for ok, d in states if not ok))
            return None
        c.sleep(0.5)


def _start(c: _Ctx, m: HostMove) -> float | None:
    """Start moving one host (pinned first if it netboots); when, or None (failed)."""
    p = c.plan
    try:
        if m.boot == "netboot":
            _pin(c, m)
        since = c.nodes.move(m, p.image, p.version)
    except StepFailed as e:
        _failed(c, m, e.reason)
        return None
    c.record(m.host, "moving", f"{m.boot}: moving to {p.version}")
    return since


def _wait(c: _Ctx, m: HostMove, since: float) -> bool:
    """Wait for one host's ready report on the new version."""
    p = c.plan
    try:
        said = c.nodes.wait_ready(m, p.image, p.version, since, c.t.ready)
    except StepFailed as e:
        _failed(c, m, e.reason)
        return False
    if m.boot == "disk":
        _pin(c, m)
    c.say(f"  {m.host}: {said}")
    return True


def _pin(c: _Ctx, m: HostMove) -> None:
    """The host's version from now on: a pin, none when it is the inventory's."""
    p = c.plan
    if p.version == p.previous:
        c.rec.unpin(p.image, [m.host])
    else:
        c.rec.pin(m.host, p.image, p.version, c.run_id)


def _failed(c: _Ctx, m: HostMove, why: str) -> None:
    c.out.failed[m.host] = why
    c.record(m.host, "failed", why + ("; held out of its pools" if m.pools else ""))


def _held(m: HostMove, prior: list[Override]) -> list[Override]:
    """A failed host: out of the pools it left (held), its other overrides kept."""
    keep = [o for o in prior if o.role not in m.pools]
    return keep + [Override(m.host, r, "hold", mb.address, HELD)
                   for r, mb in sorted(m.pools.items())]


def _set(c: _Ctx, moves: list[HostMove], prior: dict[str, list[Override]],
         roles: set[str]) -> str | None:
    """``moves`` back to their overrides before the batch; the directors reloaded."""
    for m in moves:
        c.pools.set_host(m.host, prior[m.host])
    return c.pools.reload(roles)


def _rejoin(c: _Ctx, up: list[HostMove], prior: dict[str, list[Override]],
            roles: set[str]) -> None:
    """Until every moved host is back in its pools (health check passed); a host that
    is not in ``--check-timeout`` fails, and is held out."""
    deadline = c.clock() + c.t.check
    waiting = [m for m in up if m.pools]
    while waiting:
        left = []
        for m in waiting:
            states = [c.pools.serving({r}, mb.address) for r, mb in m.pools.items()
                      if not mb.drained]
            if not all(ok for ok, _ in states):
                left.append((m, "; ".join(d for ok, d in states if not ok)))
        if not left:
            return
        if c.clock() >= deadline:
            for m, d in left:
                c.out.failed[m.host] = (f"not back in its pools after {c.t.check:g} s"
                                        f" (health check failing?): {d}")
                c.record(m.host, "failed", c.out.failed[m.host] + "; held out")
                c.pools.set_host(m.host, _held(m, prior[m.host]))
            c.pools.reload(roles)
            return
        waiting = [m for m, _ in left]
        c.sleep(1.0)
