"""Host keys from the nodes' boot reports, for ``dsas trust --from-boot-report``.

A node's ``ready`` event may carry its SSH host public key (``dsas-init`` sends
``/etc/ssh/ssh_host_ed25519_key.pub``); the HTTP service keeps the latest one
per host and key type (``provision.state.events.reported_keys`` reads them).
Trusting it is the operator's decision: the fingerprint is shown, and a key
that differs from the one already trusted is refused unless the operator says
the node was reinstalled (``--replace``). Pushes still refuse any host whose
key is unknown or changed.

A reported key is never trusted when it came from an address that is not the
host's own (inventory) address, or without the valid per-boot token that the
master put in that boot's dsas.conf (``policy.boottoken``): ``untrustworthy``
says why. Rows written before the HTTP service checked either are refused too.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..inventory.model import Inventory
from ..policy.httpfiles import host_addresses
from ..state import StateStore, events
from ..state.events import ReportedKey
from .sshconf import SshConfig, add_known_host, fingerprint


def untrustworthy(report: ReportedKey, inv: Inventory) -> str | None:
    """Why a reported key must not be trusted, or None."""
    own = host_addresses(report.host, inv)
    if not report.address or report.address not in own:
        return (f"reported from {report.address or 'an unknown address'}, not from "
                f"{report.host}'s own address ({', '.join(sorted(own)) or 'none'})")
    if not report.verified:
        return "reported without a valid boot token (not from a dsas.conf this master served)"
    return None


def trusted_keys(cfg: SshConfig, address: str) -> list[tuple[str, str]]:
    """(type, base64) lines of dsas's known_hosts for ``address``."""
    if not cfg.known_hosts.exists():
        return []
    pattern = cfg.host_pattern(address)
    out = []
    for line in cfg.known_hosts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and pattern in fields[0].split(","):
            out.append((fields[1], fields[2]))
    return out


def trust_new_boot_key(cfg: SshConfig, store: StateStore, inv: Inventory, host: str,
                       address: str, since: float) -> str:
    """A netboot host rebooted (by `dsas rollout` or `dsas assign`) made new SSH host
    keys: trust the key(s) it reported since ``since`` (its ready report of the new
    boot) for ``address`` in place of all its trusted ones, if every one is the host's
    own report (``untrustworthy``), as `dsas trust --from-boot-report --replace`
    would. What was done, in words; nothing changes otherwise."""
    rows = [r for r in events.reported_keys(store, host) if r.ts >= since]
    if not rows:
        return f"no host key in its ready report: `dsas trust {host}` before the next SSH to it"
    bad = [w for r in rows if (w := untrustworthy(r, inv)) is not None]
    if bad:
        return f"its reported host key is NOT trusted ({bad[0]}): `dsas trust {host}` scans it"
    # every key of the old boot goes (of every type: a scan may have trusted its RSA
    # and ECDSA keys too, and the new boot made new ones of those as well)
    new = [(r.key_type, r.key) for r in rows]
    keys = ", ".join(f"{r.key_type} {fingerprint(r.key)}" for r in rows)
    if sorted(trusted_keys(cfg, address)) == sorted(new):
        return f"host key already trusted ({keys})"
    add_known_host(cfg, address, new)
    return (f"host key of its new boot trusted from its ready report ({keys}; the old "
            "boot's keys no longer)")


@dataclass
class TrustPlan:
    """What trusting a host's reported keys changes in known_hosts."""

    keys: list[tuple[str, str]]  # what known_hosts should hold for the host afterwards
    new: list[tuple[str, str]]  # reported keys not trusted yet
    changed: list[tuple[str, str, str]]  # (type, reported, trusted) that differ
    same: list[tuple[str, str]]  # reported keys trusted already
    dropped: list[tuple[str, str]]  # trusted keys of types the node no longer reported


def plan_trust(reported: list[tuple[str, str]], trusted: list[tuple[str, str]]) -> TrustPlan:
    """Merge the reported keys into the trusted ones, type by type.

    When a reported key differs from the trusted one of its type the node was
    reinstalled (that is what ``--replace`` says): every key of its old install goes,
    of every type, not only the changed one. A scan may have trusted its RSA and
    ECDSA keys too; the reinstall made new ones of those as well, and the old ones,
    kept, would still let whoever holds them pass as the node (``dropped``). Without a
    changed key, keys of types the node did not report stay trusted."""
    by_type = dict(trusted)
    plan = TrustPlan(list(trusted), [], [], [], [])
    for ktype, blob in reported:
        old = by_type.get(ktype)
        if old is None:
            if (ktype, blob) not in plan.new:
                plan.new.append((ktype, blob))
        elif old == blob:
            plan.same.append((ktype, blob))
        else:
            plan.changed.append((ktype, blob, old))
    if plan.changed:
        reported_types = {t for t, _ in reported}
        plan.dropped = [(t, b) for t, b in trusted if t not in reported_types]
        plan.keys = list(dict.fromkeys(reported))
    else:
        plan.keys = list(trusted) + plan.new
    return plan
