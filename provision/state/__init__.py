"""Stored state: one sqlite file, and the only code that reads or writes its tables.

``store`` holds the connection and the transactions, ``schema`` every table. One
module per kind of state, each with a small typed API:

    leases      DHCP leases (the journal the DHCP service commits before its ACKs)
    discovered  machines DHCP saw with discovery on
    events      node boot events and the SSH host keys the nodes reported
    pushes      push, retry and rollback runs and each host's result
    inventory   inventory history (every version an edit replaced or wrote)
    balancer    what `dsas lb status` last read from each director
    assign      the assign journal (runs and their steps)
    rollout     rollouts (runs, each host's version and outcome) and the version pins

No SQL and no ``sqlite3`` outside this package (tests/…/test_state_owner.py checks).
"""

from .store import FILENAME, StateError, StateStore

__all__ = ["FILENAME", "StateError", "StateStore"]
