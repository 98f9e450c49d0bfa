"""HTTP decisions, provision/policy/httpfiles.py (pure unit): byte ranges and
validators at their edges, every field of a node's boot report, SSH host keys."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from lab.bootfiles import INVENTORY, inventory
from provision.policy.httpfiles import (
    MAX_EVENT_BYTES,
    MAX_REASON,
    MAX_SSH_KEY,
    BadEvent,
    Unsatisfiable,
    etag_matches,
    host_addresses,
    if_range_allows,
    parse_event,
    parse_range,
    parse_ssh_key,
)
from provision.state.events import ensure_events_schema
from provision.state.schema import EVENTS_COLUMNS, EVENTS_DDL

INV = inventory()
N1 = "198.18.4.11"


def key_line(ktype: str = "ssh-ed25519", tail: bytes = b"\x00\x00\x00\x20" + b"k" * 32,
             declared: int | None = None) -> str:
    t = ktype.encode()
    blob = struct.pack("!I", len(t) if declared is None else declared) + t + tail
    return f"{ktype} {base64.b64encode(blob).decode()}"


def ev(doc: dict[str, str], peer: str | None = N1, leased=None):  # type: ignore[no-untyped-def]
    return parse_event(json.dumps(doc).encode(), peer, INV, leased)


def refused(doc: dict[str, str] | bytes, peer: str | None = N1) -> BadEvent:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(BadEvent) as e:
        parse_event(body, peer, INV)
    return e.value


# -- ranges and validators ------------------------------------------------------


def test_spaces_inside_a_range_are_ignored() -> None:
    assert parse_range("bytes = 0 - 4", 10) == (0, 4)


def test_range_numbers_up_to_19_digits() -> None:
    with pytest.raises(Unsatisfiable):
        parse_range("bytes=" + "1" * 19 + "-", 100)
    assert parse_range("bytes=" + "1" * 20 + "-", 100) is None
    assert parse_range("bytes=0-" + "9" * 19, 100) == (0, 99)
    assert parse_range("bytes=0-" + "9" * 20, 100) is None
    assert parse_range("bytes=-" + "9" * 20, 100) is None


def test_suffix_ranges_at_the_edges() -> None:
    assert parse_range("bytes=-1", 1) == (0, 0)
    assert parse_range("bytes=-10", 5) == (0, 4)
    assert parse_range("bytes=-4", 5) == (1, 4)


def test_a_one_byte_range() -> None:
    assert parse_range("bytes=5-5", 10) == (5, 5)
    assert parse_range("bytes=6-5", 10) is None


def test_weak_etags_compare_weakly_in_if_none_match() -> None:
    assert etag_matches('"x"', 'W/"x"')
    assert etag_matches('W/"x"', '"x"')
    assert not etag_matches('"w/x"', '"x"')
    assert etag_matches('"a","b"', '"b"')
    assert etag_matches(' "a" , "b" ', '"b"')
    assert not etag_matches('"a","b"', '"c"')


def test_if_range_needs_a_strong_match() -> None:
    assert if_range_allows('"x"', '"x"')
    assert if_range_allows(' "x" ', '"x"')
    assert not if_range_allows('W/"x"', 'W/"x"')
    assert not if_range_allows('"y"', '"x"')
    assert if_range_allows("", '"x"')


# -- the event store --------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []

    def ensure_schema(self, component: str, ddl: str) -> None:
        self.calls.append(("schema", component, ddl))

    def ensure_columns(self, table: str, columns: tuple[tuple[str, str], ...]) -> None:
        self.calls.append(("columns", table, columns))


def test_the_schema_is_the_http_components_with_the_added_columns() -> None:
    store = Recorder()
    ensure_events_schema(store)
    assert store.calls == [
        ("schema", "http", EVENTS_DDL),
        ("columns", "http_host_keys", (("boot_id", "TEXT"),
                                       ("verified", "INTEGER NOT NULL DEFAULT 0"))),
    ]
    assert {t for t, _, _ in EVENTS_COLUMNS} == {"http_host_keys"}


def test_bad_event_carries_its_message() -> None:
    e = BadEvent(403, "nope", "source")
    assert (str(e), e.status, e.message, e.reason) == ("nope", 403, "nope", "source")
    assert BadEvent(400, "x").reason == "bad"


def test_host_addresses() -> None:
    assert host_addresses("n1", INV) == {N1}
    assert host_addresses("nope", INV) == set()


# -- node boot events ------------------------------------------------------------


def test_a_report_up_to_the_size_limit_is_read() -> None:
    body = json.dumps({"host": "n1", "stage": "ready"}).encode()
    body += b" " * (MAX_EVENT_BYTES - len(body))
    assert len(body) == MAX_EVENT_BYTES
    assert parse_event(body, N1, INV).stage == "ready"
    e = refused(body + b" ")
    assert (e.status, e.reason) == (413, "too_large")


def test_unknown_fields_are_400_naming_them() -> None:
    e = refused({"host": "n1", "stage": "ready", "zz": "1", "aa": "2"})
    assert e.status == 400 and e.reason == "bad" and "aa, zz" in e.message


def test_a_bad_stage_is_400() -> None:
    e = refused({"host": "n1", "stage": "booting"})
    assert e.status == 400 and "ready" in e.message


def test_text_fields_up_to_200_and_ssh_keys_up_to_2048() -> None:
    assert ev({"host": "n1", "stage": "ready", "detail": "d" * MAX_REASON}).reason == (
        "d" * MAX_REASON)
    assert refused({"host": "n1", "stage": "ready", "detail": "d" * (MAX_REASON + 1)}
                   ).status == 400
    long_key = key_line("ssh-rsa", b"\x00\x00\x01\x01" + b"r" * 257)
    assert MAX_REASON < len(long_key) <= MAX_SSH_KEY
    assert ev({"host": "n1", "stage": "ready", "ssh_key": long_key}).ssh_key == (
        "ssh-rsa", long_key.split()[1])
    too_long = key_line("ssh-rsa", b"r" * 1600)
    assert len(too_long) > MAX_SSH_KEY
    assert refused({"host": "n1", "stage": "ready", "ssh_key": too_long}).status == 400


def test_reason_is_the_old_name_of_detail() -> None:
    assert ev({"host": "n1", "stage": "failed", "reason": "disk"}).reason == "disk"
    assert ev({"host": "n1", "stage": "failed", "reason": "r", "detail": "d"}).reason == "d"
    assert ev({"host": "n1", "stage": "ready"}).reason is None


def test_the_lease_is_looked_up_for_the_named_host() -> None:
    def leased(host: str) -> set[str]:
        return {"198.18.4.77"} if host == "n1" else set()

    assert ev({"host": "n1", "stage": "ready"}, "198.18.4.77", leased).address == "198.18.4.77"


def test_the_mac_is_compared_case_insensitively() -> None:
    inv = inventory(INVENTORY.replace("52:54:00:04:00:11", "52:54:00:04:00:ab"))
    for mac in ("52:54:00:04:00:ab", "52:54:00:04:00:AB"):
        body = json.dumps({"host": "n1", "stage": "ready", "mac": mac}).encode()
        assert parse_event(body, N1, inv).host == "n1"
    e = refused({"host": "n1", "stage": "ready", "mac": "52:54:00:04:00:12"})
    assert e.status == 403


def test_every_field_reaches_the_event() -> None:
    key = key_line()
    e = ev({"host": "n1", "stage": "configured", "detail": "ok", "image": "other",
            "ssh_key": key, "boot_id": "b-1", "token": "t-2"})
    assert (e.host, e.stage, e.reason, e.image, e.address) == (
        "n1", "configured", "ok", "other", N1)
    assert e.ssh_key == ("ssh-ed25519", key.split()[1])
    assert (e.boot_id, e.token) == ("b-1", "t-2")
    bare = ev({"host": "n1", "stage": "ready", "boot_id": "", "token": "", "ssh_key": ""})
    assert (bare.image, bare.ssh_key, bare.boot_id, bare.token) == ("tiny", None, None, None)


# -- SSH host keys ----------------------------------------------------------------


def test_a_key_line_with_or_without_a_comment() -> None:
    line = key_line()
    assert parse_ssh_key(line) == ("ssh-ed25519", line.split()[1])
    assert parse_ssh_key(line + " root@n1") == ("ssh-ed25519", line.split()[1])
    ecdsa = key_line("ecdsa-sha2-nistp256")
    assert parse_ssh_key(ecdsa)[0] == "ecdsa-sha2-nistp256"


@pytest.mark.parametrize("text", [
    "ssh-ed25519", "", "ssh-dss AAAA", "AAAA ssh-ed25519",
    "ssh-ed25519 AAAA!!!!", "ssh-ed25519 AAA",
    "ssh-ed25519 " + base64.b64encode(b"\x00\x00").decode(),
    "ssh-ed25519 " + base64.b64encode(b"\x00\x00\x00\x00").decode(),
])
def test_bad_key_lines_are_400(text: str) -> None:
    with pytest.raises(BadEvent) as e:
        parse_ssh_key(text)
    assert e.value.status == 400 and e.value.reason == "bad"


def test_the_blob_must_name_the_same_type() -> None:
    for line in (key_line("ssh-rsa").replace("ssh-rsa", "ssh-ed25519", 1),
                 key_line(declared=12), key_line(declared=10)):
        with pytest.raises(BadEvent) as e:
            parse_ssh_key(line)
        assert e.value.status == 400


def test_base64_is_validated_strictly() -> None:
    ktype, b64 = key_line().split()
    with pytest.raises(BadEvent) as e:
        parse_ssh_key(f"{ktype} {b64[:8]}*{b64[8:]}")
    assert e.value.status == 400
