"""`dsas-push --rolling N` (issue 17): push to N hosts at a time, each batch out of
the balancers while it changes.

For each batch: its hosts are drained in every pool they are in (weight 0 through
``balancer.members``, both directors reloaded), dsas waits (bounded) for their
active connections to reach 0, the batch is pushed, then the drains go, the
directors are reloaded, and dsas waits until keepalived's health check has every
host of the batch back in IPVS with a weight. A failed push or a host that does not
come back stops the rollout there (the later batches are not pushed); the failed
batch is put back in its pools as it was (a failed push leaves the host on its old
release, atomically).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..inventory.model import Inventory
from ..push.targets import Target
from ..sshtrust.sshconf import SshConfig
from ..state import StateStore
from . import members as lbmembers
from . import reload as lbreload
from .members import Member, Override, Overrides


class Pools(Protocol):
    """What a rollout does to the balancers (the real one: ``LivePools``)."""

    def overrides(self) -> Overrides: ...
    def set_host(self, host: str, rows: list[Override]) -> None: ...
    def reload(self, roles: set[str]) -> str | None: ...  # why not, or None
    def drained(self, roles: set[str], address: str) -> tuple[bool, str]: ...
    def serving(self, roles: set[str], address: str) -> tuple[bool, str]: ...


@dataclass
class Batch:
    """One batch of a rolling push: its hosts, the drain, what was pushed and what failed."""

    hosts: list[str]
    drained: str = ""
    pushed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    back: str = ""
    error: str | None = None


@dataclass
class Rollout:
    """A rolling push: its batches, and why it stopped early (the hosts not pushed)."""

    batches: list[Batch] = field(default_factory=list)
    stopped: str | None = None  # why the rollout stopped early
    not_pushed: list[str] = field(default_factory=list)


def batches(targets: Sequence[Target], n: int) -> list[list[Target]]:
    return [list(targets[i:i + n]) for i in range(0, len(targets), n)]


def run(inv_pools: Callable[[str, Overrides], dict[str, Member]], pools: Pools,
        targets: Sequence[Target], n: int,
        push: Callable[[list[Target]], list[tuple[str, bool, str]]],
        drain_timeout: float = 30, check_timeout: float = 120,
        say: Callable[[str], None] = lambda s: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep) -> Rollout:
    """``inv_pools(host, overrides)``: role -> how the host is in its pools
    (``members.roles_in`` on the inventory); ``push(batch)``: (host, ok, reason)."""
    out = Rollout()
    groups = batches(targets, n)
    for gi, group in enumerate(groups):
        b = Batch([t.name for t in group])
        out.batches.append(b)
        ov = pools.overrides()
        prior = {t.name: lbmembers.of_host(ov, t.name) for t in group}
        where = {t.name: inv_pools(t.name, ov) for t in group}
        roles = {r for w in where.values() for r in w}
        say(f"batch {gi + 1}/{len(groups)}: {', '.join(b.hosts)}"
            + (f" (pools of {', '.join(sorted(roles))})" if roles else " (in no pool)"))

        if roles and not _drain(pools, group, where, prior, roles, b, drain_timeout,
                                clock, sleep):
            break
        if roles:
            say(f"  drained: {b.drained}")
        results = push(group)
        b.pushed = [h for h, ok, _ in results if ok]
        b.failed = [f"{h}: {why}" for h, ok, why in results if not ok]
        why = _put_back(pools, group, prior, roles)
        if why is not None:
            b.error = f"restore: {why}"
            break
        if roles:
            _wait_back(pools, group, where, b, check_timeout, clock, sleep)
            say(f"  {b.back or b.error}")
        if b.failed or b.error:
            break
    done = {h for b in out.batches for h in b.hosts}
    out.not_pushed = [t.name for t in targets if t.name not in done]
    last = out.batches[-1] if out.batches else None
    if last is not None and (last.failed or last.error):
        out.stopped = last.error or "push failed on " + "; ".join(last.failed)
    return out


Where = dict[str, dict[str, Member]]  # host -> role -> how it is in that role's pools


def _drain(pools: Pools, group: list[Target], where: Where,
           prior: dict[str, list[Override]], roles: set[str], b: Batch, timeout: float,
           clock: Callable[[], float], sleep: Callable[[float], None]) -> bool:
    """The batch at weight 0 on the directors, waiting (``timeout``) for its connections
    to end; False (``b.error``, the pools put back) when the directors refused."""
    for t in group:
        keep = [o for o in prior[t.name] if o.role not in where[t.name]]
        pools.set_host(t.name, keep + [Override(t.name, r, "drain", m.address, "rolling push")
                                       for r, m in sorted(where[t.name].items())])
    why = pools.reload(roles)
    if why is not None:
        b.error = f"drain: {why}"
        _put_back(pools, group, prior, roles)
        return False
    deadline = clock() + timeout
    while True:
        states = [pools.drained(set(where[t.name]), m.address)
                  for t in group for m in where[t.name].values()]
        if all(ok for ok, _ in states):
            b.drained = "0 active connections"
            return True
        if clock() >= deadline:
            b.drained = f"--drain-timeout {timeout:g} s ran out: " + "; ".join(
                d for ok, d in states if not ok)
            return True
        sleep(0.5)


def _wait_back(pools: Pools, group: list[Target], where: Where, b: Batch, timeout: float,
               clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """Until the batch is back in its pools (health check passed), or ``b.error``."""
    deadline = clock() + timeout
    while True:
        states = [pools.serving({r}, m.address)
                  for t in group for r, m in where[t.name].items() if not m.drained]
        if all(ok for ok, _ in states):
            b.back = "back in the pools (health check passed)"
            return
        if clock() >= deadline:
            b.error = (f"not back in the pools after {timeout:g} s: "
                       + "; ".join(d for ok, d in states if not ok))
            return
        sleep(1.0)


def _put_back(pools: Pools, group: list[Target], prior: dict[str, list[Override]],
              roles: set[str]) -> str | None:
    """The batch's overrides as they were before it; the directors reloaded."""
    for t in group:
        pools.set_host(t.name, prior[t.name])
    return pools.reload(roles) if roles else None


@dataclass
class LivePools:
    """The real balancers: overrides in the state store, directors over SSH."""

    inv: Inventory
    cfg: SshConfig
    store: StateStore
    timeout: float = 60

    def overrides(self) -> Overrides:
        return lbmembers.load(self.store)

    def set_host(self, host: str, rows: list[Override]) -> None:
        lbmembers.set_host(self.store, host, rows)

    def reload(self, roles: set[str]) -> str | None:
        done = lbreload.reload_all(self.inv, self.cfg, self.overrides(),
                                   lbreload.pairs_of_roles(self.inv, roles),
                                   timeout=self.timeout)
        return "; ".join(f"{r.director}: {r.detail}" for r in done if not r.ok) or None

    def drained(self, roles: set[str], address: str) -> tuple[bool, str]:
        reads = lbreload.read_pools(self.inv, self.cfg, roles, address, self.timeout)
        return lbreload.drained(reads), f"{address}: {lbreload.describe(reads)}"

    def serving(self, roles: set[str], address: str) -> tuple[bool, str]:
        reads = lbreload.read_pools(self.inv, self.cfg, roles, address, self.timeout)
        return lbreload.serving(reads), f"{address}: {lbreload.describe(reads)}"
