"""Make a client-supplied value safe to put in a log line or a table cell.

Anything a client sends (a DHCP vendor class or hostname, a DNS query name, an HTTP path) may
carry newlines, terminal escapes or other control characters. Written as is, a newline forges a
log line of the attacker's choosing and breaks a table's rows. ``safe`` escapes them instead.
"""

from __future__ import annotations

MARKER = "...[+{n}]"


def _escape_char(ch: str) -> str:
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    if ch.isprintable() and code != 0x7F:
        return ch
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(value: object, limit: int = 200) -> str:
    """``value`` as one printable line: controls, DEL, non-printables and backslash escaped.

    Bytes are decoded as latin-1 so each byte stays visible (``\\xNN`` for the non-printable
    ones). A backslash becomes ``\\\\`` so an escape can't be faked either. No quotes are
    added. The result is at most about ``limit`` characters, the excess replaced with a
    ``...[+N]`` marker that says how many input characters were left out.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        text = bytes(value).decode("latin-1")
    else:
        text = str(value)
    out: list[str] = []
    size = 0
    for i, ch in enumerate(text):
        piece = _escape_char(ch)
        if size + len(piece) > limit:
            out.append(MARKER.format(n=len(text) - i))
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)
