"""bench.common.cpu_span: a busy process not ours shows as other CPU; ours does not.

Real processes and the real /proc counters; the asserts are on CPU-seconds a child
is made to burn (it measures its own CPU), not on wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench.common import cpu_span, kernel_threads

BURN = 0.4  # CPU-s the child burns per line it reads
TICK = 0.05  # slack for clock-tick rounding of the counters

CHILD = f"""
import sys, time
for line in sys.stdin:
    t = time.process_time()
    while time.process_time() - t < {BURN}:
        pass
    print("done", flush=True)
"""


@pytest.fixture
def burner() -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as p:  # closes, waits
        yield p


def burn(p: subprocess.Popen[str]) -> None:
    assert p.stdin and p.stdout
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline() == "done\n"


def test_a_busy_process_not_ours_is_other_cpu(burner: subprocess.Popen[str]) -> None:
    with cpu_span() as s:  # the child is not waited for and not named: foreign
        burn(burner)
    assert s.other * s.wall / 100 >= BURN - TICK
    assert not s.quiet and "loaded" in s.mark


def test_a_named_process_is_ours(burner: subprocess.Popen[str]) -> None:
    with cpu_span(burner.pid) as s:
        burn(burner)
    assert s.own >= BURN - TICK


def test_a_named_child_reaped_in_the_span_counts_once(burner: subprocess.Popen[str]) -> None:
    burn(burner)  # CPU before the span: not in it
    with cpu_span(burner.pid) as s:
        burn(burner)
        assert burner.stdin
        burner.stdin.close()
        burner.wait(timeout=30)  # reaped: its whole CPU arrives in our children's
    assert BURN - TICK <= s.own < 2 * BURN - TICK


def test_a_process_added_during_the_span_is_ours() -> None:
    with subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as p:
        with cpu_span() as s:
            s.add(p.pid)
            burn(p)
    assert s.own >= BURN - TICK


def test_kernel_threads_are_ours_only_when_asked(burner: subprocess.Popen[str]) -> None:
    """With kernel=True the kernel threads' CPU adds to ours, never takes from it."""
    pids = kernel_threads()
    assert 2 in pids and os.getpid() not in pids and burner.pid not in pids
    with cpu_span(burner.pid, kernel=True) as s:
        burn(burner)
    assert s.own >= BURN - TICK
