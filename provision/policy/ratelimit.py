"""Token buckets per key (a client address): how often a client may do something.

Pure: the caller passes the clock. Bounded: at most ``max_keys`` buckets are
kept; a full one is the same as a new one, so the least recently used bucket
is dropped first when a flood of new addresses arrives.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    """``rate`` tokens per second up to ``burst``, per key; ``allow`` spends one."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, key: str, now: float) -> bool:
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        ok = tokens >= 1
        self._buckets[key] = (tokens - 1 if ok else tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return ok

    def __len__(self) -> int:
        return len(self._buckets)
