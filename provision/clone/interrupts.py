"""Interrupts during a clone: SIGTERM as Ctrl-C, and none while a child is being
started (so every child is known, and killed)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_deferred = {"depth": 0, "pending": 0}


def _interrupt(signum: int, frame: Any) -> None:
    if _deferred["depth"]:
        _deferred["pending"] = signum
        return
    raise KeyboardInterrupt


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Ctrl-C or SIGTERM inside waits until the block is done (say, until a child
    process is started and known, so that it can be killed)."""
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
        if not _deferred["depth"] and _deferred["pending"]:
            _deferred["pending"] = 0
            raise KeyboardInterrupt


@contextmanager
def interrupts_as_errors() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so cleanup and the 'unusable' message run."""
    old = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
