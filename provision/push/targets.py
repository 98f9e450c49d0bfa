"""Which hosts a push goes to: an explicit choice from the inventory, never all by accident."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DsasError
from ..inventory.model import Inventory


class TargetError(DsasError):
    """The operator asked for targets that do not make sense (a usage error, exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Target:
    """A host a push goes to."""

    name: str
    address: str  # the host's primary interface address
    role: str
    agent: bool = False  # its boot uftpd runs dsas-push's orders (push: {agent: true})
    push_root: str = "/srv"  # where that uftpd receives (push: {root: ...})


def select_targets(
    inv: Inventory,
    roles: Sequence[str] = (),
    hosts: Sequence[str] = (),
    all_hosts: bool = False,
) -> list[Target]:
    """Hosts named by --role/--host/--all, in inventory order, each once.

    There is no default: with none of the three, this is a usage error, so a
    forgotten flag never pushes to the whole farm.
    """
    if not (roles or hosts or all_hosts):
        raise TargetError("no targets: give --all, --role ROLE or --host HOST")
    if all_hosts and (roles or hosts):
        raise TargetError("--all cannot be combined with --role or --host")
    unknown_roles = [r for r in roles if r not in inv.roles]
    if unknown_roles:
        raise TargetError(f"unknown role(s): {', '.join(unknown_roles)} "
                          f"(roles: {', '.join(inv.roles)})")
    unknown_hosts = [h for h in hosts if h not in inv.hosts]
    if unknown_hosts:
        raise TargetError(f"unknown host(s): {', '.join(unknown_hosts)}")
    wanted = set(hosts)
    out = []
    for host in inv.hosts.values():
        if all_hosts or host.name in wanted or host.role.name in roles:
            out.append(Target(host.name, str(host.primary_interface.address), host.role.name,
                              host.push.agent, host.push.root))
    if not out:
        raise TargetError(f"role(s) {', '.join(roles)} have no hosts")
    return out
