"""Drains and holds of the balancers' pools (table ``lb_members``, ``schema.MEMBERS``).

One row per (host, role) whose pool membership differs from the inventory while a host
moves between roles (``balancer.members`` says what each state means). The master's
renderer of keepalived.conf reads them; ``dsas assign`` writes them.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from .schema import MEMBERS
from .store import StateStore

STATES = ("drain", "hold", "keep", "takeover")


@dataclass(frozen=True)
class Override:
    """A host whose membership of a role's pools differs from the inventory for now."""

    host: str
    role: str
    state: str  # drain | hold | keep | takeover (``role`` is then the LVS pair)
    address: str  # the host's address in that role
    why: str = ""


# (host, role) -> Override
Overrides = dict[tuple[str, str], Override]


def ensure_schema(store: StateStore) -> None:
    store.ensure(MEMBERS)


def _read(store: StateStore) -> Overrides:
    return {(r["host"], r["role"]): Override(r["host"], r["role"], r["state"], r["address"],
                                             r["why"])
            for r in store.query("SELECT * FROM lb_members")}


def load(store: StateStore) -> Overrides:
    """Every override (the table made if missing)."""
    ensure_schema(store)
    return _read(store)


def load_quiet(store: StateStore) -> Overrides:
    """As ``load``, for the serve's renderer: no table yet is no override."""
    try:
        return _read(store)
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


def set_takeover(store: StateStore, pair: str, host: str | None, address: str = "",
                 why: str = "") -> None:
    """``host`` takes the VIPs of LVS pair ``pair`` over (its keepalived.conf renders the
    take-over priority, with preempt), or, with None, no host of the pair does."""
    ensure_schema(store)
    with store.transaction() as conn:
        conn.execute("DELETE FROM lb_members WHERE state = 'takeover' AND role = ?", (pair,))
        if host is not None:
            conn.execute("INSERT OR REPLACE INTO lb_members(host, role, state, address, at, why)"
                         " VALUES (?, ?, 'takeover', ?, ?, ?)",
                         (host, pair, address, time.time(), why))
