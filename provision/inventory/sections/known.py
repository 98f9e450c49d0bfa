"""What the translation has built so far: each section's typed entries, by name."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model import Host, HwType, Image, LvsPair, Network, Role, VirtualService


@dataclass
class Known:
    """The sections translated so far (later sections refer to earlier ones by name)."""

    networks: dict[str, Network] = field(default_factory=dict)
    hwtypes: dict[str, HwType] = field(default_factory=dict)
    images: dict[str, Image] = field(default_factory=dict)
    services: dict[str, tuple[str, ...]] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    pairs: dict[str, LvsPair] = field(default_factory=dict)
    virtual_services: dict[str, VirtualService] = field(default_factory=dict)
