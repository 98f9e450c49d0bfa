"""What every machine is doing: the view the status page and `dsas status` share.

Two halves. ``StatusSource`` reads the observed state from the state store (node
events, DHCP leases, discovered machines, push history, the balancers as `dsas lb
status` last read them) into an ``Observed`` snapshot and keeps it current
incrementally (new events by id, the other tables by a cheap fingerprint). The
rest is pure: ``host_view``/``snapshot``/``host_detail`` turn the inventory plus
an ``Observed`` into JSON-able dicts, ``mask_secrets`` hides passwords, keys and
tokens in rendered files, and ``format_lines`` prints the terminal table. Nothing here writes state.

Balancer health, weight and connections are "as last read" by `dsas lb status`
(``lb_reads``); a pool no director read says ``None`` ("not read"). The master
pair's state comes from a service not built yet: its field says ``None``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..inventory.model import Host, Inventory
from ..rollout import owner
from ..state import StateStore, balancer, discovered, events, leases, pushes, rollout
from .logsafe import safe

STAGE_ORDER = ("dhcp", "kernel", "initramfs", "dsas.conf", "image", "configured", "ready")
STATES = ("unknown", "booting", "ready", "failed")
RECENT_EVENTS = 50
TIMELINE_EVENTS = 200


def state_of(stage: str | None) -> str:
    """unknown (never reported), booting, ready or failed."""
    if stage is None:
        return "unknown"
    if stage in ("ready", "failed"):
        return stage
    return "booting"


# --------------------------------------------------------------------------
# What the store says.


@dataclass
class LastEvent:
    """A host's newest node event."""

    id: int
    ts: float
    stage: str
    reason: str | None
    address: str | None
    image: str | None


@dataclass
class Observed:
    """A snapshot of the observed state the status views are made from."""

    last: dict[str, LastEvent] = field(default_factory=dict)  # host -> newest event
    leases: dict[str, tuple[str, float, float]] = field(default_factory=dict)  # mac->(ip,exp,upd)
    releases: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # host -> per path
    latest: dict[str, str] = field(default_factory=dict)  # to_path -> newest release
    discovered: list[dict[str, Any]] = field(default_factory=list)
    lb: dict[str, dict[str, Any]] = field(default_factory=dict)  # director -> latest read
    rollout: dict[str, Any] | None = None  # the running rollout (state.rollout), if any
    event_id: int = 0  # the newest event read


class StatusSource:
    """Reads (never writes) the tables other components own. Not thread-safe: one
    owner (the status page's poller) calls ``refresh``."""

    def __init__(self, store: StateStore):
        self.store = store
        self.obs = Observed()
        self._fingerprint: tuple[Any, ...] | None = None
        self._rollout: rollout.RolloutRun | None = None

    def _tables(self) -> set[str]:
        return self.store.existing_tables()

    def refresh(self) -> set[str] | None:
        """Catch up with the store. Returns the hosts whose events changed, or None
        when something else changed (leases, pushes, discoveries): then all may have."""
        tables = self._tables()
        changed: set[str] = set()
        if "http_events" in tables:
            changed = self._new_events()
        fp = self._fingerprint_of(tables)
        if fp != self._fingerprint:
            self._fingerprint = fp
            self._reload_others(tables)
            return None
        if self._rollout_live_changed():
            return None
        return changed

    def _rollout_live_changed(self) -> bool:
        """Whether the running rollout's dsas died (or came) since the last look: a
        killed process changes no table, so this asks /proc each time."""
        if self._rollout is None or self.obs.rollout is None:
            return False
        live = owner.live(self._rollout)
        if live == self.obs.rollout.get("live"):
            return False
        self.obs.rollout["live"] = live
        return True

    def _new_events(self) -> set[str]:
        changed: set[str] = set()
        while True:  # bounded: each pass reads up to 5,000 rows, and the id only grows
            rows = events.since(self.store, self.obs.event_id, 5000)
            for r in rows:
                self.obs.last[r.host] = LastEvent(r.id, r.ts, r.stage, r.reason, r.address,
                                                  r.image)
                changed.add(r.host)
                self.obs.event_id = r.id
            if len(rows) < 5000:
                return changed

    def _fingerprint_of(self, tables: set[str]) -> tuple[Any, ...]:
        fp: list[Any] = []
        if "dhcp_leases" in tables:
            fp += leases.fingerprint(self.store)
        if "dhcp_discovered" in tables:
            fp += discovered.fingerprint(self.store)
        if "push_runs" in tables:
            fp += pushes.fingerprint(self.store)
        if "lb_reads" in tables:
            fp += balancer.fingerprint(self.store)
        if "rollout_runs" in tables and "rollout_hosts" in tables:
            fp += rollout.fingerprint(self.store)
        return tuple(fp)

    def _reload_others(self, tables: set[str]) -> None:
        obs = self.obs
        obs.leases = {}
        if "dhcp_leases" in tables:
            for r in leases.bound(self.store):
                old = obs.leases.get(r.mac)
                if old is None or r.expires > old[1]:
                    obs.leases[r.mac] = (str(r.address), r.expires, r.updated)
        obs.discovered = []
        if "dhcp_discovered" in tables:
            obs.discovered = discovered.machines(self.store)[-500:]
        running = rollout.running_quiet(self.store) if "rollout_hosts" in tables else None
        self._rollout = running
        obs.rollout = ({**running.as_json(), "live": owner.live(running)}
                       if running is not None else None)
        obs.lb = {}
        if "lb_reads" in tables:
            obs.lb = {d: r.as_dict() for d, r in balancer.latest(self.store).items()}
        obs.releases, obs.latest = {}, {}
        if "push_runs" in tables and "push_results" in tables:
            hist = pushes.History(self.store)
            obs.releases = hist.live_releases()
            for paths in obs.releases.values():
                for p in paths:
                    if p["to_path"] not in obs.latest:
                        obs.latest[p["to_path"]] = hist.latest_release(p["to_path"]) or ""

    def events(self, host: str, limit: int, upto: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events of one host up to event id ``upto``, oldest first."""
        if "http_events" not in self._tables():
            return []
        return [{"id": e.id, "ts": e.ts, "stage": e.stage, "reason": e.reason,
                 "address": e.address, "image": e.image}
                for e in events.of_host(self.store, host, limit, upto)]


# --------------------------------------------------------------------------
# The views (pure).


def _version(inv: Inventory, image: str | None) -> str | None:
    img = inv.images.get(image) if image else None
    return img.version if img else None


NOT_READ = {"health": None, "live_weight": None, "active": None, "inactive": None,
            "director": None, "read_at": None, "error": None}


def _unreachable(director: str, error: str) -> str:
    return f"director {director} unreachable: {error.removeprefix('unreachable: ')}"


def _service_read(read: dict[str, Any], name: str) -> tuple[dict[str, Any] | None, bool]:
    """A director's read of one virtual service, and whether it holds the service's VIP."""
    svc = next((s for s in read["services"] if s["service"] == name), None)
    held = svc is not None and any(i["held"] and svc["vip"] in i["vips"] for i in read["vrrp"])
    return svc, held


def _as_real(host: str, directors: Sequence[str], lb: dict[str, dict[str, Any]],
             name: str) -> dict[str, Any]:
    """A real server's pool as last read: from the director holding the VIP if it was
    read, else from any director read; "unreachable" only when none could be."""
    reads: list[tuple[bool, dict[str, Any]]] = []
    for d in directors:
        read = lb.get(d)
        if read is None:
            continue
        base = {"director": d, "read_at": read["read_at"]}
        if read["error"] is not None:
            reads.append((False, NOT_READ | base | {"error": _unreachable(d, read["error"])}))
            continue
        svc, held = _service_read(read, name)
        real = next((r for r in svc["reals"] if r["host"] == host), None) if svc else None
        if real is None:
            continue  # read before this service or host was in the inventory
        health = real["state"] if svc and svc["in_ipvs"] else "not in IPVS"
        reads.append((held, NOT_READ | base | {"health": health, "live_weight": real["weight"],
                                               "active": real["active"],
                                               "inactive": real["inactive"]}))
    for pick in (lambda h, r: h, lambda h, r: r["error"] is None, lambda h, r: True):
        best = next((r for h, r in reads if pick(h, r)), None)
        if best is not None:
            return best
    return dict(NOT_READ)


def _as_director(director: str, lb: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    read = lb.get(director)
    if read is None:
        return dict(NOT_READ)
    base = NOT_READ | {"director": director, "read_at": read["read_at"]}
    if read["error"] is not None:
        return base | {"error": _unreachable(director, read["error"])}
    svc, held = _service_read(read, name)
    if svc is None:
        return dict(NOT_READ)
    if not svc["in_ipvs"]:
        return base | {"health": "not in IPVS"}
    reals = svc["reals"]
    return base | {"health": "holds the VIP" if held else "standby",
                   "active": sum(r["active"] or 0 for r in reals),
                   "inactive": sum(r["inactive"] or 0 for r in reals)}


def _pools(inv: Inventory, host: Host, lb: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for vs in inv.virtual_services.values():
        if vs.role == host.role.name:
            pair = inv.lvs_pairs.get(vs.pair)
            directors = pair.directors if pair else ()
            out.append({"service": vs.name, "vip": f"{vs.vip}:{vs.port}/{vs.protocol}",
                        "as": "real server", "weight": vs.weight}
                       | _as_real(host.name, directors, lb, vs.name))
    for pair in inv.lvs_pairs.values():
        for which in ("active", "backup"):
            if getattr(pair, which) == host.name:
                for vs in inv.services_of_pair(pair.name):
                    out.append({"service": vs.name, "vip": f"{vs.vip}:{vs.port}/{vs.protocol}",
                                "as": f"director ({which}, {pair.name})", "weight": None}
                               | _as_director(host.name, lb, vs.name))
    return out


def _drift(paths: list[dict[str, Any]], latest: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        want = latest.get(p["to_path"]) or None
        have = p["release"]
        drift = "unknown" if want is None else ("current" if have == want else "behind")
        if p["result"] == "failed" and drift == "current":
            drift = "current (last push failed)"
        out.append({"to_path": p["to_path"], "release": have, "latest": want, "drift": drift,
                    "result": p["result"], "pushed_at": p["finished"]})
    return out


def host_view(inv: Inventory, host: Host, obs: Observed) -> dict[str, Any]:
    """One host's row: inventory facts and what was last observed of it."""
    ev = obs.last.get(host.name)
    leases = [obs.leases[m] for m in host.macs if m in obs.leases]
    lease_expires = max((lease[1] for lease in leases), default=None)
    seen = [ev.ts] if ev else []
    seen += [lease[2] for lease in leases]
    image = (ev.image if ev and ev.image else None) or host.image
    # a ready report names the version the node runs: IMAGE@VERSION (issue 23)
    image, _, reported = (image or "").partition("@")
    releases = _drift(obs.releases.get(host.name, []), obs.latest)
    return {
        "host": host.name,
        "role": host.role.name,
        "macs": list(host.macs),
        "addresses": {net: str(a) for net, a in host.addresses.items()},
        "reported_from": ev.address if ev and ev.address else None,
        "stage": ev.stage if ev else None,
        "state": state_of(ev.stage if ev else None),
        "reason": ev.reason if ev else None,
        "stage_at": ev.ts if ev else None,
        "last_seen": max(seen) if seen else None,
        "image": image or None,
        "version": reported or _version(inv, image or None),
        "boot": host.boot,
        "release": releases[0]["release"] if releases else None,
        "drift": releases[0]["drift"] if releases else None,
        "releases": releases,
        "pools": _pools(inv, host, obs.lb),
        "lease_expires": lease_expires,
    }


def snapshot(inv: Inventory, obs: Observed, now: float,
             hosts: Iterable[str] | None = None) -> dict[str, Any]:
    """The whole view (or only ``hosts``) as the API serves it."""
    names = list(inv.hosts) if hosts is None else [h for h in hosts if h in inv.hosts]
    views = [host_view(inv, inv.hosts[n], obs) for n in names]
    counts = {s: 0 for s in STATES}
    for v in views:
        counts[v["state"]] += 1
    masters = [{"host": h.name, "role": "primary" if h.name == inv.cluster.primary_master
                else "secondary", "state": None} for h in inv.masters]
    return {
        "cluster": inv.cluster.name,
        "now": now,
        "roles": sorted(inv.roles),
        "states": list(STATES),
        "counts": counts,
        "hosts": views,
        "discovered": [{k: d.get(k) for k in ("mac", "first_seen", "last_seen", "network",
                                               "interface", "address", "vendor_class",
                                               "seen")} for d in obs.discovered],
        "masters": masters,  # state: filled in by a master of a pair (None: single master)
        "latest_releases": dict(sorted(obs.latest.items())),
        "rollout": obs.rollout,  # the running `dsas rollout`, or None
    }


def timeline(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stages of the newest boot (from its last ``dhcp`` event), each with the
    seconds it took until the next one (None for the newest)."""
    start = 0
    for i, e in enumerate(events):
        if e["stage"] == "dhcp":
            start = i
    boot = list(events[start:])
    out = []
    for i, e in enumerate(boot):
        nxt = boot[i + 1]["ts"] if i + 1 < len(boot) else None
        out.append({"stage": e["stage"], "ts": e["ts"], "reason": e["reason"],
                    "seconds": None if nxt is None else max(0.0, nxt - e["ts"])})
    return out


def host_detail(view: dict[str, Any], events: Sequence[dict[str, Any]],
                files: dict[str, str], now: float) -> dict[str, Any]:
    """The host page: its row (``host_view``), boot timeline, recent events (read up
    to the row's newest event, so the two agree) and rendered files (``files``:
    name -> text, masked here)."""
    return {
        "now": now,
        "host": view,
        "timeline": timeline(events[-TIMELINE_EVENTS:]),
        "events": list(reversed(events[-RECENT_EVENTS:])),
        "files": {name: mask_secrets(text) for name, text in files.items()},
    }


# --------------------------------------------------------------------------
# Secrets.

MASK = "********"
_SECRET_WORD = r"[A-Za-z0-9_.\-\[\]]*(?:pass(?:word|wd)?|secret|token|key|psk|credential)" \
               r"[A-Za-z0-9_.\-\[\]]*"
# KEY=value and KEY="value" (shell, dsas.conf), "key value" (keepalived auth_pass),
# key: value (YAML); the name may carry a prefix or suffix (VRRP_PASS, api_token).
_ASSIGN = re.compile(rf"(?im)^(\s*(?:export\s+)?{_SECRET_WORD}\s*(?:=|:|\s)\s*)(\S.*?)\s*$")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
                  re.S)


def mask_secrets(text: str) -> str:
    """Hide the values of password, key and token settings and any PEM private key."""
    text = _PEM.sub("-----BEGIN PRIVATE KEY----- " + MASK + " -----END PRIVATE KEY-----", text)
    return _ASSIGN.sub(lambda m: m.group(1) + MASK, text)


# --------------------------------------------------------------------------
# The terminal.

COLUMNS = ("HOST", "ROLE", "STATE", "STAGE", "SINCE", "ADDRESS", "IMAGE", "RELEASE", "DRIFT",
           "LAST SEEN", "LEASE")


def _dur(seconds: float) -> str:
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def ago(ts: float | None, now: float) -> str:
    """How long ago: '12s', '5m', '3h', '2d'; '-' for never."""
    return "-" if ts is None else _dur(now - ts)


def until(ts: float | None, now: float) -> str:
    """How long from now: 'in 5m', or 'expired'; '-' for none."""
    if ts is None:
        return "-"
    return "expired" if ts <= now else "in " + _dur(ts - now)


def host_line(v: dict[str, Any], now: float) -> list[str]:
    addr = v["reported_from"] or next(iter(v["addresses"].values()), "-")
    image = f"{v['image']}:{v['version']}" if v["image"] and v["version"] else v["image"] or "-"
    stage = v["stage"] or "-"
    if v["stage"] == "failed" and v["reason"]:
        stage = f"failed: {v['reason']}"
    return [safe(x) for x in (v["host"], v["role"], v["state"], stage, ago(v["stage_at"], now),
                              addr, image, v["release"] or "-", v["drift"] or "-",
                              ago(v["last_seen"], now), until(v["lease_expires"], now))]


def format_lines(doc: dict[str, Any], now: float) -> list[str]:
    """The aligned table, one line per host, and a summary line."""
    rows = [host_line(v, now) for v in doc["hosts"]]
    cells = [list(COLUMNS)] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in cells]
    counts = {s: 0 for s in STATES}
    for v in doc["hosts"]:
        counts[v["state"]] = counts.get(v["state"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if doc.get("rollout"):
        lines += [safe(x) for x in rollout.describe(doc["rollout"])]
    lines.append(f"{len(rows)} host{'s' if len(rows) != 1 else ''}: {summary or 'none'}"
                 f" ({safe(doc.get('cluster', ''))}, "
                 f"{dt.datetime.fromtimestamp(now, dt.UTC).strftime('%H:%M:%S')} UTC)")
    return lines
