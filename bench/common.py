"""What the benchmarks share: CPU accounting on this shared machine.

The machine is shared (2 cores, other work running), so every figure is printed with
the CPU that *other* processes used meanwhile ("other CPU", % of one core: the
machine's user+nice+system time minus what the benchmark's own processes used). A
result taken while others used more than ``FOREIGN_LIMIT`` of a core is marked
loaded: contention hurts the contenders unequally, so such a ratio is not a result.
"""

from __future__ import annotations

import os
import resource
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
