"""A clock for unit tests of waiting code: ``clock()`` is the time, ``sleep`` moves it."""

from __future__ import annotations


class Clock:
    """Starts at 0; ``sleep(s)`` advances it by ``s`` at once."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
