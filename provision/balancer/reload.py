"""Reload the directors from the master, and read their pools back (issue 17).

A reload is one SSH round trip per director (host key verified, as ``dsas lb
status``): ``dsas-init --reload-lvs`` fetches the master's keepalived.conf for it
(checksum verified), lets ``keepalived --config-test`` judge it, replaces the file
atomically and sends keepalived SIGHUP, never a restart. A file keepalived refuses
is not installed; its reason comes back. The director names the sha256 of what it
installed; it must be the one the master renders now (else the serve had not yet
reloaded the inventory: the reload is tried again, bounded).

Then the pools are read back from IPVS (``balancer.status``): a drained server has
weight 0 and no active connection left; a server in a pool is in IPVS with a
weight above 0 (with ``alpha``, only once keepalived's check has passed).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..inventory.model import Inventory
from ..push.remote import RemoteError, RemoteNode
from ..render import render_keepalived
from ..sshtrust.sshconf import SshConfig
from .members import Overrides, members
from .status import DirectorView, probe, query

# and the sha256 of the installed file past its first line (the header names the
# inventory file as the serve was given it: another spelling of the same path)
RELOAD = ("export PATH=$PATH:/usr/sbin:/sbin; dsas-init --reload-lvs 2>&1; rc=$?; "
          "echo \"=BODY $(tail -n +2 /etc/keepalived/keepalived.conf | sha256sum)\"; exit $rc")
_SHA = re.compile(r"^=BODY ([0-9a-f]{64})", re.M)


@dataclass
class Reloaded:
    """One director's reload: whether it took the new keepalived.conf, and what it said."""

    director: str
    address: str
    ok: bool
    detail: str  # what dsas-init said (its last line), or why not
    sha: str = ""  # of what the director now runs, past its first line


def directors(inv: Inventory, pairs: set[str] | None = None) -> list[tuple[str, str]]:
    """(name, address) of the directors (of ``pairs``), in inventory order."""
    out: list[tuple[str, str]] = []
    for h, pair, _ in inv.lvs_hosts():
        if (pairs is None or pair.name in pairs) and h.name not in [n for n, _ in out]:
            out.append((h.name, str(h.primary_interface.address)))
    return out


def pairs_of_roles(inv: Inventory, roles: set[str]) -> set[str]:
    return {vs.pair for vs in inv.virtual_services.values() if vs.role in roles}


def expected_sha(inv: Inventory, director: str, overrides: Overrides | None,
                 templates: str | None = None) -> str:
    """The sha256 of what the master renders for ``director``, past its first line."""
    text = render_keepalived(inv, inv.hosts[director], templates, overrides)
    return hashlib.sha256(text.split("\n", 1)[1].encode()).hexdigest()


def last_line(out: str) -> str:
    lines = [ln.strip() for ln in out.splitlines() if ln.strip() and not ln.startswith("=")]
    failed = [ln for ln in lines if "FAILED:" in ln]
    line = (failed or lines or ["(nothing said)"])[-1]
    return line.removeprefix("dsas-init: ")


def reload_one(cfg: SshConfig, name: str, address: str, want: str | None = None,
               timeout: float = 60, tries: int = 5, pause: float = 1.0) -> Reloaded:
    """``dsas-init --reload-lvs`` on one director; with ``want`` (a sha256), again
    until the director runs that file (``tries`` at most)."""
    why = probe(address, cfg.port, cfg.connect_timeout)
    if why is not None:
        return Reloaded(name, address, False, f"unreachable: {why}")
    node = RemoteNode(cfg, name, address)
    try:
        for i in range(tries):
            try:
                rc, out, err = node.run(RELOAD, timeout=timeout)
            except RemoteError as e:
                return Reloaded(name, address, False, e.reason)
            said = last_line(out + err)
            if rc != 0:
                return Reloaded(name, address, False, said)
            m = _SHA.search(out)
            sha = m.group(1) if m else ""
            if want is None or want == sha:
                return Reloaded(name, address, True, said, sha)
            if i + 1 < tries:
                time.sleep(pause)
        return Reloaded(name, address, False,
                        f"runs keepalived.conf sha256 {sha[:12] or '?'}, not "
                        f"{(want or '')[:12]} as the master renders it now (the serve did "
                        "not reload the inventory?)",
                        sha)
    finally:
        node.close()


def reload_all(inv: Inventory, cfg: SshConfig, overrides: Overrides | None,
               pairs: set[str] | None = None, timeout: float = 60,
               templates: str | None = None, skip: frozenset[str] = frozenset(),
               ) -> list[Reloaded]:
    """Every director (of ``pairs``) but those in ``skip``, in parallel; each must end
    up running what the master renders from ``inv`` and ``overrides``. ``skip``: a
    host that ``inv`` makes a director but that does not run the role yet, as during
    `dsas assign HOST lvs` before HOST has re-applied."""
    ds = [(n, a) for n, a in directors(inv, pairs) if n not in skip]
    if not ds:
        return []
    wants = {n: expected_sha(inv, n, overrides, templates) for n, _ in ds}
    with ThreadPoolExecutor(max_workers=min(8, len(ds))) as ex:
        futs = [ex.submit(reload_one, cfg, n, a, wants[n], timeout) for n, a in ds]
        return [f.result() for f in futs]


@dataclass
class PoolRead:
    """Whether a real server is in a virtual service's pool on one director, and its weight."""

    director: str
    service: str
    address: str
    present: bool
    weight: int | None
    active: int | None
    error: str | None = None


def read_pools(inv: Inventory, cfg: SshConfig, roles: set[str], address: str,
               timeout: float = 20, reader: Callable[..., DirectorView] = query,
               ) -> list[PoolRead]:
    """For each virtual service of ``roles`` and each of its directors: how the real
    server at ``address`` is in IPVS."""
    out: list[PoolRead] = []
    services = [vs for vs in inv.virtual_services.values() if vs.role in roles]
    ds = dict(directors(inv, {vs.pair for vs in services}))
    views = {n: reader(cfg, n, a, timeout) for n, a in ds.items()}
    for vs in services:
        pair = inv.lvs_pairs[vs.pair]
        for d in (pair.active, pair.backup):
            v = views[d]
            if v.error is not None:
                out.append(PoolRead(d, vs.name, address, False, None, None, v.error))
                continue
            table = next((s for s in v.ipvs if s.vip == str(vs.vip) and s.port == vs.port
                          and s.protocol == vs.protocol), None)
            r = next((r for r in (table.reals if table else [])
                      if r.address == address and r.port == vs.real_port), None)
            out.append(PoolRead(d, vs.name, address, r is not None,
                                r.weight if r else None, r.active if r else None,
                                None if table else "the virtual service is not in IPVS"))
    return out


def drained(reads: list[PoolRead]) -> bool:
    """Weight 0 (or out) and no active connection, on every director."""
    return all(r.error is None and (not r.present or (r.weight == 0 and r.active == 0))
               for r in reads)


def serving(reads: list[PoolRead]) -> bool:
    """In IPVS with a weight above 0, on every director."""
    return bool(reads) and all(r.error is None and r.present and (r.weight or 0) > 0
                               for r in reads)


def absent(reads: list[PoolRead]) -> bool:
    return all(r.error is None and not r.present for r in reads)


def describe(reads: list[PoolRead]) -> str:
    parts = []
    for r in reads:
        if r.error is not None:
            parts.append(f"{r.director}/{r.service}: {r.error}")
        elif not r.present:
            parts.append(f"{r.director}/{r.service}: not in IPVS")
        else:
            parts.append(f"{r.director}/{r.service}: weight {r.weight}, {r.active} active")
    return "; ".join(parts) or "no pool"


def member_address(inv: Inventory, overrides: Overrides | None, role: str,
                   host: str) -> str | None:
    return next((m.address for m in members(inv, role, overrides) if m.host == host), None)
