"""What the master pair sends each other about leases (issue 18), and how it is applied.

``encode``/``decode`` turn one batch of ``policy.leases`` changes into JSON-able lists
and back (the active sends each batch of its group commit to the peer before the ACKs).
``lease_set``/``merge`` carry the whole ``dhcp_leases`` table: a returning master pulls
the peer's set before it answers anyone, and an active that was alone catches its peer
up with its own set. A merge keeps, per address, the row written last (``updated``, the
writer's clock), so two sides that each gave out their own half during a partition both
keep what they gave; ``digest`` is the sha256 the receiver checks the set against.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..policy.leases import Change, Lease, LeaseDel, LeasePut, Sighting
from .schema import DHCP
from .store import StateStore, insert_rows

_COLUMNS = "ip, mac, network, state, expires, hostname, updated"
_MERGE_HEAD = f"INSERT INTO dhcp_leases({_COLUMNS}) VALUES "
_MERGE_TAIL = """
ON CONFLICT(ip) DO UPDATE SET
    mac = excluded.mac, network = excluded.network, state = excluded.state,
    expires = excluded.expires, hostname = excluded.hostname, updated = excluded.updated
WHERE excluded.updated > dhcp_leases.updated
   OR (excluded.updated = dhcp_leases.updated AND excluded.expires > dhcp_leases.expires)
"""


def encode(changes: list[Change]) -> list[list[Any]]:
    out: list[list[Any]] = []
    for c in changes:
        if isinstance(c, LeasePut):
            lease = c.lease
            out.append(["put", lease.ip, lease.mac, lease.network, lease.state, lease.expires,
                        lease.hostname])
        elif isinstance(c, LeaseDel):
            out.append(["del", c.ip])
        else:
            out.append(["seen", c.mac, c.when, c.arch, c.vendor_class, c.user_class, c.uuid,
                        c.interface, c.network])
    return out


def decode(items: list[list[Any]]) -> list[Change]:
    """The changes of ``encode``; ValueError on anything else (the peer's frame is
    authenticated, but a newer release's message must not be half-applied)."""
    out: list[Change] = []
    try:
        for it in items:
            kind = it[0]
            if kind == "put":
                out.append(LeasePut(Lease(int(it[1]), str(it[2]), str(it[3]), str(it[4]),
                                          float(it[5]), str(it[6]))))
            elif kind == "del":
                out.append(LeaseDel(int(it[1])))
            elif kind == "seen":
                out.append(Sighting(str(it[1]), float(it[2]),
                                    None if it[3] is None else int(it[3]), str(it[4]),
                                    str(it[5]), str(it[6]), str(it[7]), str(it[8])))
            else:
                raise ValueError(f"unknown change {kind!r}")
    except (IndexError, TypeError) as e:
        raise ValueError(f"malformed change: {e}") from None
    return out


def lease_set(store: StateStore) -> list[list[Any]]:
    """Every row of ``dhcp_leases``, by address (one consistent read)."""
    store.ensure(DHCP)
    return [list(r) for r in store.query(f"SELECT {_COLUMNS} FROM dhcp_leases ORDER BY ip")]


def digest(rows: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def merge(store: StateStore, rows: list[list[Any]]) -> int:
    """Merge a peer's lease set into ours in one transaction: per address, the row
    written last wins. Returns the rows taken from the set."""
    store.ensure(DHCP)
    clean = [(int(r[0]), str(r[1]), str(r[2]), str(r[3]), float(r[4]), str(r[5]),
              float(r[6])) for r in rows]
    if not clean:
        return 0
    with store.transaction() as conn:
        before = conn.total_changes
        insert_rows(conn, _MERGE_HEAD, list(clean), _MERGE_TAIL)
        return int(conn.total_changes - before)
