"""ruamel's round trip of the inventory text, kept to the operator's own lines.

``merge_lines`` takes from ruamel's dump only the lines an edit changed; the comment
tails (``take_tail``/``put_tail``) move the comments that ruamel hangs on an entry's
last line along with that entry. Used by ``edit.py``; pure, text in and text out.
"""

from __future__ import annotations

import io
import re
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
    a flow collection over several lines, which ruamel dumps on one: such an entry (each
    one of several side by side) is kept as written when the edit leaves it alone, and
    an edited one-line dump is laid out again over the operator's lines (``respread``:
    a mapping's items by key, a sequence's by value and place)."""
    o = original.splitlines(keepends=True)
    b = base_dump.splitlines(keepends=True)
    n = new_dump.splitlines(keepends=True)
    to_orig, block = _map_base(o, b)
    out: list[str] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, b, n, autojunk=False).get_opcodes():
        whole = block.get(i1)
        if tag == "equal":
            out.extend(_kept(o, b, to_orig, block, i1, i2))
        elif (tag == "replace" and j2 - j1 == 1 < i2 - i1 and whole and whole[2:] == (i1, i2)
              and (spread := respread(o[whole[0]:whole[1]], n[j1])) is not None):
            out.extend(spread)  # an entry ruamel too wrote over lines, now on one
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
        whole = (i1, i2, j1, j2)
        parts = _split_block(o, b, whole) if tag == "replace" else [whole]
        for bl in parts:
            if tag == "equal" or bl[1] - bl[0] == bl[3] - bl[2] and (
                    bl == whole or bl[1] - bl[0] == 1):  # the same lines, or re-spaced
                for k in range(bl[3] - bl[2]):
                    to_orig[bl[2] + k] = bl[0] + k
            elif tag == "replace":
                for k in range(bl[2], bl[3]):
                    block[k] = bl
    return to_orig, block


def _split_block(o: list[str], b: list[str], whole: Block) -> list[Block]:
    """The original lines i1:i2 that ruamel dumped as base lines j1:j2, entry by entry.
    Entries spread over lines side by side (``macs: [a,`` ``b]`` then ``services: [c,``
    ``d]``) make one such block; an entry runs to the line where the brackets it opens
    close, on both sides (ruamel too writes a flow collection over lines when it holds
    a comment). When the lines do not add up: the whole block."""
    i1, i2, j1, j2 = whole
    out: list[Block] = []
    at, bt = i1, j1
    while at < i2 and bt < j2:
        span, bspan = _flow_span(o, at, i2), _flow_span(b, bt, j2)
        if span is None or bspan is None or _line_key(o[at]) != _line_key(b[bt]):
            return [whole]
        out.append((at, at + span, bt, bt + bspan))
        at, bt = at + span, bt + bspan
    return out if (at, bt) == (i2, j2) else [whole]


def _line_key(line: str) -> str:
    """``    macs: [a,`` -> ``macs``; ``  - [a,`` -> ``-``: what a line's entry is."""
    return re.split(r"[:\[{]", line, maxsplit=1)[0].strip()


def _flow_span(o: list[str], at: int, end: int) -> int | None:
    """How many lines from ``o[at]`` the entry there takes: up to the line where the
    brackets it opens close (comments and quoted text aside). None past ``end``."""
    br = _Brackets()
    for i in range(at, end):
        for c in _code_comment(o[i])[0]:
            br.step(c)
        if br.depth <= 0 and not br.quote:
            return i - at + 1
    return None


class _Brackets:
    """The bracket depth through flow text, character by character; quoted scalars are
    text (and a quote inside a plain scalar, as in ``don't``, opens none)."""

    def __init__(self) -> None:
        self.depth, self.quote, self.prev = 0, "", ":"

    def step(self, c: str) -> bool:
        """Take ``c``; True when it is structure: a bracket or a comma, not quoted."""
        if self.quote:
            self.quote = "" if c == self.quote else self.quote
            self.prev = c
            return False
        if c in "\"'" and self.prev in "[{,:":
            self.quote = c
        elif c in "{[" or c in "}]":
            self.depth += 1 if c in "{[" else -1
        self.prev = self.prev if c.isspace() else c
        return not self.quote and c in "{[}],"


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


def _unquoted(item: str) -> str:
    """A sequence item's identity: its text, the quotes of a quoted scalar aside (the
    operator's ``52:54:00:00:00:01`` is the dump's ``"52:54:00:00:00:01"``)."""
    t = item.strip()
    return t[1:-1] if len(t) > 1 and t[0] == t[-1] and t[0] in "\"'" else t


def _spread_items(codes: list[str]) -> tuple[str, list[tuple[str, int]], int] | None:
    """The flow collection that opens on the first of the lines ``codes`` (comments cut)
    and closes on the last: (the first line up to its opening bracket, each top-level
    item with the line it is on, the line holding the closing bracket). None when it is
    not one, or an item goes on over two lines (a nested collection spread too)."""
    start = next((i for i, c in enumerate(codes[0]) if c in "{["), None)
    if start is None:
        return None
    br, cur, on = _Brackets(), "", -1
    items: list[tuple[str, int]] = []
    for idx, code in enumerate(codes):
        for i in range(start if idx == 0 else 0, len(code)):
            c = code[i]
            if br.step(c) and (br.depth == 0 or (c == "," and br.depth == 1)):
                items += [(cur.strip(), on)] if cur.strip() else []
                cur, on = "", -1
                if br.depth == 0:  # closed: nothing may follow
                    rest = code[i + 1:] + "".join(codes[idx + 1:])
                    return (codes[0][:start + 1], items, idx) if not rest.strip() else None
            elif (idx, i) != (0, start):
                if not c.isspace() and on not in (-1, idx):
                    return None
                on = idx if not c.isspace() else on
                cur += c
    return None


def _lines_for(old: list[tuple[str, int]], new: list[str], ident: Any, last: int) -> list[int]:
    """The operator's line each item of the edited collection goes on: an unchanged item
    (same key, same sequence item) stays on its line, a changed one takes the place of the
    one it replaces, one added goes after the item before it (on the last line at the end)."""
    lines: list[int] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, [ident(t) for t, _ in old],
                                               [ident(t) for t in new],
                                               autojunk=False).get_opcodes():
        for j in range(j1, j2):
            if tag in ("equal", "replace") and i1 < i2:
                lines.append(old[min(i1 + j - j1, i2 - 1)][1])
            elif i1 >= len(old):
                lines.append(last)
            else:
                lines.append(old[i1 - 1][1] if i1 > 0 else old[0][1])
    return lines


def respread(orig: list[str], new_line: str) -> list[str] | None:
    """The edited one-line flow entry ``new_line`` laid out over the operator's lines
    ``orig`` (the same entry spread over several): each item stays on the line it was
    on (a mapping's by key, a sequence's by value and place), a new one goes after the
    item before it; a line whose items did not change is kept byte for byte, comments
    included. None when the lines cannot be matched up."""
    new = _split_flow(_code_comment(new_line)[0])  # ruamel moves a comment to the end
    if new is None or len(orig) < 2:
        return None
    head, items, close = new
    codes = [_code_comment(line) for line in orig]
    spread = _spread_items([c for c, _ in codes])
    if (spread is None or spread[2] != len(orig) - 1 or spread[0][-1] != head[-1]
            or _item_key(spread[0].strip()) != _item_key(head.strip())):
        return None
    old = spread[1]
    seq = head.endswith("[")
    ident = _unquoted if seq else _item_key
    last = len(orig) - 1
    was: list[list[str]] = [[t for t, on in old if on == i] for i in range(len(orig))]
    alone = not was[last]  # the operator closed the collection on a line of its own
    per_line: list[list[str]] = [[] for _ in orig]
    olds = {ident(t): t for t, _ in old}
    at_end = max((on for _, on in old), default=0)
    for it, on in zip(items, _lines_for(old, items, ident, at_end), strict=True):
        prev = olds.get(ident(it))
        same = prev is not None and (seq or prev.split() == it.split())
        per_line[on].append(prev if same and prev is not None else it)
    # the lines left with items (the first always: it holds the key, and the closing
    # line of its own); the last of them closes the collection
    keep = [i for i, p in enumerate(per_line) if p or i == 0 or (alone and i == last)]
    filled = [i for i in keep if per_line[i]]
    trail = "," if not alone or codes[at_end][0].rstrip().endswith(",") else ""
    out: list[str] = []
    for idx in keep:
        code, comment = codes[idx]
        if per_line[idx] == was[idx] and (idx == keep[-1]) == (idx == last):
            out.append(orig[idx])
            continue
        if seq and idx == keep[-1] and not comment:  # a sequence's comment is on it all
            comment = codes[-1][1]
        lead = (code[: code.index(head[-1]) + 1] if idx == 0
                else code[: len(code) - len(code.lstrip(" "))])
        end = (close if idx == keep[-1] else "" if not per_line[idx]
               else trail if idx == filled[-1] else ",")
        out.append(lead + ", ".join(per_line[idx]) + end + comment + "\n")
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
