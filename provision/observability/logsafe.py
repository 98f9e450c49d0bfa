"""Client-supplied strings made safe for a log line."""

from __future__ import annotations

LIMIT = 200


def safe(value: object) -> str:
    """``value`` as text with control and non-printable characters escaped as \\xNN
    (no quotes added), cut to ``LIMIT`` characters (with a trailing "...")."""
    text = value if isinstance(value, str) else str(value)
    out = []
    for ch in text[: LIMIT + 1]:
        if ch.isprintable() and ch != "\\":
            out.append(ch)
        elif ch == "\\":
            out.append("\\\\")
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    s = "".join(out)
    return s[:LIMIT] + "..." if len(text) > LIMIT else s
