"""Who is in each pool, beyond what the inventory says: drains and holds (issue 17).

The inventory says which role a host has; the pools of a role's virtual services
are its hosts. While a host moves between roles the directors must see something
else for a while, and that is kept here, in the state store, where the master's
renderer of keepalived.conf reads it (never a hand ``ipvsadm`` edit: keepalived
would undo it at its next reload)::

    drain  the host stays in ROLE's pools at weight 0 (even if the inventory moved
           it): no new connections, the open ones finish
    hold   the host is kept out of ROLE's pools (even if the inventory put it there):
           it has not come up in that role yet
    keep   the host stays in ROLE's pools at its normal weight (even if the inventory
           moved it): a failed assign leaves the balancers as they were
    takeover  (ROLE is then an LVS pair) the host, a director of the pair, renders
           the take-over priority with preempt: it takes the VIPs from a director
           leaving the pair while that one still holds them, so that the handover has
           no gap (``assign.farm.LiveFarm.hand_over``)

The table, ``lb_members`` (one row per (host, role) that differs from the inventory; the
address is the host's in that role), is owned by ``state.members``.

GitHub GLB's states (active, draining, filling, inactive) are the model; "filling"
is keepalived's ``alpha``: a server added to a pool starts down until its check passes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..inventory.model import Host, Inventory
from ..state.members import (
    STATES,
    Override,
    Overrides,
    ensure_schema,
    load,
    load_quiet,
    set_host,
    set_takeover,
)

# the table's API (state.members), re-exported for the callers
__all__ = ["STATES", "Member", "Override", "Overrides", "address_in", "ensure_schema", "load",
           "load_quiet", "members", "of_host", "roles_in", "set_host", "set_takeover"]


@dataclass(frozen=True)
class Member:
    """A real server of a role's pools: its address, and whether it is drained (weight 0)."""

    host: str
    address: str
    drained: bool  # weight 0


def members(inv: Inventory, role: str, overrides: Overrides | None = None) -> list[Member]:
    """The real servers of ``role``'s pools: its hosts, less the held ones, plus the
    hosts drained or kept in it from another role; in inventory order."""
    ov = {k: o for k, o in (overrides or {}).items() if o.state != "takeover"}
    out: list[Member] = []
    for h in inv.hosts.values():
        o = ov.get((h.name, role))
        if h.role.name == role:
            if o is not None and o.state == "hold":
                continue
            out.append(Member(h.name, o.address if o else str(h.primary_interface.address),
                              o is not None and o.state == "drain"))
        elif o is not None and o.state in ("drain", "keep"):
            out.append(Member(h.name, o.address, o.state == "drain"))
    for (name, r), o in sorted(ov.items()):  # a host no longer in the inventory at all
        if r == role and name not in inv.hosts and o.state in ("drain", "keep"):
            out.append(Member(name, o.address, o.state == "drain"))
    return out


def roles_in(inv: Inventory, host: str, overrides: Overrides | None = None,
             ) -> dict[str, Member]:
    """role -> how ``host`` is in that role's pools now (roles with virtual services)."""
    roles = {vs.role for vs in inv.virtual_services.values()}
    out = {}
    for r in sorted(roles):
        for m in members(inv, r, overrides):
            if m.host == host:
                out[r] = m
    return out


def address_in(h: Host) -> str:
    return str(h.primary_interface.address)


def of_host(overrides: Overrides, host: str) -> list[Override]:
    return [o for (h, _), o in sorted(overrides.items()) if h == host]
