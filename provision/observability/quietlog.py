"""Rate-limited logging for what a client can make happen again and again.

A refused report, a malformed request or a full descriptor table can repeat
thousands of times a second; each must not become a log line (zeroconf's
``QuietLogger`` is the model). ``QuietLog.log(key, ...)`` writes the first
occurrence of ``key`` in each interval and counts the rest; the next line
written for that key says how many were left out. Keys are bounded (the oldest
is forgotten first), so a flood of distinct sources cannot grow memory either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_INTERVAL = 60.0
MAX_KEYS = 4096


class QuietLog:
    """Rate-limited warnings: one line per key per interval, the rest counted."""

    def __init__(self, logger: logging.Logger, interval: float = DEFAULT_INTERVAL,
                 max_keys: int = MAX_KEYS, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, list[float]] = OrderedDict()  # key -> [last, suppressed]

    def log(self, key: str, level: int, msg: str, *args: object,
            exc_info: BaseException | None = None) -> bool:
        """Log ``msg % args`` unless ``key`` was logged less than an interval ago.
        Returns whether a line was written."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return False
            left_out = int(seen[1]) if seen is not None else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        if left_out:
            msg += " (%d more like it in the last %.0f s, not logged)"
            args = (*args, left_out, self.interval)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(key, logging.WARNING, msg, *args)

    def info(self, key: str, msg: str, *args: object) -> bool:
        return self.log(key, logging.INFO, msg, *args)
