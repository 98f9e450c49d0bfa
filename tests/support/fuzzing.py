"""Shared settings of the protocol fuzz tests (marker ``fuzz``)."""

from __future__ import annotations

import os


def fuzz_cases(default: int = 10_000) -> int:
    """How many cases a fuzz test runs: $DSAS_FUZZ_CASES (`make fuzz` sets 100,000)."""
    raw = os.environ.get("DSAS_FUZZ_CASES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default
