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

__all__ = ["dump", "end_slot", "guess_indent", "merge_lines", "put_tail", "respread",
           "round_trip_yaml", "take_tail"]


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
    the original's (equal, or re-spaced one for one), except where the operator spread
    a flow collection over several lines, which ruamel dumps on one: such a block is
    kept as written when the edit leaves it alone, and an edited one-line dump is laid
    out again over the operator's lines (``respread``)."""
    o = original.splitlines(keepends=True)
    b = base_dump.splitlines(keepends=True)
    n = new_dump.splitlines(keepends=True)
    to_orig, block = _map_base(o, b)
    out: list[str] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, b, n, autojunk=False).get_opcodes():
        if tag == "equal":
            out.extend(_kept(o, b, to_orig, block, i1, i2))
        elif tag == "replace" and i2 - i1 == j2 - j1:
            for k, line in zip(range(i1, i2), n[j1:j2], strict=True):
                bl = block.get(k)
                spread = respread(o[bl[0]:bl[1]], line) if bl and bl[3] - bl[2] == 1 else None
                out.extend(spread if spread is not None else [line])
        else:
            out.extend(n[j1:j2])
    return "".join(out)


Block = tuple[int, int, int, int]  # original lines i1:i2 dumped as base lines j1:j2


def _map_base(o: list[str], b: list[str]) -> tuple[list[int | None], dict[int, Block]]:
    """Each base line's original line (when one for one), and the blocks that are not."""
    to_orig: list[int | None] = [None] * len(b)
    block: dict[int, Block] = {}
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, o, b, autojunk=False).get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(j2 - j1):
                to_orig[j1 + k] = i1 + k
        elif tag == "replace":
            for k in range(j1, j2):
                block[k] = (i1, i2, j1, j2)
    return to_orig, block


def _kept(o: list[str], b: list[str], to_orig: list[int | None], block: dict[int, Block],
          i1: int, i2: int) -> list[str]:
    """The lines for base lines i1:i2, which the edit left alone: the operator's."""
    out: list[str] = []
    for k in range(i1, i2):
        m = to_orig[k]
        if m is not None:
            out.append(o[m])
        elif k in block and i1 <= block[k][2] and block[k][3] <= i2:
            if k == block[k][2]:  # the whole block is unchanged: the operator's lines
                out.extend(o[block[k][0]:block[k][1]])
        else:
            out.append(b[k])
    return out


def _split_flow(text: str) -> tuple[str, list[str], str] | None:
    """``key: {a: 1, b: [x, y]}`` -> (``key: {``, [``a: 1``, ``b: [x, y]``], ``}``): the
    top-level items of the flow collection that ends the line; None when it is not one."""
    start = next((i for i, c in enumerate(text) if c in "{["), None)
    if start is None:
        return None
    depth, quote, items, cur = 0, "", [], start + 1
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                if text[i + 1:].strip():
                    return None
                last = text[cur:i].strip()
                items += [last] if last else []
                return text[:start + 1], items, text[i:].rstrip("\n")
        elif c == "," and depth == 1:
            items.append(text[cur:i].strip())
            cur = i + 1
    return None


def _code_comment(line: str) -> tuple[str, str]:
    """A line's code and its trailing comment (with the spaces before it), outside quotes."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            j = len(line[:i].rstrip(" \t"))
            return line[:j], line[j:].rstrip("\n")
    return line.rstrip("\n"), ""


def _item_key(item: str) -> str:
    return item.split(":", 1)[0].strip() if ":" in item else item


def _lines_of_keys(codes: list[tuple[str, str]], opener: str,
                   keys: set[str]) -> dict[str, int] | None:
    """Which of the operator's lines each key of the spread entry is on (None when one
    cannot be found)."""
    line_of: dict[str, int] = {}
    for idx, (code, _) in enumerate(codes):
        body = code[code.index(opener) + 1:] if idx == 0 else code
        for part in body.split(","):
            k = _item_key(part.strip())
            if k in keys and k not in line_of:
                line_of[k] = idx
    return line_of if set(line_of) == keys else None


def respread(orig: list[str], new_line: str) -> list[str] | None:
    """The edited one-line flow entry ``new_line`` laid out over the operator's lines
    ``orig`` (the same entry spread over several): each item stays on the line it was
    on, a new item goes on the last line; a line whose items did not change is kept byte
    for byte, comments included. None when the lines cannot be matched up."""
    new = _split_flow(_code_comment(new_line)[0])  # ruamel moves a comment to the end
    if new is None or len(orig) < 2:
        return None
    head, items, close = new
    codes = [_code_comment(line) for line in orig]
    first = _split_flow(codes[0][0] + "".join(c for c, _ in codes[1:]))
    if first is None or _item_key(first[0].strip()) != _item_key(head.strip()):
        return None
    line_of = _lines_of_keys(codes, first[0][-1], {_item_key(it) for it in first[1]})
    if line_of is None:
        return None
    per_line: list[list[str]] = [[] for _ in orig]
    for it in items:
        per_line[line_of.get(_item_key(it), len(orig) - 1)].append(it)
    # the lines left with items (the first always: it holds the key); the last of them
    # closes the collection
    keep = [i for i, p in enumerate(per_line) if p or i == 0]
    out: list[str] = []
    for idx in keep:
        code, comment = codes[idx]
        lead = (code[: code.index(first[0][-1]) + 1] if idx == 0
                else code[: len(code) - len(code.lstrip(" "))])
        text = lead + ", ".join(per_line[idx]) + (close if idx == keep[-1] else ",")
        if text.rstrip() == code.rstrip():
            out.append(orig[idx])
        else:
            out.append(text + comment + "\n")
    return out


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
