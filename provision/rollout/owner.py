"""Who drives a rollout run, and whether it still does (issue 23).

A ``running`` run is either driven now by a `dsas rollout` process (LIVE) or was left
so by one that was killed (KILLED). Two things tell them apart:

- the lock: the `dsas rollout` that changes anything holds ``flock(LOCK_EX)`` on
  ``<state-dir>/rollout.lock`` for its whole run (the kernel drops it when the process
  dies, however it dies). It is the authority: held, the run is live and another
  `--resume`, `--abandon` or rollout is refused; free, a ``running`` run's owner is
  dead.
- the owner each run records (``state.rollout.Owner``: PID, the process's start time
  from ``/proc/PID/stat`` so that a recycled PID is not taken for it, and the host):
  what the messages name, and what `dsas status` (which takes no lock) goes by.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ..state.rollout import Owner, RolloutRun

LOCK = "rollout.lock"
PROC = Path("/proc")

LIVE, KILLED, ELSEWHERE, UNKNOWN = "live", "killed", "elsewhere", "unknown"


def stat_start(stat: str) -> int:
    """Field 22 of a ``/proc/PID/stat`` line: the process's start time, in clock ticks
    after boot (proc(5)). The fields are counted after the command name's last ``)``:
    the name may hold spaces and parentheses."""
    return int(stat[stat.rindex(")") + 2:].split()[22 - 3])


def start_of(pid: int, proc: Path = PROC) -> int | None:
    """The start time of process ``pid`` now, or None when there is no such process."""
    try:
        return stat_start((proc / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def me() -> Owner:
    """This process, as a run records its owner."""
    pid = os.getpid()
    start = start_of(pid)
    assert start is not None, "/proc/self/stat unreadable"
    return Owner(pid, start, socket.gethostname())


def liveness(owner: Owner | None, host: str, start: int | None) -> str:
    """What the recorded ``owner`` of a running run is, seen from ``host`` where its
    PID has started at ``start`` (None: no such PID): LIVE (same host, the PID there,
    the same start time), KILLED (gone, or the PID is another process's now),
    ELSEWHERE (another host: cannot tell from here) or UNKNOWN (no owner recorded: a
    run of an older dsas)."""
    if owner is None:
        return UNKNOWN
    if owner.host != host:
        return ELSEWHERE
    return LIVE if start is not None and start == owner.start else KILLED


def live(run: RolloutRun) -> bool | None:
    """Whether a process drives ``run`` now, from /proc (no lock taken): only a
    ``running`` run can be; None when that cannot be told from here."""
    if run.outcome != "running":
        return False
    o = run.owner
    seen = liveness(o, socket.gethostname(), start_of(o.pid) if o is not None else None)
    return {LIVE: True, KILLED: False}.get(seen)


class RunLock:
    """``flock(LOCK_EX | LOCK_NB)`` on ``<state-dir>/rollout.lock``, held until
    ``close()`` (or the process's end). The file says who holds it, for messages."""

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / LOCK
        self._fd: int | None = None

    def take(self) -> bool:
        """True: held now, by us. False: another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        o = me()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{o.pid} {o.start} {o.host}\n".encode(), 0)
        self._fd = fd
        return True

    def holder(self) -> Owner | None:
        """Who wrote the lock file last (the holder, while it is held)."""
        try:
            pid, start, host = self.path.read_text().split()
            return Owner(int(pid), int(start), host)
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None
