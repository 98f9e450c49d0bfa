"""The DHCP service's batches: what one wake-up of the loop decided, and the
committer thread that makes lease changes durable before the ACKs that wait for
them leave (group commit; ``provision.services.dhcp`` describes the whole loop).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ha.pair import Unconfirmed
from ..observability.metrics import Metrics
from ..policy.dhcp import Decision, Link
from ..policy.leases import Change, LeaseStore

log = logging.getLogger("provision.services.dhcp")  # one logger for the whole service

LAZY_FLUSH = 1.0  # seconds a non-urgent change may wait for the disk
# Group commit tuned to load: commits begin at least this far apart, so a busy
# server's ACKs share an fsync (at 3,000 DORA/s on a fast disk, 3 ACKs per commit and
# ~1,000 fsyncs/s without it). An ACK waits at most this long more; the first one
# after a quiet spell not at all.
COMMIT_GAP = 0.005


@dataclass
class Endpoint:
    """One socket of the DHCP service and the link it serves."""

    sock: socket.socket
    link: Link
    unicast: Link = field(init=False)  # the same link, for requests addressed to us
    packed: bytes = field(init=False)  # our address, as IP_PKTINFO gives it

    def __post_init__(self) -> None:
        self.unicast = _unicast(self.link)
        self.packed = self.link.address.packed


Outgoing = tuple[Endpoint, Decision, tuple[str, int]]


class Batch:
    """What one wake-up of the loop decided (a plain class: one per wake-up)."""

    __slots__ = ("now", "after_commit", "changes", "durable", "counts", "sent")

    def __init__(self, counts: dict[tuple[str, str, str], int], sent: dict[str, int]) -> None:
        self.now: list[Outgoing] = []
        self.after_commit: list[Outgoing] = []
        self.changes: list[Change] = []  # in the order decided
        self.durable = False  # some of them must be on disk before after_commit is sent
        self.counts = counts  # the loop's counters, shared by its batches
        self.sent = sent  # replies sent, by type

    def count(self, name: str, label: str, value: str) -> None:
        key = (name, label, value)
        self.counts[key] = self.counts.get(key, 0) + 1


class Committer(threading.Thread):
    """Writes lease changes (one fsync'd transaction for everything queued, in the
    order decided) and then sends the ACKs that waited for them, while the loop goes
    on deciding: group commit. Changes that are not urgent are written with the next
    urgent ones, or after ``LAZY_FLUSH`` seconds. Commits begin ``COMMIT_GAP`` apart at
    least (``monotonic`` and ``sleep``: time's, or a test's)."""

    def __init__(self, journal: LeaseStore, send: Callable[[Endpoint, Decision,
                 tuple[str, int], dict[str, int]], None], metrics: Metrics,
                 clock: Callable[[], float], leases: Callable[[], int],
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(name="dhcp-commit", daemon=True)
        self._monotonic, self._sleep = monotonic, sleep
        self._changes: list[Change] = []  # the pending commit, in the order decided
        self._replies: list[Outgoing] = []  # and the replies that wait for it
        self._since = 0.0  # when its first change came
        self._journal = journal
        self._send = send
        self._metrics = metrics
        self._clock = clock
        self._leases = leases
        self._queue: queue.SimpleQueue[tuple[list[Change], bool, list[Outgoing]]
                                       | None] = queue.SimpleQueue()

    def submit(self, changes: list[Change], urgent: bool, replies: list[Outgoing]) -> None:
        self._queue.put((changes, urgent, replies))

    def finish(self) -> None:
        self._queue.put(None)
        self.join(timeout=10)

    def run(self) -> None:
        self._since = self._monotonic()
        last = -COMMIT_GAP  # when the last commit began
        done = False
        while not done:
            try:
                item = self._queue.get(timeout=LAZY_FLUSH)
            except queue.Empty:
                item = ([], False, [])
            urgent, done = self._take(item)
            now = self._monotonic()
            if urgent and not done and now - last < COMMIT_GAP:
                # Busy: the last commit began under COMMIT_GAP ago. What the loop
                # decides meanwhile joins this commit (one fsync for more ACKs); an
                # idle server's first ACK never waits.
                self._sleep(COMMIT_GAP - (now - last))
                more, done = self._take(None, block=False)
                urgent = urgent or more
                now = self._monotonic()
            changes = self._changes
            if urgent or done or changes and now - self._since >= LAZY_FLUSH:
                last = now
                self._flush(changes, self._replies)
                self._changes, self._replies = [], []

    def _take(self, item: tuple[list[Change], bool, list[Outgoing]] | None,
              block: bool = True) -> tuple[bool, bool]:
        """Add ``item`` (if ``block``: the one just taken) and whatever else is queued
        to the pending commit: (any of it urgent, finish() was asked)."""
        urgent = done = False
        if not block:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False, False
        while True:  # bounded: the queue's items at the time, one each turn
            if item is None:
                done = True
            else:
                if item[0] and not self._changes:
                    self._since = self._monotonic()
                self._changes += item[0]
                urgent = urgent or item[1]
                self._replies += item[2]
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return urgent, done

    def _flush(self, changes: list[Change], replies: list[Outgoing]) -> None:
        """Commit the batch; only then send its replies (the group commit)."""
        if not self._commit(changes):
            return
        sent: dict[str, int] = {}
        for out in replies:
            self._send(*out, sent)
        for kind, n in sent.items():
            self._metrics.inc("dsas_dhcp_sent_total", n, type=kind)

    def _commit(self, changes: list[Change]) -> bool:
        if not changes:
            return True
        try:
            self._journal.commit(changes, self._clock())
        except Unconfirmed as e:
            log.warning("dhcp: the peer master did not confirm %s binding(s) of its half of "
                        "the pool: their ACKs are withheld (the clients retry)", e)
            self._metrics.inc("dsas_dhcp_unconfirmed_total")
            return False
        except Exception:  # noqa: BLE001 - the disk failed: count it, keep serving
            log.exception("dhcp: cannot write %d lease change(s); their ACKs are withheld",
                          len(changes))
            self._metrics.inc("dsas_dhcp_store_errors_total")
            return False
        self._metrics.inc("dsas_dhcp_commits_total")
        self._metrics.set("dsas_dhcp_leases", self._leases())
        return True


def _unicast(link: Link) -> Link:
    return Link(link.interface, link.address, link.network, link.port, unicast=True)
