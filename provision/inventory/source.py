"""The inventory's text: the file read within the size cap, UTF-8 checked, and parsed
by ruamel.yaml with the line numbers kept (``reader.Reader`` reports by them).

Every failure here is an ``InventoryError`` naming the file and, where known, the
line: a missing or unreadable file, one over the size cap, a byte that is not
UTF-8, YAML syntax, nesting or aliases past their limits. Duplicate keys are
collected as problems (all of them, each with both lines) for the translation to
add to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from .errors import InventoryError, Problem

DEFAULT_PATH = "/etc/dsas/cluster.yaml"
ENV_VAR = "DSAS_INVENTORY"
MAX_BYTES_ENV = "DSAS_INVENTORY_MAX_BYTES"
DEFAULT_MAX_BYTES = 4 << 20
# An inventory nests 5 levels deep (hosts.NAME.bond.arp_ip_target[i]); YAML's
# composer recurses per level, so 1,000 nested "[" used to raise RecursionError.
MAX_DEPTH = 64
# Nodes that aliases may stand for, in all (see _BoundedComposer).
MAX_ALIASED_NODES = 100_000


def resolve_path(explicit: str | os.PathLike[str] | None) -> Path:
    """--inventory, then $DSAS_INVENTORY, then /etc/dsas/cluster.yaml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(DEFAULT_PATH)


def size_cap() -> int:
    """The largest inventory accepted, in bytes: ``$DSAS_INVENTORY_MAX_BYTES`` or 4 MiB.

    A cluster of thousands of hosts is a few hundred kB; the cap keeps a wrong
    file (a disk image, a log) from costing seconds of CPU and hundreds of MB."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        cap = int(raw)
    except ValueError:
        cap = 0
    if cap < 1:
        raise InventoryError([Problem(f"${MAX_BYTES_ENV}", None, "",
                                      f"must be a positive number of bytes, not {raw[:40]!r}")])
    return cap


def read_bytes(path: str | os.PathLike[str], max_bytes: int | None = None) -> bytes:
    """The file's bytes, never more than the size cap (InventoryError past it)."""
    cap = size_cap() if max_bytes is None else max_bytes
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(cap + 1)  # never more: the file may be huge, or endless
    except FileNotFoundError:
        raise InventoryError([Problem(str(path), None, "", "no such file")]) from None
    except OSError as e:
        raise InventoryError([Problem(str(path), None, "", f"cannot read: {e}")]) from None
    if len(data) > cap:
        raise InventoryError([_too_big(str(path), max(size, len(data)), cap)])
    return data


def _too_big(filename: str, size: int, cap: int) -> Problem:
    return Problem(filename, None, "",
                   f"{_mib(size)} is over the {_mib(cap)} limit of an inventory "
                   f"(${MAX_BYTES_ENV} sets it)")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def decode(data: bytes, filename: str) -> str:
    """UTF-8 text, or an InventoryError naming the line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InventoryError([Problem(
            filename, line, "",
            f"not UTF-8: byte 0x{data[e.start]:02x} at column {column} ({e.reason})")]) from None


def check_size(text: str, filename: str, max_bytes: int | None = None) -> None:
    """InventoryError when ``text`` is over the size cap (in characters or UTF-8 bytes)."""
    cap = size_cap() if max_bytes is None else max_bytes
    if len(text) > cap or len(text.encode("utf-8", "surrogatepass")) > cap:
        raise InventoryError([_too_big(filename, len(text.encode("utf-8", "surrogatepass")),
                                       cap)])


def parse(text: str, filename: str) -> tuple[Any, list[Problem]]:
    """The YAML document of ``text`` (ruamel's round-trip types, which keep lines), and
    the duplicate keys found in it; InventoryError if it cannot be parsed at all."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = True  # reported below, with both lines
    yaml.Composer = _BoundedComposer
    try:
        tree = yaml.compose(text)
        data = yaml.constructor.construct_document(tree) if tree is not None else None
    except _Refused as e:
        raise InventoryError([Problem(filename, e.line, "", e.reason)]) from None
    except MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else None
        raise InventoryError([Problem(filename, line, "", f"YAML syntax: {e.problem}")]) from None
    except YAMLError as e:  # the reader's errors (e.g. a control character) carry no mark
        raise InventoryError([_unmarked(e, text, filename)]) from None
    except RecursionError:  # _BoundedComposer bounds the depth; this is the last line of defence
        raise InventoryError([Problem(filename, None, "", "nested too deeply to parse")]) from None
    return data, list(_duplicate_keys(tree, filename))


def _unmarked(e: YAMLError, text: str, filename: str) -> Problem:
    pos = getattr(e, "position", None)
    line = text.count("\n", 0, pos) + 1 if isinstance(pos, int) else None
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return Problem(filename, line, "", f"YAML: {reason}")


class _Refused(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(reason)
        self.line, self.reason = line, reason


class _BoundedComposer(Composer):
    """ruamel's composer, refusing, as it goes, collections nested deeper than
    MAX_DEPTH (it recurses per level: 1,000 nested "[" were a RecursionError) and
    aliases standing for more than MAX_ALIASED_NODES nodes in all ("billion laughs":
    an alias of a collection stands for all of its nodes, and the walks after
    composing visit each of them). It stops at the first node over a limit, so a
    hostile file costs little; the text is scanned once, as before."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.nesting = 0
        self.aliased = 0
        self.sizes: dict[int, int] = {}  # id(collection node) -> nodes it stands for

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.parser.peek_event()
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            self.aliased += self.sizes.get(id(node), 1)
            if self.aliased > MAX_ALIASED_NODES:
                raise _Refused(event.start_mark.line + 1,
                               f"aliases expand to more than {MAX_ALIASED_NODES} nodes "
                               "(an alias bomb?)")
            return node
        if not isinstance(event, CollectionStartEvent):
            return super().compose_node(parent, index)
        if self.nesting >= MAX_DEPTH:
            raise _Refused(event.start_mark.line + 1,
                           f"collections nested deeper than {MAX_DEPTH} levels")
        self.nesting += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self.nesting -= 1
        items = node.value if isinstance(node, SequenceNode) else \
            [x for pair in node.value for x in pair]
        self.sizes[id(node)] = 1 + sum(self.sizes.get(id(x), 1) for x in items)
        return node


def _duplicate_keys(node: Node | None, filename: str, path: str = "",
                    seen_nodes: set[int] | None = None) -> Iterable[Problem]:
    # An alias is the same node as its anchor: walk it once (a DAG, not a tree).
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if node is None or id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            key = str(k.value)
            sub = f"{path}.{key}" if path else key
            if key in seen:
                yield Problem(
                    filename,
                    k.start_mark.line + 1,
                    sub,
                    f"duplicate key (first defined on line {seen[key]})",
                )
            else:
                seen[key] = k.start_mark.line + 1
            yield from _duplicate_keys(v, filename, sub, seen_nodes)
    elif isinstance(node, SequenceNode):
        for i, v in enumerate(node.value):
            yield from _duplicate_keys(v, filename, f"{path}[{i}]", seen_nodes)
