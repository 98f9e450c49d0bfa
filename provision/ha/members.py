"""The two masters of the pair as the inventory names them (issue 18): which one this
is (``resolve``), whether an address is local here, and the pair key both share."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from ..inventory.model import Inventory, MasterPair
from . import wire


class PairError(Exception):
    """The master pair cannot run as configured (one line for the operator)."""


@dataclass(frozen=True)
class Me:
    """This master and its peer, from the inventory."""

    side: str  # "primary" | "secondary"
    name: str
    address: IPv4Address
    peer_side: str
    peer_name: str
    peer_address: IPv4Address
    vip: IPv4Address
    network: IPv4Network  # the network of the VIP (both masters are on it)
    pair: MasterPair


def resolve(inv: Inventory, name: str | None = None) -> Me:
    """Which master this is: ``name``, else the master whose address is local here."""
    pair = inv.cluster.pair
    if pair is None or inv.cluster.secondary_master is None:
        raise PairError("the inventory has no master pair (cluster.masters.pair)")
    vip = inv.cluster.master_address
    sides = {"primary": inv.cluster.primary_master, "secondary": inv.cluster.secondary_master}
    net = next(n for n in inv.networks.values() if vip in n.cidr)

    def addr(host: str) -> IPv4Address:
        return inv.hosts[host].addresses[net.name]

    if name is None:
        local = [s for s, h in sides.items() if is_local(addr(h))]
        if len(local) != 1:
            raise PairError("neither master's address is local here: name this master "
                            f"(--master {sides['primary']} or {sides['secondary']})"
                            if not local else "both masters' addresses are local here: "
                            "name this master with --master")
        side = local[0]
    else:
        matches = [s for s, h in sides.items() if h == name]
        if not matches:
            raise PairError(f"{name!r} is not a master of the pair "
                            f"({sides['primary']}, {sides['secondary']})")
        side = matches[0]
    peer = "secondary" if side == "primary" else "primary"
    return Me(side, sides[side], addr(sides[side]), peer, sides[peer], addr(sides[peer]), vip,
              net.cidr, pair)


def is_local(address: IPv4Address) -> bool:
    """Is ``address`` one of this network namespace's addresses (bind() says)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((str(address), 0))
        except OSError:
            return False
    return True


def key_path(state_dir: Path, pair: MasterPair) -> Path:
    p = Path(pair.key_file)
    return p if p.is_absolute() else state_dir / p


def read_key(state_dir: Path, pair: MasterPair) -> bytes:
    path = key_path(state_dir, pair)
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as e:
        raise PairError(f"no pair key {path} ({e.strerror}): make it with `dsas master key` "
                        "on one master and copy it to the other (mode 0600)") from None
    if st.st_mode & 0o077:
        raise PairError(f"the pair key {path} is readable by others: chmod 600 it")
    try:
        return wire.parse_key(data)
    except ValueError as e:
        raise PairError(f"{path}: {e}") from None


def make_key(state_dir: Path, pair: MasterPair) -> tuple[Path, bool]:
    """Write a new pair key (0600) unless one exists; (path, made)."""
    path = key_path(state_dir, pair)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "wb") as f:
        f.write(wire.new_key())
        f.flush()
        os.fsync(f.fileno())
    return path, True

