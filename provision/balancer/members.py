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

Table (component ``lb``)::

    lb_members  one row per (host, role) that differs from the inventory; the address
                is the host's in that role (a drained host may have a new one already)

GitHub GLB's states (active, draining, filling, inactive) are the model; "filling"
is keepalived's ``alpha``: a server added to a pool starts down until its check passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..inventory.model import Host, Inventory
from ..state import StateStore

DDL = """
CREATE TABLE IF NOT EXISTS lb_members (
    host TEXT NOT NULL,
    role TEXT NOT NULL,
    state TEXT NOT NULL,           -- drain | hold | keep
    address TEXT NOT NULL,         -- the host's address in that role
    at REAL NOT NULL,
    why TEXT NOT NULL DEFAULT '',  -- e.g. "assign run 7"
    PRIMARY KEY (host, role)
);
"""

STATES = ("drain", "hold", "keep")


@dataclass(frozen=True)
class Override:
    host: str
    role: str
    state: str
    address: str
    why: str = ""


# (host, role) -> Override
Overrides = dict[tuple[str, str], Override]


@dataclass(frozen=True)
class Member:
    host: str
    address: str
    drained: bool  # weight 0


def members(inv: Inventory, role: str, overrides: Overrides | None = None) -> list[Member]:
    """The real servers of ``role``'s pools: its hosts, less the held ones, plus the
    hosts drained or kept in it from another role; in inventory order."""
    ov = overrides or {}
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


def ensure_schema(store: StateStore) -> None:
    store.ensure_schema("lb_members", DDL)


def load(store: StateStore) -> Overrides:
    ensure_schema(store)
    return {(r["host"], r["role"]): Override(r["host"], r["role"], r["state"], r["address"],
                                             r["why"])
            for r in store.query("SELECT * FROM lb_members")}


def load_quiet(store: StateStore) -> Overrides:
    """As ``load``, for the serve's renderer: no table yet is no override."""
    import sqlite3

    try:
        return {(r["host"], r["role"]): Override(r["host"], r["role"], r["state"],
                                                 r["address"], r["why"])
                for r in store.query("SELECT * FROM lb_members")}
    except sqlite3.OperationalError:
        return {}


def set_host(store: StateStore, host: str, rows: list[Override]) -> None:
    """Replace every override of ``host`` by ``rows`` (one transaction)."""
    ensure_schema(store)
    for o in rows:
        if o.state not in STATES or o.host != host:
            raise ValueError(f"bad override {o}")
    with store.transaction() as conn:
        conn.execute("DELETE FROM lb_members WHERE host = ?", (host,))
        conn.executemany("INSERT INTO lb_members(host, role, state, address, at, why)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         [(o.host, o.role, o.state, o.address, time.time(), o.why)
                          for o in rows])


def of_host(overrides: Overrides, host: str) -> list[Override]:
    return [o for (h, _), o in sorted(overrides.items()) if h == host]
