"""ruamel's round trip of the inventory text, kept to the operator's own lines.

``merge_lines`` takes from ruamel's dump only the lines an edit changed; the comment
tails (``take_tail``/``put_tail``) move the comments that ruamel hangs on an entry's
last line along with that entry. Used by ``edit.py``; pure, text in and text out.
"""

from __future__ import annotations

import io
from difflib import SequenceMatcher
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.tokens import CommentToken

__all__ = ["dump", "end_slot", "guess_indent", "merge_lines", "put_tail", "round_trip_yaml",
           "take_tail"]


def round_trip_yaml(indent: int = 2) -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never fold a long flow line the operator wrote on one line
    y.indent(mapping=indent, sequence=indent + 2, offset=indent)
    return y


def dump(data: Any, indent: int = 2) -> str:
    out = io.StringIO()
    round_trip_yaml(indent).dump(data, out)
    return out.getvalue()


def guess_indent(text: str) -> int:
    """The file's mapping indentation: that of the first indented key under a top-level
    key (2 when there is none), so lines an edit adds line up with the operator's. Plain
    text, no parse: a parse of a 1,000-host inventory costs most of a second."""
    after_top = False
    for line in text.splitlines():
        body = line.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        n = len(line) - len(body)
        if n == 0:
            after_top = body.rstrip().endswith(":") or ": #" in body
            continue
        if after_top and not body.startswith("- "):
            return n if 1 < n <= 8 else 2
        after_top = False
    return 2


def merge_lines(original: str, base_dump: str, new_dump: str) -> str:
    """The original text with only the lines where ``base_dump`` and ``new_dump`` differ
    replaced. ``base_dump`` is ruamel's dump of the unedited tree, so its lines map onto
    the original's (equal, or re-spaced one for one)."""
    o = original.splitlines(keepends=True)
    b = base_dump.splitlines(keepends=True)
    n = new_dump.splitlines(keepends=True)
    to_orig: list[int | None] = [None] * len(b)
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, o, b, autojunk=False).get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(j2 - j1):
                to_orig[j1 + k] = i1 + k
    out: list[str] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, b, n, autojunk=False).get_opcodes():
        if tag == "equal":
            for k in range(i1, i2):
                m = to_orig[k]
                out.append(o[m] if m is not None else b[k])
        else:
            out.extend(n[j1:j2])
    return "".join(out)


# -- comments between entries -------------------------------------------------------------
#
# ruamel hangs the lines after an entry (blank lines, the comment that introduces the next
# entry or section) on the entry's last key: "# eol\n\n# db hosts\n". An entry inserted
# after it, or the entry removed, must take that tail along, or the comment ends up above
# the wrong entry (or is deleted with it).


def end_slot(m: Any, key: Any) -> tuple[Any, Any]:
    """The (container, key) whose comment token ends entry ``key`` of ``m``."""
    v = m[key]
    if isinstance(v, CommentedMap) and len(v) and not v.fa.flow_style():
        return end_slot(v, list(v)[-1])
    if isinstance(v, CommentedSeq) and len(v) and not v.fa.flow_style():
        return end_slot(v, len(v) - 1)
    return m, key


def take_tail(m: CommentedMap, key: Any) -> str:
    """Detach and return what follows entry ``key``'s own line."""
    c, k = end_slot(m, key)
    item = c.ca.items.get(k)
    tok = item[2] if item and len(item) > 2 else None
    if tok is None or "\n" not in tok.value:
        return ""
    i = tok.value.index("\n")
    tail = tok.value[i + 1:]
    tok.value = tok.value[: i + 1]
    return str(tail)


def put_tail(m: CommentedMap, key: Any, tail: str) -> None:
    if not tail:
        return
    c, k = end_slot(m, key)
    item = c.ca.items.setdefault(k, [None, None, None, None])
    if item[2] is None:
        item[2] = CommentToken("\n" + tail, CommentMark(0), None)
    else:
        item[2].value += tail
