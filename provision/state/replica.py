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

import base64
import hashlib
import json
from typing import Any

from ..policy.leases import Change, Lease, LeaseDel, LeasePut, Sighting
from .schema import DHCP, HTTP, INVENTORY, PUSH
from .store import StateStore, insert_rows

# The other state the active copies to the standby whole, in this order (a table that
# others reference comes first): node events and reported host keys, push history,
# inventory history. (Discovered machines travel with the lease batches.)
OTHER = (*HTTP.tables, *PUSH.tables, *INVENTORY.tables)

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


def other_tables(store: StateStore) -> dict[str, dict[str, Any]]:
    """``OTHER``'s rows (one consistent read, ``StateStore.dump``) as columns + rows."""
    store.ensure_all()
    dump = store.dump()
    out: dict[str, dict[str, Any]] = {}
    for t in OTHER:
        rows = dump.get(t, [])
        cols = list(rows[0]) if rows else []
        out[t] = {"columns": cols, "rows": [[_out(r[c]) for c in cols] for r in rows]}
    return out


def other_fingerprint(store: StateStore) -> list[Any]:
    """Changes whenever a row of ``OTHER`` is written or removed (cheap: counts and
    the largest rowid and a sum over each table's rowids)."""
    store.ensure_all()
    return [list(store.query(f"SELECT COUNT(*), MAX(rowid), TOTAL(rowid) FROM {t}")[0])
            for t in OTHER]


def replace_other(store: StateStore, tables: dict[str, dict[str, Any]]) -> int:
    """Make ``OTHER`` exactly the peer's (one transaction); returns the rows written."""
    store.ensure_all()
    n = 0
    with store.transaction() as conn:
        for t in reversed(OTHER):  # the referencing tables first
            if t in tables:
                conn.execute(f"DELETE FROM {t}")
        for t in OTHER:
            doc = tables.get(t)
            if not doc or not doc["rows"]:
                continue
            cols = [str(c) for c in doc["columns"]]
            if not all(c.isidentifier() for c in cols):
                raise ValueError(f"{t}: bad column names")
            insert_rows(conn, f"INSERT INTO {t}({', '.join(cols)}) VALUES ",
                        [tuple(_in(v) for v in r) for r in doc["rows"]], "")
            n += len(doc["rows"])
    return n


def _out(v: Any) -> Any:
    """A column value for JSON (a BLOB, such as an inventory version, as base64)."""
    return {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v


def _in(v: Any) -> Any:
    return base64.b64decode(v["b64"]) if isinstance(v, dict) else v
