"""Every table of the state store, in one place (the master pair replicates these).

One ``Schema`` per kind of state, named by its component (the key of the version table
``schema_components``, which records the DDL each component last created). The table and
column names are the on-disk format: a ``state.db`` written by an older release opens
as it is, and a column added since is listed in ``columns`` (``ALTER TABLE ... ADD
COLUMN`` on open). Rename nothing without a migration.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION_TABLE = "schema_components"
VERSION_DDL = (f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
               "(component TEXT PRIMARY KEY, ddl TEXT NOT NULL)")


@dataclass(frozen=True)
class Schema:
    """The tables one component owns, and their DDL."""

    component: str
    tables: tuple[str, ...]
    ddl: str  # IF NOT EXISTS throughout: idempotent
    columns: tuple[tuple[str, str, str], ...] = ()  # (table, column, declaration) added since


DHCP = Schema("dhcp", ("dhcp_leases", "dhcp_discovered"), """
CREATE TABLE IF NOT EXISTS dhcp_leases (
    ip       INTEGER PRIMARY KEY,   -- IPv4 address as an integer
    mac      TEXT NOT NULL,         -- '' for a quarantined (declined) address
    network  TEXT NOT NULL,
    state    TEXT NOT NULL,         -- bound | released | declined
    expires  REAL NOT NULL,         -- unix time
    hostname TEXT NOT NULL DEFAULT '',
    updated  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS dhcp_leases_mac ON dhcp_leases(mac);
CREATE TABLE IF NOT EXISTS dhcp_discovered (
    mac          TEXT PRIMARY KEY,
    first_seen   REAL NOT NULL,
    last_seen    REAL NOT NULL,
    arch         INTEGER,             -- RFC 4578 client architecture, NULL if not sent
    vendor_class TEXT NOT NULL DEFAULT '',
    user_class   TEXT NOT NULL DEFAULT '',
    uuid         TEXT NOT NULL DEFAULT '',
    interface    TEXT NOT NULL DEFAULT '',
    network      TEXT NOT NULL DEFAULT '',
    seen         INTEGER NOT NULL DEFAULT 1   -- sightings recorded (rate-limited)
);
CREATE INDEX IF NOT EXISTS dhcp_discovered_evict ON dhcp_discovered(last_seen, mac DESC);
""")

EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS http_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    host TEXT NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT,
    address TEXT,
    image TEXT
);
CREATE INDEX IF NOT EXISTS http_events_host ON http_events(host, id);
CREATE TABLE IF NOT EXISTS http_host_keys (
    host TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key TEXT NOT NULL,
    ts REAL NOT NULL,
    address TEXT,
    boot_id TEXT,
    verified INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (host, key_type)
);
"""
# Columns added since the first release of the table (ALTER TABLE for old state files).
EVENTS_COLUMNS = (("http_host_keys", "boot_id", "TEXT"),
                  ("http_host_keys", "verified", "INTEGER NOT NULL DEFAULT 0"))
HTTP = Schema("http", ("http_events", "http_host_keys"), EVENTS_DDL, EVENTS_COLUMNS)

PUSH = Schema("push", ("push_runs", "push_results"), """
CREATE TABLE IF NOT EXISTS push_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    user TEXT NOT NULL,
    action TEXT NOT NULL,          -- push | retry | rollback
    src TEXT,
    to_path TEXT NOT NULL,
    release TEXT,                  -- the release pushed (or rolled back to, if one)
    manifest TEXT,                 -- '<entries> <sha256>' of the pushed tree
    options TEXT NOT NULL,         -- JSON: delete, excludes, checksum, then, keep
    targets TEXT NOT NULL,         -- JSON list of host names
    ok INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    mcast_bytes INTEGER NOT NULL DEFAULT 0  -- file data multicast once (uftp), 0: none
);
CREATE TABLE IF NOT EXISTS push_results (
    run_id INTEGER NOT NULL REFERENCES push_runs(id),
    host TEXT NOT NULL,
    result TEXT NOT NULL,          -- ok | failed
    release TEXT,                  -- live release after the run
    previous TEXT,                 -- live release before the run
    bytes INTEGER NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, host)
);
CREATE INDEX IF NOT EXISTS push_runs_to ON push_runs(to_path, id);
""", columns=(("push_runs", "mcast_bytes", "INTEGER NOT NULL DEFAULT 0"),))

INVENTORY = Schema("inventory", ("inventory_history",), """
CREATE TABLE IF NOT EXISTS inventory_history (
    rev INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    command TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    content BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS inventory_history_path ON inventory_history(path, rev);
""")

ASSIGN = Schema("assign", ("assign_runs", "assign_steps"), """
CREATE TABLE IF NOT EXISTS assign_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    user TEXT NOT NULL,
    host TEXT NOT NULL,
    old_role TEXT NOT NULL,
    new_role TEXT NOT NULL,
    mode TEXT NOT NULL,            -- live | reboot
    plan TEXT NOT NULL             -- JSON, as `dsas assign --json` prints it
);
CREATE TABLE IF NOT EXISTS assign_steps (
    run_id INTEGER NOT NULL REFERENCES assign_runs(id),
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- done | failed | not-run
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX IF NOT EXISTS assign_runs_host ON assign_runs(host, id);
""")

LB = Schema("lb", ("lb_reads",), """
CREATE TABLE IF NOT EXISTS lb_reads (
    director TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    read_at REAL NOT NULL,
    error TEXT,                    -- why it could not be read; NULL: read
    services TEXT NOT NULL,        -- JSON: [{service, vip, port, protocol, in_ipvs,
                                   --   scheduler, reals: [{host, address, port, state,
                                   --   weight, active, inactive}]}]
    vrrp TEXT NOT NULL             -- JSON: [{instance, pair, network, vrid, vips, held}]
);
""")

MEMBERS = Schema("lb_members", ("lb_members",), """
CREATE TABLE IF NOT EXISTS lb_members (
    host TEXT NOT NULL,
    role TEXT NOT NULL,
    state TEXT NOT NULL,           -- drain | hold | keep | takeover (role: the LVS pair)
    address TEXT NOT NULL,         -- the host's address in that role
    at REAL NOT NULL,
    why TEXT NOT NULL DEFAULT '',  -- e.g. "assign run 7"
    PRIMARY KEY (host, role)
);
""")

ROLLOUT = Schema("rollout", ("rollout_runs", "rollout_hosts", "rollout_pins"), """
CREATE TABLE IF NOT EXISTS rollout_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    user TEXT NOT NULL,
    image TEXT NOT NULL,
    version TEXT NOT NULL,         -- the version the hosts move to
    previous TEXT NOT NULL,        -- the inventory's version when the run started
    back INTEGER NOT NULL DEFAULT 0,  -- a `dsas rollout --back`
    plan TEXT NOT NULL,            -- JSON, as `dsas rollout --json` prints it
    outcome TEXT NOT NULL DEFAULT 'running',  -- running | done | stopped | failed | ...
    owner_pid INTEGER,             -- the `dsas rollout` process driving it (NULL: an
    owner_start INTEGER,           --   older dsas): PID, start time (/proc/PID/stat
    owner_host TEXT                --   field 22, clock ticks after boot), host name
);
CREATE TABLE IF NOT EXISTS rollout_hosts (
    run_id INTEGER NOT NULL REFERENCES rollout_runs(id),
    host TEXT NOT NULL,
    batch INTEGER NOT NULL,
    at REAL NOT NULL,              -- when the outcome below was recorded
    from_version TEXT NOT NULL,
    to_version TEXT NOT NULL,
    outcome TEXT NOT NULL,         -- pending | moving | done | failed | not-run
    detail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, host)
);
CREATE TABLE IF NOT EXISTS rollout_pins (
    host TEXT PRIMARY KEY,         -- boots this version of image, not the inventory's
    image TEXT NOT NULL,
    version TEXT NOT NULL,
    at REAL NOT NULL,
    run_id INTEGER NOT NULL
);
""", columns=(("rollout_runs", "owner_pid", "INTEGER"),
             ("rollout_runs", "owner_start", "INTEGER"),
             ("rollout_runs", "owner_host", "TEXT")))

SCHEMAS = (DHCP, HTTP, PUSH, INVENTORY, ASSIGN, LB, MEMBERS, ROLLOUT)


def tables() -> tuple[str, ...]:
    """Every table the store owns, the version table first."""
    return (VERSION_TABLE, *(t for s in SCHEMAS for t in s.tables))
