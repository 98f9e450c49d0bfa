"""What `dsas lb status` last read from each director (table ``lb_reads``, ``schema.LB``).

One row per director: its newest read (a later read replaces it). ``balancer.reads``
turns a status report into ``LbRead``s; the status page reads them back ("as last read").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .schema import LB
from .store import StateStore


@dataclass(frozen=True)
class LbRead:
    """One director as `dsas lb status` last read it."""

    director: str
    address: str
    read_at: float
    error: str | None  # why it could not be read; None: read
    services: list[dict[str, Any]]  # [{service, vip, port, protocol, in_ipvs, scheduler, reals}]
    vrrp: list[dict[str, Any]]  # [{instance, pair, network, vrid, vips, held}]

    def as_dict(self) -> dict[str, Any]:
        """address, read_at, error, services, vrrp (the director is the key)."""
        return {"address": self.address, "read_at": self.read_at, "error": self.error,
                "services": self.services, "vrrp": self.vrrp}


def ensure_schema(store: StateStore) -> None:
    store.ensure(LB)


def record(store: StateStore, reads: list[LbRead]) -> None:
    """Keep these reads as each director's latest (one transaction)."""
    ensure_schema(store)
    store.executemany("INSERT OR REPLACE INTO lb_reads(director, address, read_at, error,"
                      " services, vrrp) VALUES (?,?,?,?,?,?)",
                      [(r.director, r.address, r.read_at, r.error,
                        json.dumps(r.services, sort_keys=True), json.dumps(r.vrrp, sort_keys=True))
                       for r in reads])


def latest(store: StateStore) -> dict[str, LbRead]:
    """director -> its newest read (read only: the table must exist, see ``ensure_schema``)."""
    return {r["director"]: LbRead(r["director"], r["address"], r["read_at"], r["error"],
                                  json.loads(r["services"]), json.loads(r["vrrp"]))
            for r in store.query("SELECT * FROM lb_reads ORDER BY director")}


def fingerprint(store: StateStore) -> tuple[Any, ...]:
    """Changes whenever a director is read again (the status page polls it)."""
    return tuple(store.query("SELECT COUNT(*), MAX(read_at), SUM(read_at) FROM lb_reads")[0])
