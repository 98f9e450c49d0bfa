"""What the benchmarks share: CPU accounting on this shared machine.

The machine is shared (2 cores, other work running), so every figure is printed with
the CPU that *other* processes used meanwhile ("other CPU", % of one core: the
machine's user+nice+system time minus what the benchmark's own processes used). A
result taken while others used more than ``FOREIGN_LIMIT`` of a core is marked
loaded: contention hurts the contenders unequally, so such a ratio is not a result.

``cpu_span(*pids)`` measures one span: what counts as ours is this process, every child
it waits for meanwhile, and the processes ``pids`` (with what they waited for).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

FOREIGN_LIMIT = 10.0  # % of one core used by other processes beyond which a result is void
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU-s (user + system, all threads) a live process has used."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (proc(5))


def machine_cpu() -> float:
    """CPU-s all CPUs spent in user, nice and system time (not idle, iowait, irq)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / TICK


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def other_cpu(machine: float, own: float, wall: float) -> float:
    """% of one core that processes other than ours used, from CPU-s deltas over ``wall``."""
    return 100 * max(0.0, machine - own) / wall if wall > 0 else 0.0


def loaded_mark(other: float) -> str:
    return "" if other <= FOREIGN_LIMIT else "  (loaded: not a result)"


def tree_cpu(pid: int) -> float:
    """CPU-s a live (or zombie) process and the children it waited for have used; 0 if
    it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK  # utime stime cutime cstime (proc(5))


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Span:
    """The CPU of one measured span, filled in when its ``cpu_span`` block ends."""

    wall: float = 0.0
    own: float = 0.0  # CPU-s of ours: this process, its waited children, the given PIDs
    other: float = 0.0  # % of one core other processes used
    start: dict[int, float] = field(default_factory=dict)  # PID -> its CPU-s at the start

    def add(self, pid: int) -> None:
        """Count a process started during the span (all its CPU is inside it)."""
        self.start.setdefault(pid, 0.0)

    @property
    def quiet(self) -> bool:
        return self.other <= FOREIGN_LIMIT

    @property
    def mark(self) -> str:
        return loaded_mark(self.other)


def kernel_threads() -> list[int]:
    """PIDs of the kernel's threads (kthreadd and its children)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]
            except OSError:
                continue
            if entry == "2" or ppid == "2":
                out.append(int(entry))
    return out


@contextlib.contextmanager
def cpu_span(*pids: int, kernel: bool = False) -> Iterator[Span]:
    """Measure the block: its wall time, our CPU and the other processes' CPU.

    ``pids`` are our long-running processes (servers, clients started with popen). Each
    must outlive the span or be our child: one that this process reaps meanwhile reads 0
    at the end, and its whole CPU arrives in our children's, so it still counts once.
    ``kernel``: the kernel threads' CPU counts as ours too, for a bench whose own I/O
    runs in them (loop devices, writeback); that of one that ends meanwhile is lost, so
    counts as other.
    """
    span = Span(start={})
    m0, t0 = machine_cpu(), time.monotonic()
    s0, c0 = self_cpu(), children_cpu()
    k0 = {p: tree_cpu(p) for p in kernel_threads()} if kernel else {}
    span.start.update({p: tree_cpu(p) for p in pids})
    try:
        yield span
    finally:
        procs = sum(tree_cpu(p) - c for p, c in span.start.items())
        k1 = {p: tree_cpu(p) for p in kernel_threads()} if kernel else {}
        threads = sum(c - k0.get(p, 0.0) for p, c in k1.items())  # the ones still there
        span.own = procs + threads + children_cpu() - c0 + self_cpu() - s0
        span.wall = time.monotonic() - t0
        span.other = other_cpu(machine_cpu() - m0, span.own, span.wall)
