"""What `dsas lb status` last read from each director, kept in the state store
(``provision.state.balancer``, one read per director: a later read replaces it).

A read says when the director was read, why it could not be (``error``, None when
it was), and what it said: per virtual service its real servers (state up,
weight 0 or out, weight, active and inactive connections) and per VRRP instance
whether it holds it. The status page reads it ("as last read").
"""

from __future__ import annotations

from typing import Any

from ..inventory.model import Inventory
from ..state import StateStore
from ..state import balancer as stored
from .status import DirectorView


def rows_of(inv: Inventory, views: list[DirectorView], report: dict[str, Any],
            now: float) -> list[stored.LbRead]:
    """One read per director (``report`` is ``lbstatus.status``'s)."""
    services: dict[str, list[dict[str, Any]]] = {v.host: [] for v in views}
    vrrp: dict[str, list[dict[str, Any]]] = {v.host: [] for v in views}
    for vs in report["services"]:
        for d in vs["directors"]:
            if "error" in d or d["host"] not in services:
                continue
            services[d["host"]].append({
                "service": vs["name"], "vip": vs["vip"], "port": vs["port"],
                "protocol": vs["protocol"], "in_ipvs": d["in_ipvs"], "scheduler": d["scheduler"],
                "reals": [{k: r.get(k) for k in ("host", "address", "port", "state", "weight",
                                                 "active", "inactive")} for r in d["reals"]]})
    for i in report["vrrp"]:
        pair = inv.lvs_pairs.get(i["pair"])
        for h in (pair.directors if pair else ()):
            if h in vrrp and h not in i["unknown"]:
                vrrp[h].append({k: i[k] for k in ("pair", "network", "vrid", "vips")}
                               | {"instance": i["name"], "held": h in i["holders"]})
    return [stored.LbRead(v.host, v.address, now, v.error, services[v.host], vrrp[v.host])
            for v in views]


def record(store: StateStore, inv: Inventory, views: list[DirectorView],
           report: dict[str, Any], now: float) -> None:
    """Keep this read as each director's latest (one transaction)."""
    stored.record(store, rows_of(inv, views, report, now))


def latest(store: StateStore) -> dict[str, dict[str, Any]]:
    """director -> its newest read: address, read_at, error, services, vrrp (read
    only: the table must exist, see ``provision.state.balancer.ensure_schema``)."""
    return {d: r.as_dict() for d, r in stored.latest(store).items()}
