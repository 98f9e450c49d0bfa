"""What several test files share: inventories, packet builders, servers and clients
run in namespaces, fuzzers. Never a test module: tests import from here, not from
each other."""
