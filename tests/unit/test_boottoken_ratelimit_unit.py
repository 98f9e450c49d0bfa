"""Boot report tokens and token buckets, provision/policy/boottoken.py and
ratelimit.py (pure unit): the token's exact construction, the format checks that
come before the HMAC, and the buckets' bounds, refill and eviction order."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from provision.policy import boottoken
from provision.policy.ratelimit import TokenBuckets

SECRET = bytes(range(32))


def test_the_token_is_the_documented_hmac() -> None:
    boot_id = "6553f100-0123456789ab"
    msg = b"dsas-boot-report\x00n1\x00" + boot_id.encode()
    want = hmac.new(SECRET, msg, hashlib.sha256).hexdigest()[:32]
    assert boottoken.token(SECRET, "n1", boot_id) == want
    assert boottoken.verify(SECRET, "n1", boot_id, want)


def test_a_malformed_boot_id_is_refused_even_with_its_own_hmac() -> None:
    bad_id = "x" * 40
    assert not boottoken.verify(SECRET, "n1", bad_id, boottoken.token(SECRET, "n1", bad_id))


def test_conf_lines_are_a_comment_and_two_assignments() -> None:
    assert boottoken.conf_lines("1-0123456789ab", "f" * 32) == (
        "#---- Boot report (per boot; dsas-init sends it with the host key) ----\n"
        "DSAS_BOOT_ID=1-0123456789ab\n"
        f"DSAS_BOOT_TOKEN={'f' * 32}\n")


def test_bucket_bounds_are_rate_above_0_and_burst_at_least_1() -> None:
    assert TokenBuckets(0.5, 1).allow("a", 0)
    for rate, burst in ((0, 1), (-1, 1), (1, 0.5)):
        with pytest.raises(ValueError):
            TokenBuckets(rate, burst)


def test_refill_counts_the_time_since_the_last_request() -> None:
    b = TokenBuckets(rate=2, burst=3)
    assert [b.allow("a", 1000) for _ in range(4)] == [True, True, True, False]
    assert not b.allow("a", 1000.2)
    assert b.allow("a", 1000.5)


def test_the_least_recently_used_bucket_is_dropped() -> None:
    b = TokenBuckets(rate=0.001, burst=1, max_keys=2)
    assert b.allow("a", 0) and b.allow("b", 0) and b.allow("c", 0)
    assert len(b) == 2
    assert not b.allow("c", 0)  # the newest is kept, still empty
    assert not b.allow("b", 0)
