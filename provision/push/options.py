"""dsas-push's options and the outcome of a run (``push.py`` runs them).

Split from ``push.py`` so that the uftp round and the CLI can name them without
the Pusher.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..state.pushes import HostResult
from . import fanout, multicast

DEFAULT_TO = "/srv/site"
DEFAULT_KEEP = 5


def default_parallel() -> int:
    """Pushing waits on the network and the nodes more than on the master's CPU:
    several streams per core, bounded so a small master is not swamped."""
    return max(4, min(32, 8 * (os.cpu_count() or 1)))


@dataclass
class PushOptions:
    """How one push runs (the dsas-push options)."""

    src: str
    to: str = DEFAULT_TO
    delete: bool = False
    excludes: list[str] = field(default_factory=list)
    checksum: bool = False
    then: str | None = None
    keep: int = DEFAULT_KEEP
    dry_run: bool = False
    parallel: int = 0  # 0: default_parallel()
    # rsync's transport: "paramiko" (over the remote steps' connection, one handshake
    # per node; its bytes pass through this process), "ssh" (OpenSSH, a second
    # connection, C-speed crypto), or "auto": OpenSSH for a node that has no release
    # yet (everything moves: throughput matters), paramiko for an update.
    transport: str = "auto"
    prelink: bool = True  # cp -al the base release when safe (prelink.py), else --link-dest
    # What carries the bulk of the bytes: "rsync" (per node), "uftp" (one multicast
    # session to all nodes, then rsync completes each: multicast.py), or "auto": uftp
    # from ``uftp_min_nodes`` targets up when this master has uftp; "fanout": the
    # master rsyncs to ``fanout_width`` nodes, nodes holding the release rsync it to
    # the next ones (fanout.py), rsync from the master completes any that missed it.
    transfer: str = "rsync"
    uftp_min_nodes: int = multicast.DEFAULT_MIN_NODES
    mcast: multicast.McastConfig = field(default_factory=multicast.McastConfig)
    fanout_width: int = fanout.DEFAULT_WIDTH

    def recorded(self) -> dict[str, object]:
        return {"delete": self.delete, "excludes": self.excludes, "checksum": self.checksum,
                "then": self.then, "keep": self.keep}


@dataclass
class RunOutcome:
    """A push, rollback or retry run: its id, release and per-host results."""

    run_id: int | None
    release: str | None
    results: list[HostResult]

    @property
    def failed(self) -> list[HostResult]:
        return [r for r in self.results if not r.ok]
