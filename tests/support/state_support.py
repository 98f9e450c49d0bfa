"""The state store's tables as they were before provision/state/ owned them (old-db tests)."""

# The tables as the release before provision/state/ wrote them (issue 15 moved the DDL,
# not the format), with the host-key table of the first release (no boot_id, verified).
OLD = """
CREATE TABLE schema_components (component TEXT PRIMARY KEY, ddl TEXT NOT NULL);
CREATE TABLE dhcp_leases (ip INTEGER PRIMARY KEY, mac TEXT NOT NULL, network TEXT NOT NULL,
    state TEXT NOT NULL, expires REAL NOT NULL, hostname TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL);
CREATE TABLE dhcp_discovered (mac TEXT PRIMARY KEY, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, arch INTEGER, vendor_class TEXT NOT NULL DEFAULT '',
    user_class TEXT NOT NULL DEFAULT '', uuid TEXT NOT NULL DEFAULT '',
    interface TEXT NOT NULL DEFAULT '', network TEXT NOT NULL DEFAULT '',
    seen INTEGER NOT NULL DEFAULT 1);
CREATE TABLE http_events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL,
    host TEXT NOT NULL, stage TEXT NOT NULL, reason TEXT, address TEXT, image TEXT);
CREATE TABLE http_host_keys (host TEXT NOT NULL, key_type TEXT NOT NULL, key TEXT NOT NULL,
    ts REAL NOT NULL, address TEXT, PRIMARY KEY (host, key_type));
CREATE TABLE push_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL,
    finished REAL, user TEXT NOT NULL, action TEXT NOT NULL, src TEXT, to_path TEXT NOT NULL,
    release TEXT, manifest TEXT, options TEXT NOT NULL, targets TEXT NOT NULL,
    ok INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0);
CREATE TABLE push_results (run_id INTEGER NOT NULL REFERENCES push_runs(id),
    host TEXT NOT NULL, result TEXT NOT NULL, release TEXT, previous TEXT,
    bytes INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, host));
CREATE TABLE inventory_history (rev INTEGER PRIMARY KEY AUTOINCREMENT, path TEXT NOT NULL,
    at REAL NOT NULL, user TEXT NOT NULL, command TEXT NOT NULL, sha256 TEXT NOT NULL,
    content BLOB NOT NULL);
CREATE TABLE assign_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,
    user TEXT NOT NULL, host TEXT NOT NULL, old_role TEXT NOT NULL, new_role TEXT NOT NULL,
    mode TEXT NOT NULL, plan TEXT NOT NULL);
CREATE TABLE assign_steps (run_id INTEGER NOT NULL REFERENCES assign_runs(id),
    seq INTEGER NOT NULL, at REAL NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '', PRIMARY KEY (run_id, seq));
CREATE TABLE lb_reads (director TEXT PRIMARY KEY, address TEXT NOT NULL, read_at REAL NOT NULL,
    error TEXT, services TEXT NOT NULL, vrrp TEXT NOT NULL);
INSERT INTO dhcp_leases VALUES (3323068432, '52:54:00:00:00:01', 'lan', 'bound', 9e9, 'w1', 1);
INSERT INTO dhcp_discovered(mac, first_seen, last_seen, network)
    VALUES ('52:54:00:00:00:01', 1, 2, 'lan');
INSERT INTO http_events(ts, host, stage, address) VALUES (10, 'w1', 'ready', '198.18.0.16');
INSERT INTO http_host_keys VALUES ('w1', 'ssh-ed25519', 'AAAA', 10, '198.18.0.16');
INSERT INTO push_runs(started, finished, user, action, to_path, release, options, targets, ok)
    VALUES (20, 21, 'op', 'push', '/srv/www', 'r1', '{}', '["w1"]', 1);
INSERT INTO push_results(run_id, host, result, release) VALUES (1, 'w1', 'ok', 'r1');
INSERT INTO inventory_history(path, at, user, command, sha256, content)
    VALUES ('/etc/dsas/inventory.yaml', 30, 'op', 'dsas host add', 'ab', x'6869');
INSERT INTO assign_runs(at, user, host, old_role, new_role, mode, plan)
    VALUES (40, 'op', 'w1', 'web', 'db', 'reboot', '{}');
INSERT INTO assign_steps VALUES (1, 1, 41, 'inventory', 'done', '');
INSERT INTO lb_reads VALUES ('lb1', '198.18.0.2', 50, NULL, '[]', '[]');
"""
