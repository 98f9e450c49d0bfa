"""The DHCP committer's group commit, pure (a journal that records its commits, a
clock and a sleep the test drives; no sockets, no real time): a busy server's
ACKs share a commit, the first ACK after a quiet spell does not wait, every ACK is
sent only after the commit that holds its lease, and lazy changes ride along."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from provision.observability.metrics import Metrics
from provision.policy.leases import Change, Lease, LeasePut
from provision.services.dhcp_batch import COMMIT_GAP, Committer


class Journal:
    """Records each commit; the first one blocks until the test lets it go."""

    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log
        self.in_first = threading.Event()
        self.release_first = threading.Event()

    def load(self) -> Iterator[Lease]:
        return iter(())

    def commit(self, changes: list[Change], now: float) -> None:
        self.log.append(("commit", [c.lease.ip for c in changes if isinstance(c, LeasePut)]))
        if len(self.log) == 1:
            self.in_first.set()
            assert self.release_first.wait(10)


def _put(ip: int) -> list[Change]:
    return [LeasePut(Lease(ip, f"02:00:00:00:00:{ip:02x}", "lan", "bound", 1e9))]


def test_acks_that_come_within_the_gap_share_one_commit_and_wait_for_it() -> None:
    log: list[tuple[str, Any]] = []
    journal = Journal(log)
    clock = [100.0]  # the committer's monotonic clock: moves only when the test says
    sleeps: list[float] = []
    committer: Committer

    def sleep(seconds: float) -> None:  # the loop decides more meanwhile
        sleeps.append(seconds)
        committer.submit(_put(3), True, [("ack", 3)])  # type: ignore[list-item]
        committer.submit(_put(4), False, [])  # a lazy change rides along

    second = threading.Event()

    def send(replies: Any, *rest: Any) -> None:
        log.append(("sent", replies[1]))
        if replies[1] == 2:
            second.set()

    committer = Committer(journal, lambda *out: send(out), Metrics(), lambda: 1e6,
                          lambda: 0, monotonic=lambda: clock[0], sleep=sleep)
    committer.start()
    committer.submit(_put(1), True, [("ack", 1)])  # type: ignore[list-item]
    assert journal.in_first.wait(10)  # idle before: the first ACK did not wait
    assert sleeps == []
    clock[0] += COMMIT_GAP / 2  # the next ACK comes while the first commit is young
    committer.submit(_put(2), True, [("ack", 2)])  # type: ignore[list-item]
    journal.release_first.set()
    assert second.wait(10)  # ACK 2 is out: its commit is done (finish() must not race it)
    committer.finish()
    assert not committer.is_alive()
    assert sleeps == [pytest.approx(COMMIT_GAP / 2)]  # it waited out the rest of the gap
    assert log == [("commit", [1]), ("sent", 1),
                   ("commit", [2, 3, 4]), ("sent", 2), ("sent", 3)]


def test_an_ack_after_the_gap_is_committed_at_once() -> None:
    log: list[tuple[str, Any]] = []
    journal = Journal(log)
    journal.release_first.set()
    clock = [100.0]
    sleeps: list[float] = []
    committer = Committer(journal, lambda *out: log.append(("sent", out[1])), Metrics(),
                          lambda: 1e6, lambda: 0, monotonic=lambda: clock[0],
                          sleep=sleeps.append)
    committer.start()
    committer.submit(_put(1), True, [("ack", 1)])  # type: ignore[list-item]
    assert journal.in_first.wait(10)
    clock[0] += 2 * COMMIT_GAP  # a quiet spell
    committer.submit(_put(2), True, [("ack", 2)])  # type: ignore[list-item]
    for _ in range(1000):  # bounded: 10 s
        if ("sent", 2) in log:
            break
        threading.Event().wait(0.01)
    committer.finish()
    assert sleeps == []
    assert log == [("commit", [1]), ("sent", 1), ("commit", [2]), ("sent", 2)]
