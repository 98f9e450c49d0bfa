"""Load the inventory: loose YAML on disk -> typed, validated ``Inventory``.

Two steps, as in smee's file backend: ruamel.yaml parses the text keeping line
numbers, then ``_Builder`` translates each section into the dataclasses of
``model.py`` while collecting *every* problem (file, line, key path, reason).
Nothing half-valid ever leaves this module: either an ``Inventory`` or an
``InventoryError`` listing all problems.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import AliasEvent, CollectionStartEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from .errors import InventoryError, Problem
from .model import (
    BOND_MODES,
    BOOT_MODES,
    CHECK_TYPES,
    DISK_PARTS,
    FIRMWARES,
    FORWARDING,
    LOADERS,
    PROTOCOLS,
    SCHEDULERS,
    Bond,
    Cluster,
    HealthCheck,
    Host,
    HwType,
    Image,
    Inventory,
    IPv4Address,
    LvsPair,
    Module,
    Network,
    Partition,
    Role,
    VirtualService,
    normalize_mac,
)

DEFAULT_PATH = "/etc/dsas/cluster.yaml"
ENV_VAR = "DSAS_INVENTORY"
MAX_BYTES_ENV = "DSAS_INVENTORY_MAX_BYTES"
DEFAULT_MAX_BYTES = 4 << 20
# An inventory nests 5 levels deep (hosts.NAME.bond.arp_ip_target[i]); YAML's
# composer recurses per level, so 1,000 nested "[" used to raise RecursionError.
MAX_DEPTH = 64
# Nodes that aliases may stand for, in all (see _BoundedComposer).
MAX_ALIASED_NODES = 100_000

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|)$", re.IGNORECASE)
_DEVICE = re.compile(r"^/dev/[A-Za-z0-9/_.-]+$")
_NIC = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# Kernel command lines: no newlines, no shell or iPXE/pxelinux metacharacters.
_ARGS = re.compile(r"^[A-Za-z0-9_.,:=/+@%~-]*( [A-Za-z0-9_.,:=/+@%~-]+)*$")
_UNITS = {"": 1, "K": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


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


def load(path: str | os.PathLike[str] | None = None, max_bytes: int | None = None) -> Inventory:
    p = resolve_path(path)
    return load_bytes(read_bytes(p, max_bytes), str(p), max_bytes)


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


def load_bytes(data: bytes, filename: str, max_bytes: int | None = None) -> Inventory:
    """The inventory in ``data`` (the bytes of ``filename``), UTF-8 checked with its line."""
    return loads(_decode(data, filename), filename, max_bytes=max_bytes)


def _too_big(filename: str, size: int, cap: int) -> Problem:
    return Problem(filename, None, "",
                   f"{_mib(size)} is over the {_mib(cap)} limit of an inventory "
                   f"(${MAX_BYTES_ENV} sets it)")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def _decode(data: bytes, filename: str) -> str:
    """UTF-8 text, or an InventoryError naming the line and column of the first bad byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise InventoryError([Problem(
            filename, line, "",
            f"not UTF-8: byte 0x{data[e.start]:02x} at column {column} ({e.reason})")]) from None


def loads(text: str, filename: str = "<inventory>", max_bytes: int | None = None) -> Inventory:
    cap = size_cap() if max_bytes is None else max_bytes
    if len(text) > cap or len(text.encode("utf-8", "surrogatepass")) > cap:
        raise InventoryError([_too_big(filename, len(text.encode("utf-8", "surrogatepass")),
                                       cap)])
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
        pos = getattr(e, "position", None)
        line = text.count("\n", 0, pos) + 1 if isinstance(pos, int) else None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InventoryError([Problem(filename, line, "", f"YAML: {reason}")]) from None
    except RecursionError:  # _BoundedComposer bounds the depth; this is the last line of defence
        raise InventoryError([Problem(filename, None, "", "nested too deeply to parse")]) from None
    problems = list(_duplicate_keys(tree, filename))
    b = _Builder(filename, problems)
    inv = b.build(data)
    if b.problems or inv is None:
        raise InventoryError(b.problems)
    return inv


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


class _Builder:
    """Translate the loose tree into model objects, collecting problems."""

    def __init__(self, filename: str, problems: list[Problem]):
        self.file = filename
        self.problems = problems
        self.fallback_line: int | None = None  # line of the entry being translated
        self.declared_pairs: set[str] = set()
        self.data: dict[str, Any] = {}
        # Declared but not built (their own problem is reported): what refers to them
        # is not reported again, and is not built either (see ``unknown``).
        self.broken: dict[str, set[str]] = {}
        self.tainted = False  # the entry being translated refers to something broken
        self.bad_vlan: set[str] = set()  # networks whose VLAN id was refused

    # -- reporting ----------------------------------------------------------

    def err(self, parent: Any, key: Any, path: str, reason: str) -> None:
        line = _line(parent, key) or self.fallback_line
        self.problems.append(Problem(self.file, line, path, reason))

    def unknown(self, parent: Any, key: Any, path: str, what: str, name: Any) -> None:
        """``name`` is no known ``what``: an error, unless it was declared and refused
        for its own problem (reported once, there); then the entry that refers to it
        is left out silently, and so are the entries that refer to that one."""
        if str(name) in self.broken.get(what, ()):
            self.tainted = True
            return
        self.err(parent, key, path, f"unknown {what} {name!r}")

    def start_entry(self, section: Any, name: Any) -> None:
        self.fallback_line = _line(section, name)
        self.tainted = False

    def mark_broken(self, what: str, section: Any, built: dict[str, Any]) -> None:
        self.broken[what] = {str(n) for n in (section or {}) if str(n) not in built}

    # -- typed getters ------------------------------------------------------

    def mapping(
        self,
        parent: Any,
        key: Any,
        path: str,
        allowed: Iterable[str] | None = None,
        required: Iterable[str] = (),
        optional: bool = False,
    ) -> dict[str, Any] | None:
        value = parent.get(key) if isinstance(parent, dict) else None
        if value is None:
            if not optional:
                self.err(parent, key, path, "missing (a mapping is required)")
            return None
        if not isinstance(value, dict):
            self.err(parent, key, path, f"must be a mapping, not {_kind(value)}")
            return None
        if allowed is not None:
            allowed = set(allowed)
            for k in value:
                if str(k) not in allowed:
                    self.err(
                        value,
                        k,
                        f"{path}.{k}",
                        "unknown key (allowed: " + ", ".join(sorted(allowed)) + ")",
                    )
        for r in required:
            if value.get(r) is None:
                self.err(parent, key, f"{path}.{r}", "missing required key")
        return value

    def string(
        self,
        m: dict[str, Any],
        key: str,
        path: str,
        default: str | None = None,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        v = m.get(key)
        if v is None:
            return default
        if not isinstance(v, str | int) or isinstance(v, bool):
            self.err(m, key, f"{path}.{key}", f"must be a string, not {_kind(v)}")
            return default
        s = str(v)
        if pattern is not None and not pattern.match(s):
            self.err(m, key, f"{path}.{key}", f"invalid {what or key} {s!r}")
            return default
        return s

    def choice(
        self, m: dict[str, Any], key: str, path: str, choices: Iterable[str], default: str
    ) -> str:
        v = m.get(key)
        if v is None:
            return default
        choices = tuple(choices)
        if str(v) not in choices:
            self.err(m, key, f"{path}.{key}", f"{v!r} is not one of: {', '.join(choices)}")
            return default
        return str(v)

    def integer(
        self, m: dict[str, Any], key: str, path: str, lo: int, hi: int, default: int | None
    ) -> int | None:
        v = m.get(key)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(m, key, f"{path}.{key}", f"must be an integer, not {_kind(v)}")
            return default
        if not lo <= v <= hi:
            self.err(m, key, f"{path}.{key}", f"{v} is outside {lo}-{hi}")
            return default
        return int(v)

    def address(self, m: Any, key: Any, path: str) -> IPv4Address | None:
        v = m.get(key) if isinstance(m, dict) else m[key]
        if v is None:
            return None
        try:
            return IPv4Address(str(v))
        except ValueError:
            self.err(m, key, path, f"malformed IPv4 address {v!r}")
            return None

    def seq(self, m: dict[str, Any], key: str, path: str, required: bool = False) -> list[Any]:
        v = m.get(key)
        if v is None:
            if required:
                self.err(m, key, f"{path}.{key}", "missing required list")
            return []
        if isinstance(v, str):
            return [v]
        if not isinstance(v, list):
            self.err(m, key, f"{path}.{key}", f"must be a list, not {_kind(v)}")
            return []
        return list(v)

    def names(
        self, m: dict[str, Any], key: str, path: str, known: dict[str, Any], what: str
    ) -> tuple[str, ...]:
        out = []
        items = self.seq(m, key, path)
        for i, n in enumerate(items):
            n = str(n)
            if n not in known:
                self.unknown(m.get(key), i, f"{path}.{key}[{i}]", what, n)
            else:
                out.append(n)
        return tuple(out)

    def modules(self, m: dict[str, Any], key: str, path: str) -> tuple[Module, ...]:
        out = []
        items = self.seq(m, key, path)
        for i, item in enumerate(items):
            sub = f"{path}.{key}[{i}]"
            if isinstance(item, str):
                name, _, opts = item.strip().partition(" ")
            elif isinstance(item, dict):
                mm = self.mapping(m.get(key), i, sub, {"name", "options"}, ("name",))
                if not mm or mm.get("name") is None:
                    continue
                name, opts = str(mm["name"]), str(mm.get("options") or "")
            else:
                self.err(m.get(key), i, sub, "must be a module name or {name, options}")
                continue
            if not re.match(r"^[A-Za-z0-9_-]+$", name):
                self.err(m.get(key), i, sub, f"invalid module name {name!r}")
                continue
            if "\n" in opts or not _ARGS.match(opts.strip()):
                self.err(m.get(key), i, sub, "module options contain forbidden characters")
                continue
            out.append(Module(name, opts.strip()))
        return tuple(out)

    def kernel_args(self, m: dict[str, Any], path: str) -> str:
        v = m.get("kernel_args")
        if v is None:
            return ""
        s = str(v)
        if "\n" in s or "\r" in s or not _ARGS.match(s.strip()):
            self.err(
                m,
                "kernel_args",
                f"{path}.kernel_args",
                "newlines and shell metacharacters are not allowed in kernel command lines",
            )
            return ""
        return s.strip()

    # -- sections -----------------------------------------------------------

    def build(self, data: Any) -> Inventory | None:
        if not isinstance(data, dict):
            self.problems.append(
                Problem(self.file, 1, "", "the inventory must be a YAML mapping")
            )
            return None
        self.data = data
        top = {"cluster", "networks", "hwtypes", "images", "services", "roles", "hosts",
               "virtual_services", "lvs_pairs"}
        root = {"": data}
        self.mapping(root, "", "", top, ("cluster", "networks", "roles", "hosts"))
        networks = self.networks(data)
        hwtypes = self.hwtypes(data)
        images = self.images(data)
        services = self.services(data)
        roles = self.roles(data, networks, hwtypes, images, services)
        hosts = self.hosts(data, networks, hwtypes, images, roles, services)
        cluster = self.cluster(data, networks, hosts)
        pairs = self.lvs_pairs(data, hosts, networks)
        vss = self.virtual_services(data, roles, hosts, pairs)
        self.cross_checks(networks, hosts, vss, pairs, roles)
        self.lvs_checks(networks, hosts, vss, pairs)
        if cluster is not None and cluster.master_address6 is None:
            for h in hosts.values():
                if h.netboot6:
                    hm = (data.get("hosts") or {}).get(h.name) or {}
                    self.err(hm, "netboot6", f"hosts.{h.name}.netboot6",
                             "netboot6 needs cluster.master_address6 (the master's IPv6 "
                             "address, which its boot files name)")
            if any(h.netboot6 for h in hosts.values()):
                return None
        if cluster is None:
            return None
        return Inventory(self.file, cluster, networks, hwtypes, images, roles, hosts, vss, pairs,
                         services)

    def cluster(
        self, data: dict[str, Any], networks: dict[str, Network], hosts: dict[str, Host]
    ) -> Cluster | None:
        allowed = {"name", "domain", "master_address", "master_address6", "masters",
                   "http_port", "kernel_args", "templates"}
        c = self.mapping(data, "cluster", "cluster", allowed,
                         ("name", "domain", "master_address", "masters"))
        if c is None:
            return None
        name = self.string(c, "name", "cluster", pattern=_LABEL, what="cluster name")
        domain = self.string(c, "domain", "cluster", pattern=_DOMAIN, what="DNS domain")
        master = self.address(c, "master_address", "cluster.master_address")
        if master is not None and networks and not self.broken.get("network") \
                and not any(master in n.cidr for n in networks.values()):
            self.err(c, "master_address", "cluster.master_address",
                     f"{master} is in no network of the inventory")
        ms = self.mapping(c, "masters", "cluster.masters", {"primary", "secondary"}, ("primary",))
        primary = secondary = None
        if ms is not None:
            for key in ("primary", "secondary"):
                v = ms.get(key)
                if v is not None and str(v) not in hosts:
                    self.unknown(ms, key, f"cluster.masters.{key}", "host", v)
            primary = str(ms.get("primary")) if ms.get("primary") else None
            secondary = str(ms["secondary"]) if ms.get("secondary") else None
        port = self.integer(c, "http_port", "cluster", 1, 65535, 80)
        templates = self.string(c, "templates", "cluster")
        master6 = self.master_address6(c, networks)
        if not (name and domain and master and primary and port):
            return None
        return Cluster(name, domain, master, primary, secondary, port,
                       self.kernel_args(c, "cluster"), templates, master6)

    def master_address6(self, c: dict[str, Any],
                        networks: dict[str, Network]) -> ipaddress.IPv6Address | None:
        """cluster.master_address6: the master's address on an inventory IPv6 prefix."""
        v = c.get("master_address6")
        if v is None:
            return None
        path = "cluster.master_address6"
        try:
            a = ipaddress.IPv6Address(str(v))
        except ValueError:
            self.err(c, "master_address6", path, f"malformed IPv6 address {v!r}")
            return None
        if networks and not self.broken.get("network") and not any(
                n.ipv6 is not None and a in n.ipv6 for n in networks.values()):
            self.err(c, "master_address6", path, f"{a} is in no network's ipv6 prefix")
            return None
        return a

    def networks(self, data: dict[str, Any]) -> dict[str, Network]:
        section = self.mapping(data, "networks", "networks", optional=False)
        out: dict[str, Network] = {}
        for name, _ in (section or {}).items():
            path = f"networks.{name}"
            self.start_entry(section, name)
            n = self.mapping(section, name, path,
                             {"cidr", "gateway", "vlan", "dns", "mtu", "ipv6", "gateway6"},
                             ("cidr",))
            if n is None:
                continue
            if not _LABEL.match(str(name)):
                self.err(section, name, path, "network names must be DNS labels")
            try:
                cidr = ipaddress.IPv4Network(str(n.get("cidr")), strict=True)
            except ValueError as e:
                if n.get("cidr") is not None:
                    self.err(n, "cidr", f"{path}.cidr", f"malformed network: {e}")
                continue
            gw = self.address(n, "gateway", f"{path}.gateway")
            if gw is not None:
                self._check_in_network(n, "gateway", f"{path}.gateway", gw, cidr)
            before = len(self.problems)
            vlan = self.integer(n, "vlan", path, 1, 4094, None)
            if len(self.problems) > before:
                self.bad_vlan.add(str(name))
            dns = []
            dns_list = self.seq(n, "dns", path)
            for i, _ in enumerate(dns_list):
                a = self.address(dns_list, i, f"{path}.dns[{i}]")
                if a is not None:
                    dns.append(a)
            mtu = self.integer(n, "mtu", path, 576, 9216, None)
            ipv6 = None
            if n.get("ipv6") is not None:
                try:
                    ipv6 = ipaddress.IPv6Network(str(n["ipv6"]), strict=True)
                except ValueError as e:
                    self.err(n, "ipv6", f"{path}.ipv6", f"malformed IPv6 prefix: {e}")
                else:
                    if ipv6.prefixlen > 124:
                        self.err(n, "ipv6", f"{path}.ipv6",
                                 f"prefix {ipv6} is too long for hosts (at most /124)")
            gw6 = None
            if n.get("gateway6") is not None:
                try:
                    gw6 = ipaddress.IPv6Address(str(n["gateway6"]))
                except ValueError:
                    self.err(n, "gateway6", f"{path}.gateway6",
                             f"malformed IPv6 address {n['gateway6']!r}")
                else:
                    if ipv6 is None or gw6 not in ipv6:
                        self.err(n, "gateway6", f"{path}.gateway6",
                                 f"{gw6} is not on the network's ipv6 prefix ({ipv6})")
            out[str(name)] = Network(str(name), cidr, gw, vlan, tuple(dns), mtu, ipv6, gw6)
        self.mark_broken("network", section, out)
        nets = list(out.values())
        for i, na in enumerate(nets):
            for nb in nets[i + 1 :]:
                if na.cidr.overlaps(nb.cidr):
                    self.err(section, nb.name, f"networks.{nb.name}.cidr",
                             f"{nb.cidr} overlaps network {na.name} ({na.cidr})")
                if na.ipv6 is not None and nb.ipv6 is not None and na.ipv6.overlaps(nb.ipv6):
                    self.err(section, nb.name, f"networks.{nb.name}.ipv6",
                             f"{nb.ipv6} overlaps network {na.name} ({na.ipv6})")
        return out

    def _check_in_network(
        self, m: Any, key: Any, path: str, addr: IPv4Address, cidr: ipaddress.IPv4Network
    ) -> bool:
        if addr not in cidr:
            self.err(m, key, path, f"{addr} is outside its network {cidr}")
            return False
        if cidr.prefixlen < 31 and addr in (cidr.network_address, cidr.broadcast_address):
            kind = "network" if addr == cidr.network_address else "broadcast"
            self.err(m, key, path, f"{addr} is the {kind} address of {cidr}")
            return False
        return True

    def hwtypes(self, data: dict[str, Any]) -> dict[str, HwType]:
        section = self.mapping(data, "hwtypes", "hwtypes", optional=True) or {}
        out: dict[str, HwType] = {}
        for name in section:
            path = f"hwtypes.{name}"
            self.start_entry(section, name)
            h = self.mapping(section, name, path, {"nics", "disk", "modules", "firmware"},
                             ("nics",))
            if h is None:
                continue
            nics = []
            nic_list = self.seq(h, "nics", path, required=True)
            for i, nic in enumerate(nic_list):
                if not _NIC.match(str(nic)):
                    self.err(nic_list, i, f"{path}.nics[{i}]", f"invalid interface name {nic!r}")
                elif str(nic) in nics:
                    self.err(nic_list, i, f"{path}.nics[{i}]", f"{nic} is listed twice")
                else:
                    nics.append(str(nic))
            disk_dev, label, parts = None, "gpt", []
            d = self.mapping(h, "disk", f"{path}.disk",
                             {"device", "label", *DISK_PARTS}, optional=True)
            if d is not None:
                disk_dev = self.string(d, "device", f"{path}.disk", pattern=_DEVICE,
                                       what="device")
                label = self.choice(d, "label", f"{path}.disk", ("gpt", "msdos"), "gpt")
                rest_seen = False
                for part in DISK_PARTS:
                    pp = self.partition(d, part, f"{path}.disk.{part}")
                    if pp is None:
                        continue
                    if pp.size_mib is None:
                        if rest_seen:
                            self.err(d, part, f"{path}.disk.{part}.size",
                                     "only one partition may take the rest of the disk")
                        rest_seen = True
                    parts.append(pp)
                devs = [p.device for p in parts]
                for p in parts:
                    if devs.count(p.device) > 1:
                        self.err(d, p.part, f"{path}.disk.{p.part}.device",
                                 f"{p.device} is used by more than one partition")
            mods = self.modules(h, "modules", path)
            firmware = []
            fw_list = self.seq(h, "firmware", path)
            for i, fw in enumerate(fw_list):
                if str(fw) not in FIRMWARES:
                    self.err(fw_list, i, f"{path}.firmware[{i}]",
                             f"{fw!r} is not one of: {', '.join(FIRMWARES)}")
                elif str(fw) not in firmware:
                    firmware.append(str(fw))
            out[str(name)] = HwType(str(name), tuple(nics), disk_dev, label, tuple(parts), mods,
                                    tuple(firmware) if fw_list else FIRMWARES)
        self.mark_broken("hardware type", section, out)
        return out

    def partition(self, d: dict[str, Any], part: str, path: str) -> Partition | None:
        p = self.mapping(d, part, path, {"device", "size", "fstype", "mount"}, ("device", "size"),
                         optional=True)
        if p is None:
            return None
        dev = self.string(p, "device", path, pattern=_DEVICE, what="device")
        size = _parse_size(p.get("size"))
        if size is False:
            self.err(p, "size", f"{path}.size",
                     f"invalid size {p.get('size')!r} (use e.g. 512M, 20G or 'rest')")
        default_fs = {"boot": "ext4", "swap": "swap", "db": "ext4", "fs": "ext4"}[part]
        fstype = self.choice(p, "fstype", path, ("ext4", "ext3", "ext2", "xfs", "vfat", "swap"),
                             default_fs)
        if (part == "swap") != (fstype == "swap"):
            self.err(p, "fstype", f"{path}.fstype", "only the swap partition may be swap")
        default_mount = {"boot": "/boot", "swap": None, "db": "/var/lib/db", "fs": "/srv"}[part]
        mount = self.string(p, "mount", path, default=default_mount,
                            pattern=re.compile(r"^/[A-Za-z0-9/_.-]*$"), what="mount point")
        if dev is None or size is False:
            return None
        return Partition(part, dev, size, fstype, mount if part != "swap" else None)

    def images(self, data: dict[str, Any]) -> dict[str, Image]:
        section = self.mapping(data, "images", "images", optional=True) or {}
        out = {}
        for name in section:
            path = f"images.{name}"
            self.start_entry(section, name)
            m = self.mapping(section, name, path, {"version", "kernel_args"})
            if m is None:
                continue
            version = self.string(m, "version", path, default="current",
                                  pattern=re.compile(r"^[A-Za-z0-9._-]+$"), what="version")
            out[str(name)] = Image(str(name), version or "current", self.kernel_args(m, path))
        self.mark_broken("image", section, out)
        return out

    def services(self, data: dict[str, Any]) -> dict[str, tuple[str, ...]]:
        section = self.mapping(data, "services", "services", optional=True) or {}
        out = {}
        for name in section:
            path = f"services.{name}"
            self.start_entry(section, name)
            m = self.mapping(section, name, path, {"units", "description"}, optional=True)
            units = tuple(str(u) for u in self.seq(m, "units", path)) if m else ()
            for i, u in enumerate(units):
                if not re.match(r"^[A-Za-z0-9@_.-]+$", u):
                    self.err(m.get("units") if m else section, i, f"{path}.units[{i}]",
                             f"invalid unit name {u!r}")
            out[str(name)] = units or (str(name),)
        return out

    def bond(self, m: dict[str, Any], path: str, base: Bond) -> Bond:
        b = self.mapping(m, "bond", f"{path}.bond",
                         {"mode", "miimon", "primary", "arp_ip_target", "arp_interval"},
                         optional=True)
        if b is None:
            return base
        mode = self.choice(b, "mode", f"{path}.bond", BOND_MODES, base.mode)
        miimon = self.integer(b, "miimon", f"{path}.bond", 0, 60000, base.miimon)
        primary = self.string(b, "primary", f"{path}.bond", default=base.primary, pattern=_NIC,
                              what="interface")
        targets = list(base.arp_ip_target)
        if b.get("arp_ip_target") is not None:
            targets = []
            tl = self.seq(b, "arp_ip_target", f"{path}.bond")
            for i, _ in enumerate(tl):
                a = self.address(tl, i, f"{path}.bond.arp_ip_target[{i}]")
                if a is not None:
                    targets.append(a)
            if len(targets) > 16:
                self.err(b, "arp_ip_target", f"{path}.bond.arp_ip_target",
                         "the bonding driver takes at most 16 targets")
        interval = self.integer(b, "arp_interval", f"{path}.bond", 0, 60000, base.arp_interval)
        if targets and not interval:
            interval = 1000
        if targets and b.get("miimon") is not None and miimon:
            self.err(b, "miimon", f"{path}.bond.miimon",
                     "miimon and arp_ip_target exclude each other; use one link monitor")
        if targets:
            miimon = 0
        return Bond(mode, miimon or 0, primary, tuple(targets), interval or 0)

    def roles(
        self,
        data: dict[str, Any],
        networks: dict[str, Network],
        hwtypes: dict[str, HwType],
        images: dict[str, Image],
        services: dict[str, tuple[str, ...]],
    ) -> dict[str, Role]:
        section = self.mapping(data, "roles", "roles") or {}
        out = {}
        allowed = {"services", "networks", "boot", "image", "loader", "hwtype", "bond", "modules",
                   "kernel_args"}
        for name in section:
            path = f"roles.{name}"
            self.start_entry(section, name)
            m = self.mapping(section, name, path, allowed, ("networks",))
            if m is None:
                continue
            svcs = self.names(m, "services", path, services, "service")
            nets = self.names(m, "networks", path, networks, "network")
            # A host joins its role's networks over one bond: each needs its own VLAN id
            # (networks on other segments, e.g. behind a DHCP relay, may reuse ids).
            seen_vlan: dict[int | None, str] = {}
            for i, n in enumerate(nets):
                if n in self.bad_vlan:  # its VLAN id was refused: no claim about it
                    continue
                vlan = networks[n].vlan
                if vlan in seen_vlan:
                    tag = f"VLAN {vlan}" if vlan else "untagged"
                    self.err(m.get("networks"), i, f"{path}.networks[{i}]",
                             f"{n} and {seen_vlan[vlan]} are both {tag}; the networks of a "
                             "role need distinct VLAN ids")
                seen_vlan[vlan] = n
            if m.get("networks") is not None and not nets and not self.seq(m, "networks", path):
                self.err(m, "networks", f"{path}.networks", "a role joins at least one network")
            image = self.string(m, "image", path)
            if image is not None and image not in images:
                self.unknown(m, "image", f"{path}.image", "image", image)
            hw = self.string(m, "hwtype", path)
            if hw is not None and hw not in hwtypes:
                self.unknown(m, "hwtype", f"{path}.hwtype", "hardware type", hw)
            if self.tainted:
                continue
            out[str(name)] = Role(
                str(name),
                svcs,
                nets,
                self.choice(m, "boot", path, BOOT_MODES, "netboot"),
                image,
                self.choice(m, "loader", path, LOADERS, "ipxe"),
                hw,
                self.bond(m, path, Bond()),
                self.modules(m, "modules", path),
                self.kernel_args(m, path),
            )
        self.mark_broken("role", section, out)
        return out

    def hosts(
        self,
        data: dict[str, Any],
        networks: dict[str, Network],
        hwtypes: dict[str, HwType],
        images: dict[str, Image],
        roles: dict[str, Role],
        services: dict[str, tuple[str, ...]],
    ) -> dict[str, Host]:
        section = self.mapping(data, "hosts", "hosts") or {}
        out: dict[str, Host] = {}
        allowed = {"role", "macs", "addresses", "addresses6", "hwtype", "bond", "boot", "image",
                   "loader", "kernel_args", "services", "netboot6"}
        seen_ip6: dict[ipaddress.IPv6Address, str] = {}
        seen_mac: dict[str, str] = {}
        seen_ip: dict[IPv4Address, str] = {}
        for name in section:
            path = f"hosts.{name}"
            self.start_entry(section, name)
            m = self.mapping(section, name, path, allowed, ("role", "macs", "addresses"))
            if m is None:
                continue
            if not _LABEL.match(str(name)):
                self.err(section, name, path, "host names must be lower-case DNS labels")
            role_name = self.string(m, "role", path)
            role = roles.get(role_name or "")
            if role_name is not None and role is None:
                self.unknown(m, "role", f"{path}.role", "role", role_name)
            hw_name = self.string(m, "hwtype", path) or (role.hwtype if role else None)
            hw = hwtypes.get(hw_name or "")
            if hw_name is None:
                if role is not None:
                    self.err(m, "hwtype", f"{path}.hwtype",
                             "missing: set hwtype on the host or on its role")
            elif hw is None:
                self.unknown(m, "hwtype", f"{path}.hwtype", "hardware type", hw_name)
            macs = []
            mac_list = self.seq(m, "macs", path, required=False)
            for i, raw in enumerate(mac_list):
                try:
                    mac = normalize_mac(str(raw))
                except ValueError as e:
                    self.err(mac_list, i, f"{path}.macs[{i}]", str(e))
                    continue
                if mac in seen_mac:
                    self.err(mac_list, i, f"{path}.macs[{i}]",
                             f"MAC {mac} is already used by host {seen_mac[mac]}")
                seen_mac[mac] = str(name)
                macs.append(mac)
            addrs: dict[str, IPv4Address] = {}
            am = self.mapping(m, "addresses", f"{path}.addresses")
            for net_name in am or {}:
                apath = f"{path}.addresses.{net_name}"
                net = networks.get(str(net_name))
                if net is None:
                    self.unknown(am, net_name, apath, "network", net_name)
                    continue
                a = self.address(am, net_name, apath)
                if a is None:
                    continue
                if not self._check_in_network(am, net_name, apath, a, net.cidr):
                    continue
                if net.gateway == a:
                    self.err(am, net_name, apath, f"{a} is the gateway of network {net.name}")
                if a in seen_ip:
                    self.err(am, net_name, apath, f"{a} is already used by host {seen_ip[a]}")
                seen_ip[a] = str(name)
                addrs[str(net_name)] = a
            addrs6 = self.addresses6(m, path, networks, seen_ip6, str(name))
            if role is None or hw is None:
                continue
            for net_name in addrs6:
                if net_name not in role.networks:
                    self.err(m["addresses6"], net_name, f"{path}.addresses6.{net_name}",
                             f"role {role.name} does not join network {net_name}")
            for net_name in role.networks:
                if net_name not in addrs and am is not None and net_name not in am:
                    self.err(m, "addresses", f"{path}.addresses.{net_name}",
                             f"missing: role {role.name} joins network {net_name}")
            for net_name in addrs:
                if net_name not in role.networks:
                    self.err(am, net_name, f"{path}.addresses.{net_name}",
                             f"role {role.name} does not join network {net_name}")
            if len(macs) != len(hw.nics) and len(mac_list) == len(macs):
                self.err(m, "macs", f"{path}.macs",
                         f"{len(macs)} MACs for hardware type {hw.name}, which has "
                         f"{len(hw.nics)} NICs ({', '.join(hw.nics)})")
                continue
            bond = self.bond(m, path, role.bond)
            need = BOND_MODES[bond.mode]
            if len(hw.nics) < need:
                self.err(m, "bond" if "bond" in m else "hwtype", f"{path}.bond.mode",
                         f"bond mode {bond.mode} needs at least {need} NICs; hardware type "
                         f"{hw.name} has {len(hw.nics)}")
            if bond.primary and bond.primary not in hw.nics:
                self.err(m, "bond" if "bond" in m else "role", f"{path}.bond.primary",
                         f"primary {bond.primary} is not a NIC of hardware type {hw.name} "
                         f"({', '.join(hw.nics)})")
            image = self.string(m, "image", path) or role.image
            if image is not None and image not in images:
                self.unknown(m, "image", f"{path}.image", "image", image)
            extra = self.names(m, "services", path, services, "service")
            loader = self.choice(m, "loader", path, LOADERS, role.loader)
            if loader == "grub-secure" and "uefi" not in hw.firmware:
                where = "loader" if "loader" in m else "role"
                self.err(m, where, f"{path}.loader",
                         f"loader grub-secure (Secure Boot through shim) needs UEFI; hardware "
                         f"type {hw.name} boots only {', '.join(hw.firmware)}")
            netboot6 = m.get("netboot6", False)
            if not isinstance(netboot6, bool):
                self.err(m, "netboot6", f"{path}.netboot6",
                         f"must be true or false, not {_kind(netboot6)}")
                netboot6 = False
            if netboot6 and role.networks and role.networks[0] not in addrs6:
                self.err(m, "netboot6", f"{path}.netboot6",
                         f"netboot6 needs an addresses6 on the boot network {role.networks[0]}")
            if len(addrs) != len(role.networks) or len(macs) != len(hw.nics) or self.tainted:
                continue
            out[str(name)] = Host(
                name=str(name),
                role=role,
                hwtype=hw,
                macs=tuple(macs),
                addresses=addrs,
                bond=bond,
                boot=self.choice(m, "boot", path, BOOT_MODES, role.boot),
                image=image,
                loader=loader,
                kernel_args=" ".join(x for x in (role.kernel_args, self.kernel_args(m, path)) if x),
                services=tuple(dict.fromkeys(role.services + extra)),
                networks_in_order=tuple(networks[n] for n in role.networks),
                addresses6=addrs6,
                netboot6=netboot6,
            )
        self.mark_broken("host", section, out)
        return out

    def addresses6(self, m: dict[str, Any], path: str, networks: dict[str, Network],
                   seen: dict[ipaddress.IPv6Address, str],
                   host: str) -> dict[str, ipaddress.IPv6Address]:
        """A host's IPv6 addresses (network -> address), each on its network's prefix."""
        out: dict[str, ipaddress.IPv6Address] = {}
        am = self.mapping(m, "addresses6", f"{path}.addresses6", optional=True)
        for net_name in am or {}:
            apath = f"{path}.addresses6.{net_name}"
            net = networks.get(str(net_name))
            if net is None:
                self.err(am, net_name, apath, f"unknown network {net_name!r}")
                continue
            try:
                a = ipaddress.IPv6Address(str(am[net_name]))  # type: ignore[index]
            except ValueError:
                self.err(am, net_name, apath, f"malformed IPv6 address {am[net_name]!r}")  # type: ignore[index]
                continue
            if net.ipv6 is None:
                self.err(am, net_name, apath, f"network {net.name} has no ipv6 prefix")
                continue
            if a not in net.ipv6 or a == net.ipv6.network_address:
                self.err(am, net_name, apath, f"{a} is not a host address of {net.ipv6}")
                continue
            if a in seen:
                self.err(am, net_name, apath, f"{a} is already used by host {seen[a]}")
            seen[a] = host
            out[str(net_name)] = a
        return out

    def lvs_pairs(
        self, data: dict[str, Any], hosts: dict[str, Host], networks: dict[str, Network]
    ) -> dict[str, LvsPair]:
        section = self.mapping(data, "lvs_pairs", "lvs_pairs", optional=True) or {}
        self.declared_pairs = {str(n) for n in section}
        out = {}
        allowed = {"hosts", "virtual_router_id", "priority", "auth", "advert_int", "gateway_vips",
                   "preempt", "preempt_delay"}
        for name in section:
            path = f"lvs_pairs.{name}"
            self.start_entry(section, name)
            m = self.mapping(section, name, path, allowed, ("hosts", "virtual_router_id"))
            if m is None:
                continue
            hm = self.mapping(m, "hosts", f"{path}.hosts") or {}
            active, backup = [], []
            for h, state in hm.items():
                if str(h) not in hosts:
                    self.unknown(hm, h, f"{path}.hosts.{h}", "host", h)
                if state == "active":
                    active.append(str(h))
                elif state == "backup":
                    backup.append(str(h))
                else:
                    self.err(hm, h, f"{path}.hosts.{h}", f"state must be active or backup, not "
                             f"{state!r}")
            if len(active) != 1:
                self.err(m, "hosts", f"{path}.hosts",
                         f"an LVS pair needs exactly one active host, found {len(active)}")
            if not backup:
                self.err(m, "hosts", f"{path}.hosts",
                         "an LVS pair needs at least one backup host, found 0")
            vrid = self.integer(m, "virtual_router_id", path, 1, 255, None)
            pr = self.mapping(m, "priority", f"{path}.priority", {"active", "backup"},
                              optional=True) or {}
            pa = self.integer(pr, "active", f"{path}.priority", 1, 254, 150) or 150
            pb = self.integer(pr, "backup", f"{path}.priority", 1, 254, 100) or 100
            if pa <= pb:
                self.err(m, "priority", f"{path}.priority",
                         f"the active priority ({pa}) must be higher than the backup's ({pb})")
            if len(backup) > 1 and pb - (len(backup) - 1) < 1:
                self.err(m, "priority", f"{path}.priority",
                         f"{len(backup)} backups need priorities {pb} down to "
                         f"{pb - len(backup) + 1}; raise the backup priority")
            au = self.mapping(m, "auth", f"{path}.auth", {"type", "password"}, optional=True)
            auth_type = auth_pass = None
            if au is not None:
                auth_type = self.choice(au, "type", f"{path}.auth", ("PASS", "AH"), "PASS")
                auth_pass = self.string(au, "password", f"{path}.auth",
                                        pattern=re.compile(r"^[!-~]{1,8}$"),
                                        what="password (1-8 printable characters, VRRP limit)")
                if auth_pass is None and au.get("password") is None:
                    self.err(au, "password", f"{path}.auth.password", "missing required key")
            gw: dict[str, IPv4Address] = {}
            gm = self.mapping(m, "gateway_vips", f"{path}.gateway_vips", optional=True) or {}
            for net_name in gm:
                gpath = f"{path}.gateway_vips.{net_name}"
                net = networks.get(str(net_name))
                if net is None:
                    self.unknown(gm, net_name, gpath, "network", net_name)
                    continue
                a = self.address(gm, net_name, gpath)
                if a is not None and self._check_in_network(gm, net_name, gpath, a, net.cidr):
                    gw[str(net_name)] = a
            advert = self.advert_int(m, path)
            if advert is not None and not float(advert).is_integer() and au is not None:
                self.err(m, "auth", f"{path}.auth", "a sub-second advert_int needs VRRPv3, "
                         "which has no authentication: drop auth or use whole seconds")
            preempt = m.get("preempt", True)
            if not isinstance(preempt, bool):
                self.err(m, "preempt", f"{path}.preempt",
                         f"must be true or false, not {preempt!r}")
                preempt = True
            delay = self.integer(m, "preempt_delay", path, 0, 1000, 0) or 0
            if delay and not preempt:
                self.err(m, "preempt_delay", f"{path}.preempt_delay",
                         "preempt_delay needs preempt: true (with preempt: false the "
                         "active never takes the VIPs back)")
            if len(active) == 1 and backup and vrid is not None and advert is not None \
                    and active[0] in hosts and all(b in hosts for b in backup) \
                    and not self.tainted:
                out[str(name)] = LvsPair(str(name), active[0], backup[0], vrid, pa, pb, auth_type,
                                         auth_pass, advert, gw, tuple(backup[1:]), preempt,
                                         delay)
        return out

    def advert_int(self, m: dict[str, Any], path: str) -> float | None:
        """VRRP advert interval in seconds: whole seconds 1-255 (VRRPv2), or a
        sub-second/fractional value 0.01-40.95 in centiseconds (VRRPv3)."""
        v = m.get("advert_int")
        if v is None:
            return 1
        key = f"{path}.advert_int"
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.err(m, "advert_int", key, f"must be a number of seconds, not {_kind(v)}")
            return None
        if float(v).is_integer():
            if not 1 <= v <= 255:
                self.err(m, "advert_int", key, f"{v} is outside 1-255 seconds")
                return None
            return int(v)
        cs = round(v * 100)
        if abs(v * 100 - cs) > 1e-6:
            self.err(m, "advert_int", key, f"{v} is finer than VRRPv3's centiseconds")
            return None
        if not 1 <= cs <= 4095:
            self.err(m, "advert_int", key,
                     f"{v} is outside 0.01-40.95 s (VRRPv3, for a fractional interval)")
            return None
        return cs / 100

    def virtual_services(
        self,
        data: dict[str, Any],
        roles: dict[str, Role],
        hosts: dict[str, Host],
        pairs: dict[str, LvsPair],
    ) -> dict[str, VirtualService]:
        section = self.mapping(data, "virtual_services", "virtual_services", optional=True) or {}
        out = {}
        allowed = {"vip", "port", "protocol", "scheduler", "forwarding", "persistence", "role",
                   "real_port", "weight", "check", "pair"}
        seen: dict[tuple[IPv4Address, int, str], str] = {}
        for name in section:
            path = f"virtual_services.{name}"
            self.start_entry(section, name)
            m = self.mapping(section, name, path, allowed, ("vip", "port", "role", "check"))
            if m is None:
                continue
            if not _LABEL.match(str(name)):
                self.err(section, name, path, "virtual service names must be DNS labels")
            vip = self.address(m, "vip", f"{path}.vip")
            port = self.integer(m, "port", path, 1, 65535, None)
            proto = self.choice(m, "protocol", path, PROTOCOLS, "TCP")
            sched = self.choice(m, "scheduler", path, SCHEDULERS, "wlc")
            fwd = self.choice(m, "forwarding", path, FORWARDING, "NAT")
            persist = self.integer(m, "persistence", path, 0, 86400 * 31, 0) or 0
            real_port = self.integer(m, "real_port", path, 1, 65535, port) or port
            weight = self.integer(m, "weight", path, 0, 65535, 1)
            role = self.string(m, "role", path)
            if role is not None:
                if role not in roles:
                    self.unknown(m, "role", f"{path}.role", "role", role)
                elif not any(h.role.name == role for h in hosts.values()) \
                        and not self._has_broken_host(role):
                    self.err(m, "role", f"{path}.role",
                             f"role {role!r} has no hosts to serve this virtual service")
            if vip is not None and port is not None:
                key = (vip, port, proto)
                if key in seen:
                    self.err(m, "vip", f"{path}.vip",
                             f"{vip}:{port}/{proto} is already used by virtual service "
                             f"{seen[key]}")
                seen[key] = str(name)
                for h in hosts.values():
                    if vip in h.addresses.values():
                        self.err(m, "vip", f"{path}.vip", f"{vip} is the address of host {h.name}")
            pair = self.string(m, "pair", path)
            if pair is None:
                if len(pairs) == 1:
                    pair = next(iter(pairs))
                elif len(self.declared_pairs) == 1:
                    pass  # the one pair is invalid and reported already
                elif not self.declared_pairs:
                    self.err(m, "vip", path, "no LVS pair is defined to carry this service")
                else:
                    self.err(m, "pair", f"{path}.pair", "several LVS pairs exist: name one")
            elif pair not in self.declared_pairs:
                self.err(m, "pair", f"{path}.pair", f"unknown LVS pair {pair!r}")
            check = self.check(m, f"{path}.check")
            if None in (vip, port, role, pair, check, weight):
                continue
            assert vip and port and role and pair and check is not None and weight is not None
            out[str(name)] = VirtualService(str(name), vip, port, proto, sched, fwd, persist,
                                            role, real_port or port, weight, check, pair)
        return out

    def _has_broken_host(self, role: str) -> bool:
        """A host of ``role`` was declared but refused (then its problem is the cause)."""
        section = self.data.get("hosts")
        return any(isinstance(section, dict) and isinstance(section.get(h), dict)
                   and str(section[h].get("role")) == role
                   for h in self.broken.get("host", ()))

    def check(self, m: dict[str, Any], path: str) -> HealthCheck | None:
        allowed = {"type", "path", "status", "digest", "port", "command", "connect_timeout",
                   "retry", "delay_before_retry"}
        c = self.mapping(m, "check", path, allowed, ("type",))
        if c is None or c.get("type") is None:
            return None
        kind = self.choice(c, "type", path, CHECK_TYPES, "")
        if not kind:
            return None
        url_path = self.string(c, "path", path, pattern=re.compile(r"^/[!-~]*$"), what="URL path")
        status = self.integer(c, "status", path, 100, 599, None)
        digest = self.string(c, "digest", path, pattern=re.compile(r"^[0-9a-f]{32}$"),
                             what="MD5 digest")
        command = self.string(c, "command", path)
        if kind in ("HTTP_GET", "SSL_GET"):
            if url_path is None:
                self.err(c, "type", f"{path}.path", f"{kind} needs a path")
            if status is None and digest is None:
                status = 200
        if kind == "MISC_CHECK":
            if not command:
                self.err(c, "type", f"{path}.command", "MISC_CHECK needs a command")
            elif "\n" in command or '"' in command:
                self.err(c, "command", f"{path}.command",
                         "the command may not contain newlines or double quotes")
        elif command is not None:
            self.err(c, "command", f"{path}.command", f"{kind} takes no command")
        return HealthCheck(
            kind,
            url_path,
            status,
            digest,
            self.integer(c, "port", path, 1, 65535, None),
            command,
            self.integer(c, "connect_timeout", path, 1, 3600, 3) or 3,
            self.integer(c, "retry", path, 0, 100, 3) or 0,
            self.integer(c, "delay_before_retry", path, 0, 3600, 3) or 0,
        )

    def cross_checks(
        self,
        networks: dict[str, Network],
        hosts: dict[str, Host],
        vss: dict[str, VirtualService],
        pairs: dict[str, LvsPair],
        roles: dict[str, Role] | None = None,
    ) -> None:
        # Hosts, roles, virtual services and networks share the cluster's DNS names.
        owners: dict[str, str] = {"masters": "the masters' name"}
        for kind, names in (("network", networks), ("host", hosts), ("role", roles or {}),
                            ("virtual service", vss)):
            for n in names:
                if n in owners:
                    section = {"network": "networks", "host": "hosts", "role": "roles",
                               "virtual service": "virtual_services"}[kind]
                    self.problems.append(Problem(
                        self.file, _line(self.data.get(section), n), f"{section}.{n}",
                        f"the name {n!r} is already {owners[n]} (DNS names must be unique)"))
                else:
                    owners[n] = f"{kind} {n!r}"
        # Every LVS host must be on the networks its VIPs live on.
        for vs in vss.values():
            pair = pairs.get(vs.pair)
            if pair is None:
                continue
            vnet = next((n for n in networks.values() if vs.vip in n.cidr), None)
            if vnet is None:
                continue  # reported by lvs_checks
            for h in pair.directors:
                host = hosts.get(h)
                if host is not None and vnet.name not in host.addresses:
                    self.problems.append(Problem(
                        self.file, self._vs_line(vs.name), f"virtual_services.{vs.name}.vip",
                        f"LVS host {h} has no address on network {vnet.name}, where {vs.vip} "
                        "lives"))

    # -- the load-balancer layer (issue 16) ---------------------------------

    def _vs_line(self, name: str) -> int | None:
        section = self.data.get("virtual_services")
        return _line(section.get(name), "vip") if isinstance(section, dict) else None

    def lvs_checks(
        self,
        networks: dict[str, Network],
        hosts: dict[str, Host],
        vss: dict[str, VirtualService],
        pairs: dict[str, LvsPair],
    ) -> None:
        """What keepalived would accept but the cluster could not carry."""
        vs_section = self.data.get("virtual_services")
        vs_section = vs_section if isinstance(vs_section, dict) else {}
        for vs in vss.values():
            if self.broken.get("network"):
                break  # the VIP may be in the network refused for its own problem
            if not any(vs.vip in n.cidr for n in networks.values()):
                self.err(vs_section.get(vs.name), "vip", f"virtual_services.{vs.name}.vip",
                         f"{vs.vip} is in no network of the inventory (no director could "
                         "carry it)")
        pair_section = self.data.get("lvs_pairs")
        pair_section = pair_section if isinstance(pair_section, dict) else {}
        for pair in pairs.values():
            pm = pair_section.get(pair.name)
            hm = pm.get("hosts") if isinstance(pm, dict) else None
            for h in pair.directors:
                host = hosts.get(h)
                if host is not None and "lvs" not in host.services:
                    self.err(hm, h, f"lvs_pairs.{pair.name}.hosts.{h}",
                             f"host {h} (role {host.role.name}) does not run the lvs service; "
                             f"add lvs to role {host.role.name}'s services or to the host's")
        # keepalived's VRRP instances: one per network carrying the pair's VIPs, with
        # virtual_router_id, +1, +2 ... (render.engine.render_keepalived). Two instances
        # with one id on one network fight over the same virtual MAC.
        seen: dict[tuple[str, int], str] = {}
        for pair in pairs.values():
            pm = pair_section.get(pair.name)
            for net_name, vrid in vrrp_ids(pair, list(vss.values()), networks).items():
                key = (net_name, vrid)
                if key in seen:
                    self.err(pm, "virtual_router_id", f"lvs_pairs.{pair.name}.virtual_router_id",
                             f"VRRP id {vrid} on network {net_name} is already used by LVS pair "
                             f"{seen[key]}")
                else:
                    seen[key] = pair.name


def vrrp_ids(pair: LvsPair, vss: list[VirtualService],
             networks: dict[str, Network]) -> dict[str, int]:
    """network name -> the VRRP id the pair's instance on it uses (as keepalived.conf has)."""
    nets: list[str] = []
    for vs in vss:
        if vs.pair != pair.name:
            continue
        net = next((n for n in networks.values() if vs.vip in n.cidr), None)
        if net is not None and net.name not in nets:
            nets.append(net.name)
    for net_name in pair.gateway_vips:
        if net_name not in nets:
            nets.append(net_name)
    order = list(networks)
    nets.sort(key=lambda n: order.index(n) if n in order else len(order))
    return {n: (pair.virtual_router_id + i - 1) % 255 + 1 for i, n in enumerate(nets)}


def _parse_size(v: Any) -> int | None | bool:
    """Size in MiB; None for 'rest'; False if malformed."""
    if v is None:
        return False
    if isinstance(v, int) and not isinstance(v, bool):
        return v if v > 0 else False
    s = str(v).strip()
    if s.lower() == "rest":
        return None
    m = _SIZE.match(s)
    if not m:
        return False
    n = int(m.group(1))
    unit = m.group(2)[:1].upper()
    if unit == "K":
        return max(1, n // 1024) if n else False
    mib = n * _UNITS[unit]
    return mib if mib > 0 else False


def _kind(v: Any) -> str:
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    return "a string"


def _line(parent: Any, key: Any) -> int | None:
    """1-based line of ``parent[key]`` in the source, when ruamel recorded it."""
    lc = getattr(parent, "lc", None)
    if lc is None:
        return None
    try:
        if isinstance(parent, dict):
            if key in parent:
                return int(lc.key(key)[0]) + 1
            return int(lc.line) + 1
        if isinstance(parent, list):
            return int(lc.item(key)[0]) + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        pass
    return int(lc.line) + 1 if getattr(lc, "line", None) is not None else None


Loader = Callable[[str | None], Inventory]
