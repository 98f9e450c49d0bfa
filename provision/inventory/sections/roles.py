"""roles: what a class of hosts runs and joins — services, networks, boot, image, bond."""

from __future__ import annotations

from typing import Any

from ..model import BOOT_MODES, LOADERS, Bond, Network, Push, Role
from ..reader import Reader
from .bond import bond
from .known import Known
from .push import push

KEYS = {"services", "networks", "boot", "image", "loader", "hwtype", "bond", "modules",
        "kernel_args", "push"}


def roles(r: Reader, data: dict[str, Any], known: Known) -> dict[str, Role]:
    section = r.mapping(data, "roles", "roles") or {}
    out = {}
    for name, path, m in r.entries(section, "roles", KEYS, ("networks",)):
        role = _role(r, str(name), path, m, known)
        if role is not None:
            out[str(name)] = role
    r.mark_broken("role", section, out)
    return out


def _role(r: Reader, name: str, path: str, m: dict[str, Any], known: Known) -> Role | None:
    svcs = r.names(m, "services", path, known.services, "service")
    nets = r.names(m, "networks", path, known.networks, "network")
    _distinct_vlans(r, m, path, nets, known.networks)
    if m.get("networks") is not None and not nets and not r.seq(m, "networks", path):
        r.err(m, "networks", f"{path}.networks", "a role joins at least one network")
    image = r.string(m, "image", path)
    if image is not None and image not in known.images:
        r.unknown(m, "image", f"{path}.image", "image", image)
    hw = r.string(m, "hwtype", path)
    if hw is not None and hw not in known.hwtypes:
        r.unknown(m, "hwtype", f"{path}.hwtype", "hardware type", hw)
    if r.tainted:
        return None
    return Role(
        name,
        svcs,
        nets,
        r.choice(m, "boot", path, BOOT_MODES, "netboot"),
        image,
        r.choice(m, "loader", path, LOADERS, "ipxe"),
        hw,
        bond(r, m, path, Bond()),
        r.modules(m, "modules", path),
        r.kernel_args(m, path),
        push(r, m, path, Push()),
    )


def _distinct_vlans(r: Reader, m: dict[str, Any], path: str, nets: tuple[str, ...],
                    networks: dict[str, Network]) -> None:
    """A host joins its role's networks over one bond: each needs its own VLAN id
    (networks on other segments, e.g. behind a DHCP relay, may reuse ids)."""
    seen_vlan: dict[int | None, str] = {}
    for i, n in enumerate(nets):
        if n in r.bad_vlan:  # its VLAN id was refused: no claim about it
            continue
        vlan = networks[n].vlan
        if vlan in seen_vlan:
            tag = f"VLAN {vlan}" if vlan else "untagged"
            r.err(m.get("networks"), i, f"{path}.networks[{i}]",
                  f"{n} and {seen_vlan[vlan]} are both {tag}; the networks of a "
                  "role need distinct VLAN ids")
        seen_vlan[vlan] = n
