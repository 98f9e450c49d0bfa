"""Pure parts of the HTTP hardening: boot-report tokens, token buckets, the quiet log,
where a report may come from, what the event table keeps (issue 13 items 1, 6, 9)."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from lab.bootfiles import inventory
from provision.observability.quietlog import QuietLog
from provision.policy import boottoken
from provision.policy.httpfiles import BadEvent, parse_event
from provision.policy.ratelimit import TokenBuckets
from provision.state import StateStore
from provision.state.events import trim_events
from provision.state.schema import EVENTS_DDL


def test_token_verifies_for_its_host_and_boot_only() -> None:
    secret = boottoken.new_secret()
    boot_id, tok = boottoken.issue(secret, "n1", 1_700_000_000)
    assert boottoken.verify(secret, "n1", boot_id, tok)
    assert not boottoken.verify(secret, "n2", boot_id, tok)  # another host
    other_id, _ = boottoken.issue(secret, "n1", 1_700_000_000)
    assert other_id != boot_id and not boottoken.verify(secret, "n1", other_id, tok)
    assert not boottoken.verify(boottoken.new_secret(), "n1", boot_id, tok)  # other master
    for bad_id, bad_tok in ((None, tok), (boot_id, None), ("x" * 500, tok),
                            (boot_id, tok.upper()), (boot_id, tok[:-1])):
        assert not boottoken.verify(secret, "n1", bad_id, bad_tok)
    lines = boottoken.conf_lines(boot_id, tok)
    assert f"DSAS_BOOT_ID={boot_id}\nDSAS_BOOT_TOKEN={tok}\n" in lines


def test_state_secret_is_private_and_stable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = StateStore(tmp_path)
    a = store.secret("boot-report.key", boottoken.new_secret)
    assert StateStore(tmp_path).secret("boot-report.key", boottoken.new_secret) == a
    assert len(a) == 32 and (tmp_path / "boot-report.key").stat().st_mode & 0o777 == 0o600


def test_token_buckets_refill_and_stay_bounded() -> None:
    b = TokenBuckets(rate=2, burst=3, max_keys=10)
    assert [b.allow("a", 0) for _ in range(4)] == [True, True, True, False]
    assert b.allow("b", 0)  # another source is not limited by a
    assert not b.allow("a", 0.2) and b.allow("a", 0.5)  # one token back after 0.5 s
    for i in range(100):
        b.allow(f"198.18.9.{i}", 1)
    assert len(b) == 10
    with pytest.raises(ValueError):
        TokenBuckets(0, 1)


def test_quiet_log_writes_once_per_interval_and_counts_the_rest(caplog) -> None:  # type: ignore[no-untyped-def]
    now = [0.0]
    q = QuietLog(logging.getLogger("t.quiet"), interval=60, max_keys=2, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "t.quiet"):
        assert q.warning("a", "refused %s", "x")
        assert not any(q.warning("a", "refused %s", "x") for _ in range(999))
        assert q.warning("b", "other")
        now[0] = 61
        assert q.warning("a", "refused %s", "x")
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["refused x", "other", "refused x (999 more like it in the last 60 s, "
                                          "not logged)"]


INV = inventory()


def ev(doc: object, peer: str | None, leased: set[str] | None = None):  # type: ignore[no-untyped-def]
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_event(body, peer, INV, (lambda h: leased or set()) if leased else None)


def test_a_report_counts_only_from_the_hosts_own_or_leased_address() -> None:
    assert ev({"host": "n1", "stage": "ready"}, "198.18.4.11").host == "n1"
    assert ev({"stage": "ready"}, "198.18.4.11").host == "n1"  # named by its address
    for peer in ("198.18.4.50", "198.18.4.12", None, "2001:db8::1"):
        with pytest.raises(BadEvent) as e:
            ev({"host": "n1", "stage": "ready"}, peer)
        assert e.value.status == 403 and e.value.reason == "source"
    with pytest.raises(BadEvent):  # the master itself, from the discovery pool
        ev({"host": "m1", "stage": "ready"}, "198.18.4.200")
    # the address DHCP leased n1 (a reservation on another network, say)
    assert ev({"host": "n1", "stage": "ready"}, "198.18.4.77", {"198.18.4.77"}).host == "n1"


@pytest.mark.parametrize("body", [b"[" * 3000, b'{"a":' * 800, b"\xc3\x28", b"", b"42",
                                  b'{"host": 5, "stage": "ready"}',
                                  b'{"host": "n1", "stage": NaN}',
                                  b'{"host": "n1", "stage": "ready", "detail": {"x": []}}'])
def test_bad_bodies_are_400_with_one_line(body: bytes) -> None:
    with pytest.raises(BadEvent) as e:
        ev(body, "198.18.4.11")
    assert e.value.status == 400 and "\n" not in e.value.message


def test_trim_keeps_the_last_n_and_the_last_of_each_stage() -> None:
    conn = sqlite3.connect(":memory:")
    conn.executescript(EVENTS_DDL)
    stages = ["dhcp", "kernel"] + ["initramfs"] * 30 + ["ready"] + ["initramfs"] * 5
    for i, stage in enumerate(stages):
        for host in ("n1", "n2"):
            conn.execute("INSERT INTO http_events(ts, host, stage) VALUES (?, ?, ?)",
                         (i, host, stage))
            if host == "n1":
                trim_events(conn, host, 10)
    n1 = [s for (s,) in conn.execute("SELECT stage FROM http_events WHERE host='n1' "
                                     "ORDER BY id")]
    assert n1 == ["dhcp", "kernel"] + ["initramfs"] * 4 + ["ready"] + ["initramfs"] * 5
    assert conn.execute("SELECT COUNT(*) FROM http_events WHERE host='n2'").fetchone()[0] == 38
