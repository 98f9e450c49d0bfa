"""The per-section translators: the loose tree -> the typed ``Inventory``.

One module per top-level section of the inventory, translated in the order in
which they refer to one another (networks, hardware types, images and services
first; then roles, hosts, the cluster, LVS pairs and virtual services); then the
checks across sections. Each reports through the ``Reader`` it is given, so every
problem of the file is found in one pass.
"""

from __future__ import annotations

from typing import Any

from ..errors import Problem
from ..model import Inventory
from ..reader import Reader
from .checks import cross_checks, netboot6_refused
from .cluster import cluster
from .hosts import hosts
from .hwtypes import hwtypes
from .images import images, services
from .known import Known
from .lvs import lvs_checks, lvs_pairs, vrrp_ids
from .networks import networks
from .roles import roles
from .virtual_services import virtual_services

__all__ = ["build", "vrrp_ids"]

TOP = {"cluster", "networks", "hwtypes", "images", "services", "roles", "hosts",
       "virtual_services", "lvs_pairs"}
REQUIRED = ("cluster", "networks", "roles", "hosts")


def build(r: Reader, data: Any) -> Inventory | None:
    """The inventory in ``data`` (the parsed YAML), or None with ``r.problems`` saying why."""
    if not isinstance(data, dict):
        r.problems.append(Problem(r.file, 1, "", "the inventory must be a YAML mapping"))
        return None
    r.data = data
    r.mapping({"": data}, "", "", TOP, REQUIRED)
    k = Known(networks(r, data), hwtypes(r, data), images(r, data), services(r, data))
    k.roles = roles(r, data, k)
    k.hosts = hosts(r, data, k)
    c = cluster(r, data, k.networks, k.hosts)
    k.pairs = lvs_pairs(r, data, k.hosts, k.networks)
    k.virtual_services = virtual_services(r, data, k)
    cross_checks(r, k)
    lvs_checks(r, k)
    if c is None or netboot6_refused(r, data, c, k.hosts):
        return None
    return Inventory(r.file, c, k.networks, k.hwtypes, k.images, k.roles, k.hosts,
                     k.virtual_services, k.pairs, k.services)
