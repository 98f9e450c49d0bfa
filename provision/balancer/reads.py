"""What `dsas lb status` last read from each director, kept in the state store.

Table (component ``lb``)::

    lb_reads  one row per director: its newest read (a later read replaces it)

A row says when the director was read, why it could not be (``error``, None when
it was), and what it said: per virtual service its real servers (state up,
weight 0 or out, weight, active and inactive connections) and per VRRP instance
whether it holds it. The status page reads it ("as last read").
"""

from __future__ import annotations

import json
from typing import Any

from ..inventory.model import Inventory
from ..state import StateStore
from .status import DirectorView

DDL = """
CREATE TABLE IF NOT EXISTS lb_reads (
    director TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    read_at REAL NOT NULL,
    error TEXT,                    -- why it could not be read; NULL: read
    services TEXT NOT NULL,        -- JSON: [{service, vip, port, protocol, in_ipvs,
                                   --   scheduler, reals: [{host, address, port, state,
                                   --   weight, active, inactive}]}]
    vrrp TEXT NOT NULL             -- JSON: [{instance, pair, network, vrid, vips, held}]
);
"""


def ensure_schema(store: StateStore) -> None:
    store.ensure_schema("lb", DDL)


def rows_of(inv: Inventory, views: list[DirectorView], report: dict[str, Any],
            now: float) -> list[tuple[Any, ...]]:
    """One ``lb_reads`` row per director read (``report`` is ``lbstatus.status``'s)."""
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
    return [(v.host, v.address, now, v.error, json.dumps(services[v.host], sort_keys=True),
             json.dumps(vrrp[v.host], sort_keys=True)) for v in views]


def record(store: StateStore, inv: Inventory, views: list[DirectorView],
           report: dict[str, Any], now: float) -> None:
    """Keep this read as each director's latest (one transaction)."""
    ensure_schema(store)
    store.executemany("INSERT OR REPLACE INTO lb_reads(director, address, read_at, error,"
                      " services, vrrp) VALUES (?,?,?,?,?,?)",
                      rows_of(inv, views, report, now))


def latest(store: StateStore) -> dict[str, dict[str, Any]]:
    """director -> its newest read: address, read_at, error, services, vrrp (read
    only: the table must exist, see ``ensure_schema``)."""
    out: dict[str, dict[str, Any]] = {}
    for r in store.query("SELECT * FROM lb_reads ORDER BY director"):
        out[r["director"]] = {"address": r["address"], "read_at": r["read_at"],
                              "error": r["error"], "services": json.loads(r["services"]),
                              "vrrp": json.loads(r["vrrp"])}
    return out
