"""``logsafe.safe``: what TFTP logs of a client's names (pure unit)."""

from __future__ import annotations

from provision.observability.logsafe import safe


def test_control_characters_and_newlines_are_escaped() -> None:
    forged = "pxelinux.0\n2026-01-01 00:00:00,000 CRITICAL forged\r\x1b[2J\x00"
    out = safe(forged)
    assert "\n" not in out and "\r" not in out and "\x1b" not in out and "\x00" not in out
    assert out == "pxelinux.0\\x0a2026-01-01 00:00:00,000 CRITICAL forged\\x0d\\x1b[2J\\x00"


def test_bytes_backslashes_and_non_printables() -> None:
    assert safe(b"a\xffb") == "a\xffb"  # latin-1, printable: kept
    assert safe("a\\x0ab") == "a\\\\x0ab"  # a literal backslash cannot fake an escape
    assert safe("\x85\u2028") == "\\x85\\u2028"  # NEL, LINE SEPARATOR
    assert safe("tab\there") == "tab\\x09here"


def test_length_is_capped() -> None:
    out = safe("x" * 1000)
    assert out.startswith("x" * 180) and len(out) <= 210
    assert out.endswith("...[+" + str(1000 - out.index(".")) + "]")
    assert len(safe("\n" * 1000, limit=40)) <= 50
    assert "\n" not in safe("\n" * 1000, limit=40)
