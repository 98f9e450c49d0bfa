"""What moving a host to another role changes: pure, (old inventory, new inventory, host).

The plan is what `dsas assign` shows before it asks: the host's dsas.conf before and
after, which services stop and which start, which balancer pools (virtual services
served by a role) lose or gain the host, and whether the move needs a reboot (another
image, hardware type, disk layout, boot mode, loader or kernel command line) or can be
re-applied live by dsas-init.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..inventory.model import Host, Inventory
from ..render import render_host

LIVE_STEPS = (
    ("drain", "weight 0 for the host on both directors, wait for its connections to reach 0"),
    ("deliver", "copy the new dsas.conf to the host over SSH (host key verified)"),
    ("reapply", "dsas-init re-applies dsas.conf: stop the old role's services, change "
                "addresses, start the new role's services, report ready"),
    ("rebalance", "reload the pools on both directors; weight up once the health check passes"),
)
HANDOVER = ("handover", "the host leaves its LVS pair: another director must run the pair's "
                        "virtual services; keepalived stops on the host and another "
                        "director must hold every VIP before the move goes on")
REBOOT_STEPS = (
    LIVE_STEPS[0], LIVE_STEPS[1],
    ("reboot", "reboot the host; it netboots into the new role and reports ready"),
    LIVE_STEPS[3],
)


@dataclass(frozen=True)
class Pool:
    """A balancer pool (virtual service) a role move changes."""

    virtual_service: str
    vip: str
    port: int
    role: str
    pair: str


@dataclass
class Plan:
    """What moving a host to another role changes, as `dsas assign` shows it."""

    host: str
    old_role: str
    new_role: str
    dsas_conf_diff: str
    services_stop: list[str]
    services_start: list[str]
    services_keep: list[str]
    units_stop: list[str]
    units_start: list[str]
    pools_leave: list[Pool]
    pools_join: list[Pool]
    addresses_before: dict[str, str]
    addresses_after: dict[str, str]
    reboot_reasons: list[str]
    director: str | None  # the LVS pair this host is a director of, if any
    steps: list[dict[str, str]] = field(default_factory=list)

    @property
    def reboot(self) -> bool:
        return bool(self.reboot_reasons)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["reboot"] = self.reboot
        d["mode"] = "reboot" if self.reboot else "live"
        return d


def _pools(inv: Inventory, role: str) -> list[Pool]:
    return [Pool(vs.name, str(vs.vip), vs.port, vs.role, vs.pair)
            for vs in inv.virtual_services.values() if vs.role == role]


def _units(inv: Inventory, services: list[str]) -> list[str]:
    return [u for s in services for u in inv.service_units.get(s, ())]


def reboot_reasons(old: Host, new: Host) -> list[str]:
    why = []
    if old.image != new.image:
        why.append(f"image {old.image or '-'} -> {new.image or '-'}")
    if old.hwtype.name != new.hwtype.name:
        why.append(f"hardware type {old.hwtype.name} -> {new.hwtype.name}")
    elif old.hwtype.partitions != new.hwtype.partitions or old.hwtype.disk != new.hwtype.disk:
        why.append("disk layout")
    if old.boot != new.boot:
        why.append(f"boot mode {old.boot} -> {new.boot}")
    if old.loader != new.loader and new.boot == "netboot":
        why.append(f"loader {old.loader} -> {new.loader}")
    if old.kernel_args != new.kernel_args:
        why.append("kernel command line")
    return why


def plan(old_inv: Inventory, new_inv: Inventory, name: str) -> Plan:
    old, new = old_inv.hosts[name], new_inv.hosts[name]
    before = render_host(old_inv, old, "dsas.conf")
    after = render_host(new_inv, new, "dsas.conf")
    diff = "".join(difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True),
        fromfile=f"{name}/dsas.conf ({old.role.name})",
        tofile=f"{name}/dsas.conf ({new.role.name})"))
    stop = [s for s in old.services if s not in new.services]
    start = [s for s in new.services if s not in old.services]
    keep = [s for s in old.services if s in new.services]
    leave: list[Pool] = []
    join: list[Pool] = []
    if old.role.name != new.role.name:
        leave = _pools(old_inv, old.role.name)
        join = _pools(new_inv, new.role.name)
    director = next((p.name for h, p, _ in old_inv.lvs_hosts() if h.name == name), None)
    reasons = reboot_reasons(old, new)
    steps = list(REBOOT_STEPS if reasons else LIVE_STEPS)
    if director and not any(h.name == name and p.name == director
                            for h, p, _ in new_inv.lvs_hosts()):
        steps.insert(1, HANDOVER)
    return Plan(
        host=name, old_role=old.role.name, new_role=new.role.name, dsas_conf_diff=diff,
        services_stop=stop, services_start=start, services_keep=keep,
        units_stop=_units(old_inv, stop), units_start=_units(new_inv, start),
        pools_leave=leave, pools_join=join,
        addresses_before={k: str(v) for k, v in old.addresses.items()},
        addresses_after={k: str(v) for k, v in new.addresses.items()},
        reboot_reasons=reasons, director=director,
        steps=[{"step": s, "does": d} for s, d in steps],
    )


def _pool_line(p: Pool) -> str:
    return f"{p.virtual_service} ({p.vip}:{p.port}, pair {p.pair})"


def describe(p: Plan) -> str:
    """The plan as an operator reads it."""
    out = [f"plan: {p.host}: role {p.old_role} -> {p.new_role}"]
    if p.addresses_before != p.addresses_after:
        b = ", ".join(f"{k}={v}" for k, v in p.addresses_before.items()) or "-"
        a = ", ".join(f"{k}={v}" for k, v in p.addresses_after.items()) or "-"
        out.append(f"  addresses: {b} -> {a}")
    out.append("  services stop:  " + (", ".join(
        f"{s}" for s in p.services_stop) or "none")
        + (f"  (units {', '.join(p.units_stop)})" if p.units_stop else ""))
    out.append("  services start: " + (", ".join(p.services_start) or "none")
               + (f"  (units {', '.join(p.units_start)})" if p.units_start else ""))
    if p.services_keep:
        out.append("  services kept:  " + ", ".join(p.services_keep))
    out.append("  pools leave:    " + ("; ".join(map(_pool_line, p.pools_leave)) or "none"))
    out.append("  pools join:     " + ("; ".join(map(_pool_line, p.pools_join)) or "none"))
    if p.director:
        out.append(f"  director: {p.host} is a director of LVS pair {p.director}")
    if p.reboot:
        out.append("  reboot: yes (" + "; ".join(p.reboot_reasons) + ")")
    else:
        out.append("  reboot: no (live: same image, hardware type, disk layout and boot mode)")
    out.append("  dsas.conf:")
    out += ["    " + ln for ln in (p.dsas_conf_diff or "(unchanged)\n").splitlines()]
    return "\n".join(out)
