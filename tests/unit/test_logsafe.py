"""logsafe.safe: client strings made safe for one log line or one table cell."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from provision.observability.logsafe import safe


def test_newline_and_controls_escaped() -> None:
    assert safe("PXE\nCRITICAL fake") == "PXE\\x0aCRITICAL fake"
    assert safe("a\r\tb\x1b[31m\x7f") == "a\\x0d\\x09b\\x1b[31m\\x7f"
    assert safe("\x00") == "\\x00"


def test_backslash_escaped_so_escapes_cannot_be_faked() -> None:
    assert safe("a\\x0ab") == "a\\\\x0ab"


def test_bytes_shown_byte_by_byte() -> None:
    assert safe(b"ok\xff\n") == "ok\xff\\x0a"
    assert safe(b"\x85") == "\\x85"  # NEL, a line break for some readers


def test_unicode_line_separators_escaped() -> None:
    assert safe("a\u2028b\u0085c") == "a\\u2028b\\x85c"


def test_printable_kept_and_not_quoted() -> None:
    assert safe("node-01.example ü") == "node-01.example ü"
    assert safe(42) == "42"


def test_length_capped_with_marker() -> None:
    out = safe("x" * 1000, limit=50)
    assert out.startswith("x" * 50)
    assert out.endswith("...[+950]")
    assert len(safe("\n" * 1000, limit=40)) < 60


@given(st.one_of(st.text(), st.binary()))
def test_always_one_printable_line(value: object) -> None:
    out = safe(value)
    assert out.isprintable()
    assert len(out) <= 200 + len("...[+999999]")
