"""The plan of a rollout (pure): which hosts move, from which version, how they boot,
in which batches, and the pools each leaves and rejoins.

The hosts are those that boot IMAGE (``--role`` and ``--host`` narrow them), in
inventory order, less those already on the version. A canary (``--canary H``) is a
batch of its own, first; then batches of ``--batch N``. The inventory's version of
IMAGE changes only after the run, and only when every host that boots IMAGE is on
the new version (so a host rebooting mid-rollout for another reason boots what the
plan expects: the moved hosts are pinned, the others follow the inventory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..balancer import members as lbmembers
from ..balancer.members import Member, Overrides
from ..inventory.model import Host, Inventory


class PlanError(Exception):
    """The rollout cannot be planned; the message is one line for the operator."""


@dataclass(frozen=True)
class HostMove:
    """One host of the plan: where it is, how it boots, what it runs, its pools."""

    host: str
    role: str
    address: str
    boot: str                   # netboot | disk
    current: str                # the version it runs now (its pin, or the inventory's)
    pools: dict[str, Member]    # role -> how it is in that role's pools (left, rejoined)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "role": self.role, "address": self.address,
                "boot": self.boot, "current": self.current,
                "pools": sorted(self.pools)}


@dataclass
class Plan:
    """What a rollout will do, before it does any of it."""

    image: str
    version: str                # the concrete version the hosts move to
    previous: str               # the inventory's version of the image now (concrete)
    moves: list[HostMove]
    batches: list[list[str]]
    canary: str | None
    max_failures: int
    inventory_after: bool       # the inventory's version changes once all have moved
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (host, why)
    back: bool = False

    def move(self, host: str) -> HostMove:
        return next(m for m in self.moves if m.host == host)

    def as_json(self) -> dict[str, Any]:
        return {"image": self.image, "version": self.version, "previous": self.previous,
                "back": self.back, "canary": self.canary, "max_failures": self.max_failures,
                "batches": self.batches, "hosts": [m.as_json() for m in self.moves],
                "skipped": [{"host": h, "why": w} for h, w in self.skipped],
                "inventory_after": self.inventory_after}


HELD = "rollout: failed on the node"  # run.HELD: the why of a failed host's holds

Resolve = Callable[[str, str], "str | None"]  # (image, version) -> concrete, or None


@dataclass(frozen=True)
class Request:
    """What the operator asked for."""

    image: str
    version: str
    roles: Sequence[str] = ()
    hosts: Sequence[str] = ()
    batch: int = 1
    canary: str | None = None
    max_failures: int = 1


def make(inv: Inventory, req: Request, resolve: Resolve, pins: Mapping[str, str],
         overrides: Overrides | None = None) -> Plan:
    """The plan for ``req``; ``pins``: host -> the version a past rollout left it on."""
    if req.image not in inv.images:
        raise PlanError(f"no image {req.image!r} in the inventory"
                        f" (images: {', '.join(sorted(inv.images)) or 'none'})")
    if req.batch < 1 or req.max_failures < 1:
        raise PlanError("--batch and --max-failures must be at least 1")
    target = resolve(req.image, req.version)
    if target is None:
        raise PlanError(f"no image {req.image}@{req.version} in the image store")
    inv_version = inv.images[req.image].version
    previous = resolve(req.image, inv_version) or inv_version
    users = [h for h in inv.hosts.values() if h.image == req.image]
    chosen = _select(inv, req, users)
    # a host a rollout held out after it failed is moved back into its pools
    ov = {k: o for k, o in (overrides or {}).items()
          if not (o.state == "hold" and o.why == HELD)
          and not (o.state == "drain" and o.why.startswith("rollout run "))}
    moves, skipped = [], []
    for h in chosen:
        now = pins.get(h.name, previous)
        if now == target:
            skipped.append((h.name, f"already on {target}"))
            continue
        moves.append(HostMove(h.name, h.role.name, lbmembers.address_in(h), h.boot, now,
                              lbmembers.roles_in(inv, h.name, ov)))
    names = [m.host for m in moves]
    if req.canary is not None and req.canary not in names:
        raise PlanError(f"--canary {req.canary}: not a host of this rollout"
                        f" ({', '.join(names) or 'none moves'})")
    moving = set(names)
    after = target != previous and all(
        h.name in moving or pins.get(h.name, previous) == target for h in users)
    return Plan(req.image, target, previous, moves, batches(names, req.batch, req.canary),
                req.canary, req.max_failures, after, skipped)


def _select(inv: Inventory, req: Request, users: list[Host]) -> list[Host]:
    """The hosts asked for (every host of the image without --role/--host), in order."""
    for r in req.roles:
        if r not in inv.roles:
            raise PlanError(f"--role {r}: no such role")
    for name in req.hosts:
        if name not in inv.hosts:
            raise PlanError(f"--host {name}: no such host")
        if inv.hosts[name].image != req.image:
            raise PlanError(f"--host {name} boots image {inv.hosts[name].image or 'none'},"
                            f" not {req.image}")
    if not req.roles and not req.hosts:
        return users
    out = [h for h in users if h.role.name in req.roles or h.name in req.hosts]
    for r in req.roles:
        if not any(h.role.name == r for h in out):
            raise PlanError(f"--role {r}: none of its hosts boots image {req.image}")
    return out


def batches(names: Sequence[str], n: int, canary: str | None) -> list[list[str]]:
    """The canary alone first (if any), then the others ``n`` at a time."""
    rest = [h for h in names if h != canary]
    out = [[canary]] if canary is not None else []
    return out + [rest[i:i + n] for i in range(0, len(rest), n)]


def describe(p: Plan) -> str:
    """The plan for the terminal."""
    what = "back to" if p.back else "to"
    lines = [f"rollout of image {p.image} {what} {p.version}"
             f" (the inventory has {p.previous}):"]
    if not p.moves:
        lines.append("  nothing to move")
    for m in p.moves:
        pools = ", ".join(sorted(m.pools)) or "none"
        lines.append(f"  {m.host:<10} role {m.role:<8} {m.boot:<7} {m.current} -> {p.version}"
                     f"  pools left and rejoined: {pools}")
    lines += [f"  {h}: skipped ({why})" for h, why in p.skipped]
    for i, b in enumerate(p.batches, 1):
        tag = " (canary)" if p.canary is not None and i == 1 else ""
        lines.append(f"  batch {i}{tag}: {', '.join(b)}")
    lines.append(f"  stops after {p.max_failures} failed host(s); failed hosts stay out"
                 " of their pools")
    lines.append("  inventory: " + (f"image {p.image} version becomes {p.version} once all"
                                    " have moved" if p.inventory_after else
                                    f"unchanged (not every host of image {p.image} moves;"
                                    " the moved ones are pinned)"))
    return "\n".join(lines)
