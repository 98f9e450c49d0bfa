"""The cluster inventory: the desired state, one human-edited YAML file."""

from .errors import InventoryError, Problem
from .load import DEFAULT_PATH, ENV_VAR, load, loads, resolve_path
from .model import Host, Inventory, Network, Role, VirtualService, normalize_mac

__all__ = [
    "DEFAULT_PATH",
    "ENV_VAR",
    "Host",
    "Inventory",
    "InventoryError",
    "Network",
    "Problem",
    "Role",
    "VirtualService",
    "load",
    "loads",
    "normalize_mac",
    "resolve_path",
]
