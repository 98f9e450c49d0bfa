"""`dsas lb status`: what IPVS and VRRP really do on each director (issue 16).

One SSH round trip per director (paramiko, with the host keys dsas verifies, as
``dsas push``): ``ipvsadm -Ln`` and the director's IPv4 addresses. The IPVS table
gives each real server's weight and connections; a real server of the inventory
that is missing from the table was taken out by keepalived's health check. The
director holding a VRRP instance is the one that carries its VIPs.

The pools' overrides (``balancer.members``: drains, holds and keeps of `dsas assign`
and `dsas-push --rolling`) say why a server is where it is, so an operator can
tell a drain from a failed check:

    up            in IPVS with a weight
    draining      drained on purpose: in IPVS at weight 0, its connections finishing
    weight 0      in IPVS at weight 0, not drained by dsas (keepalived inhibited it)
    out           a real server of the pool that IPVS does not have: its check fails
    held          kept out of the pool on purpose (not up in this role yet)
    held, still in IPVS / draining, not in IPVS   the director runs an older config
"""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..inventory.model import Inventory, LvsPair, VirtualService
from ..push.remote import RemoteError, RemoteNode
from ..sshtrust.sshconf import SshConfig
from ..state.members import Overrides

# ipvsadm's own words for the forwarding methods (ipvsadm.c: fwd_name)
FORWARD_NAMES = {"Masq": "NAT", "Route": "DR", "Tunnel": "TUN", "Local": "Local"}

_SERVICE = re.compile(r"^(TCP|UDP|SCTP|FWM)\s+(\S+?):(\d+)\s+(\S+)(.*)$")
_REAL = re.compile(r"^\s+->\s+(\S+?):(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$")
_ADDR = re.compile(r"\binet (\d+\.\d+\.\d+\.\d+)/\d+")

SCRIPT = ("export PATH=$PATH:/usr/sbin:/sbin; echo '=IPVS'; ipvsadm -Ln 2>&1; "
          "echo \"=RC $?\"; echo '=ADDR'; ip -4 -o addr show")


@dataclass
class RealServer:
    """One real server of an IPVS virtual service, as ``ipvsadm -Ln`` reports it."""

    address: str
    port: int
    forward: str  # NAT, DR, TUN
    weight: int
    active: int
    inactive: int


@dataclass
class IpvsService:
    """One IPVS virtual service on a director: address, scheduler and its real servers."""

    protocol: str
    vip: str
    port: int
    scheduler: str
    flags: str
    reals: list[RealServer] = field(default_factory=list)


def parse_ipvsadm(text: str) -> list[IpvsService]:
    """The table `ipvsadm -Ln` prints; raises ValueError on a line it cannot read."""
    out: list[IpvsService] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("IP Virtual Server", "Prot ", "  -> Remote")):
            continue
        m = _SERVICE.match(line)
        if m:
            out.append(IpvsService(m.group(1), m.group(2), int(m.group(3)), m.group(4),
                                   m.group(5).strip()))
            continue
        m = _REAL.match(line)
        if m and out:
            out[-1].reals.append(RealServer(m.group(1), int(m.group(2)),
                                            FORWARD_NAMES.get(m.group(3), m.group(3)),
                                            int(m.group(4)), int(m.group(5)), int(m.group(6))))
            continue
        raise ValueError(f"unexpected ipvsadm line: {line.strip()[:80]!r}")
    return out


@dataclass
class DirectorView:
    """What one director reports: its IPVS table, local addresses and VRRP, or why not."""

    host: str
    address: str
    error: str | None = None
    ipvs: list[IpvsService] = field(default_factory=list)
    addresses: set[str] = field(default_factory=set)


def parse_report(host: str, address: str, text: str) -> DirectorView:
    """The output of SCRIPT."""
    view = DirectorView(host, address)
    sections: dict[str, list[str]] = {}
    cur = ""
    for line in text.splitlines():
        if line.startswith("="):
            cur = line[1:].split()[0]
            if cur == "RC":
                sections["RC"] = [line[4:].strip()]
                cur = "IPVS_END"
            continue
        sections.setdefault(cur, []).append(line)
    ipvs = "\n".join(sections.get("IPVS", []))
    if sections.get("RC", ["1"])[0] != "0":
        reason = next((ln for ln in ipvs.splitlines() if ln.strip()), "ipvsadm failed")
        view.error = f"ipvsadm -Ln: {reason.strip()[:150]}"
    else:
        try:
            view.ipvs = parse_ipvsadm(ipvs)
        except ValueError as e:
            view.error = str(e)
    for line in sections.get("ADDR", []):
        view.addresses.update(_ADDR.findall(line))
    return view


def probe(address: str, port: int, timeout: float) -> str | None:
    """Why ``address`` cannot be an SSH server right now (one line), or None.

    paramiko's own words for these cases ("No existing session", "[Errno None]
    Unable to connect") do not say what is wrong; a plain TCP connect and a read
    of the banner do.
    """
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except ConnectionRefusedError:
        return f"connection refused on port {port}"
    except TimeoutError:
        return f"no answer on port {port} in {timeout:g} s"
    except OSError as e:
        return f"cannot connect to port {port}: {e.strerror or e}"
    try:
        sock.settimeout(timeout)
        first = sock.recv(256)
    except TimeoutError:
        return f"port {port} accepts but sends no SSH banner in {timeout:g} s"
    except OSError as e:
        return f"port {port}: {e.strerror or e}"
    finally:
        sock.close()
    if not first.startswith(b"SSH-"):
        return f"port {port} does not speak SSH (it sent {first[:20]!r})"
    return None


def query(cfg: SshConfig, host: str, address: str, timeout: float = 20) -> DirectorView:
    why = probe(address, cfg.port, cfg.connect_timeout)
    if why is not None:
        return DirectorView(host, address, error=f"unreachable: {why}")
    node = RemoteNode(cfg, host, address)
    try:
        rc, out, err = node.run(SCRIPT, timeout=timeout)
    except RemoteError as e:
        return DirectorView(host, address, error=e.reason)
    finally:
        node.close()
    return parse_report(host, address, out)


def collect(inv: Inventory, cfg: SshConfig, timeout: float = 20) -> list[DirectorView]:
    """Every director, queried in parallel; one view each (an error names why)."""
    seen: dict[str, str] = {}
    for h, _, _ in inv.lvs_hosts():
        seen.setdefault(h.name, str(h.primary_interface.address))
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(seen)))) as ex:
        futs = [ex.submit(query, cfg, n, a, timeout) for n, a in seen.items()]
        return [f.result() for f in futs]


def status(inv: Inventory, views: list[DirectorView],
           overrides: Overrides | None = None) -> dict[str, Any]:
    """The report: per virtual service and director, each real server's state (with
    the pools' ``overrides``: drained, held); per VRRP instance, who holds it."""
    by_host = {v.host: v for v in views}
    services = []
    for vs in inv.virtual_services.values():
        pair = inv.lvs_pairs.get(vs.pair)
        directors = [_director_row(inv, vs, h, by_host.get(h), overrides or {})
                     for h in (pair.directors if pair else ())]
        services.append({"name": vs.name, "vip": str(vs.vip), "port": vs.port,
                         "protocol": vs.protocol, "pair": vs.pair, "directors": directors})
    instances = [row for pair in inv.lvs_pairs.values()
                 for row in _vrrp_rows(inv, pair, by_host)]
    unreachable = [{"host": v.host, "address": v.address, "reason": v.error}
                   for v in views if v.error is not None]
    return {"services": services, "vrrp": instances, "unreachable": unreachable}


def _expected(inv: Inventory, vs: VirtualService, overrides: Overrides
              ) -> list[tuple[str, str, str]]:
    """(host, address, why) of the servers ``vs``'s pool should have, and of those held
    out of it; why is "", "drain" or "hold"."""
    from .members import members

    out = [(m.host, m.address, "drain" if m.drained else "")
           for m in members(inv, vs.role, overrides)]
    out += [(o.host, o.address, "hold") for (h, r), o in sorted(overrides.items())
            if r == vs.role and o.state == "hold"]
    return out


def _state(r: RealServer | None, why: str, table: bool) -> str:
    if why == "hold":
        return "held" if r is None else "held, still in IPVS"
    if r is None:
        return ("draining, not in IPVS" if why == "drain" else "out") if table else "-"
    if r.weight > 0:
        return "draining, weight still up" if why == "drain" else "up"
    return "draining" if why == "drain" else "weight 0"


def _director_row(inv: Inventory, vs: VirtualService, h: str,
                  v: DirectorView | None, overrides: Overrides) -> dict[str, Any]:
    """One director's view of virtual service ``vs``: each real server's state."""
    if v is None or v.error is not None:
        return {"host": h, "error": v.error if v else "not queried"}
    table = next((s for s in v.ipvs if s.vip == str(vs.vip) and s.port == vs.port
                  and s.protocol == vs.protocol), None)
    reals: list[dict[str, Any]] = []
    listed = {(r.address, r.port): r for r in (table.reals if table else [])}
    for name, address, why in _expected(inv, vs, overrides):
        key = (address, vs.real_port)
        r = listed.pop(key, None)
        row: dict[str, Any] = {"host": name, "address": address, "port": key[1],
                               "state": _state(r, why, table is not None), "weight": None,
                               "active": None, "inactive": None}
        if r is not None:
            row.update(weight=r.weight, active=r.active, inactive=r.inactive,
                       forward=r.forward)
        reals.append(row)
    for r in listed.values():  # in IPVS but not in the inventory
        reals.append({"host": None, "address": r.address, "port": r.port,
                      "state": "unknown to the inventory", "weight": r.weight,
                      "active": r.active, "inactive": r.inactive, "forward": r.forward})
    return {"host": h, "in_ipvs": table is not None,
            "scheduler": table.scheduler if table else None, "reals": reals}


def _vrrp_rows(inv: Inventory, pair: LvsPair, by_host: dict[str, DirectorView]
               ) -> list[dict[str, Any]]:
    """The pair's VRRP instances (one per network): its VIPs and who holds them."""
    from ..inventory.load import vrrp_ids

    vips: dict[str, list[str]] = {}
    for vs in inv.services_of_pair(pair.name):
        net = inv.network_of(vs.vip)
        if net is not None and str(vs.vip) not in vips.setdefault(net.name, []):
            vips[net.name].append(str(vs.vip))
    for net_name, gw in pair.gateway_vips.items():
        if str(gw) not in vips.setdefault(net_name, []):
            vips[net_name].append(str(gw))
    rows = []
    for net_name, vrid in vrrp_ids(pair, list(inv.virtual_services.values()),
                                   inv.networks).items():
        holders, unknown = [], []
        for h in pair.directors:
            v = by_host.get(h)
            if v is None or v.error is not None:
                unknown.append(h)
            elif set(vips.get(net_name, [])) <= v.addresses:
                holders.append(h)
        rows.append({"name": f"{pair.name}_{net_name}", "pair": pair.name,
                     "network": net_name, "vrid": vrid, "vips": vips.get(net_name, []),
                     "holders": holders, "unknown": unknown})
    return rows
