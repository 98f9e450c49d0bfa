"""Client-supplied strings made safe for a log line or a table cell.

A name a client sent (a TFTP file name, a DHCP vendor class) may hold a newline
and a forged log line, terminal escapes, or a megabyte of text. ``safe`` keeps
printable characters as they are and writes everything else as ``\\xNN``
(``\\uNNNN`` above U+00FF), a backslash as ``\\\\``, with no quotes added, and
cuts the result at ``limit`` characters, marking the cut with ``...``.
"""

from __future__ import annotations

LIMIT = 200  # characters of a safe string, the escapes included


def safe(value: object, limit: int = LIMIT) -> str:
    """``value`` (str, bytes or anything with a str()) as one printable line."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("latin-1")
    else:
        text = value if isinstance(value, str) else str(value)
    out: list[str] = []
    size = 0
    for ch in text:
        if ch == "\\":
            part = "\\\\"
        elif ch.isprintable() and (ch == " " or not ch.isspace()):
            part = ch
        elif ord(ch) <= 0xFF:
            part = f"\\x{ord(ch):02x}"
        else:
            part = f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
        if size + len(part) > limit:
            out.append("...")
            break
        out.append(part)
        size += len(part)
    return "".join(out)
