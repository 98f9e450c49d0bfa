"""Edit the inventory's text: ruamel's round trip, then only the lines that must change.

ruamel keeps comments and key order, but its dump re-spaces some lines (``fs:   {..}``
becomes ``fs: {..}``). So an edit is made on the round-trip tree, both the old and the
edited tree are dumped, and only the lines where those two dumps differ are taken from
the new dump; every other line is the operator's own, byte for byte (``merge_lines``).

Everything here is pure (text in, text out); validation with the real loader, the
lock, history and the atomic write live in ``commit.py``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from ..errors import DsasError
from .model import normalize_mac
from .roundtrip import dump, guess_indent, merge_lines, put_tail, round_trip_yaml, take_tail

# The keys a host entry may carry, in the order a new entry gets them.
HOST_KEYS = ("role", "macs", "addresses", "hwtype", "bond", "boot", "image", "loader",
             "kernel_args", "services")


class EditError(DsasError):
    """An edit that cannot be made; carries every reason and the exit code."""

    exit_code = 1

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class Document:
    """One inventory text and its round-trip tree; ``text()`` gives the edited text."""

    def __init__(self, text: str, filename: str = "<inventory>"):
        self.original = text
        self.filename = filename
        try:
            self.indent = guess_indent(text)
            self.data = round_trip_yaml().load(text)
            self._base = dump(self.data, self.indent)  # before any edit: changes nothing
        except YAMLError as e:
            raise EditError([f"{filename}: cannot parse: {' '.join(str(e).split())}"]) from None
        if not isinstance(self.data, CommentedMap):
            raise EditError([f"{filename}: the inventory is not a mapping"])

    def text(self) -> str:
        new = dump(self.data, self.indent)
        merged = merge_lines(self.original, self._base, new)
        # The merge must mean what the edited tree means; if ruamel's dump and the
        # original ever line up wrongly, take the plain dump (comments kept all the same).
        # (The round-trip types compare equal to the plain ones: str, int, dict, list.)
        try:
            same = YAML(typ="safe").load(merged) == self.data
        except YAMLError:
            same = False
        return merged if same else new

    # -- reading the loose tree ------------------------------------------------------

    def section(self, name: str, create: bool = False) -> CommentedMap:
        sec = self.data.get(name)
        if sec is None and create:
            sec = self.data[name] = CommentedMap()
        if not isinstance(sec, CommentedMap):
            raise EditError([f"{self.filename}: section {name!r} is missing or not a mapping"])
        return sec

    def host(self, name: str) -> CommentedMap:
        hosts = self.section("hosts")
        h = hosts.get(name)
        if h is None:
            raise EditError([f"no host {name!r} in {self.filename}"])
        if not isinstance(h, CommentedMap):
            raise EditError([f"hosts.{name} is not a mapping"])
        return h

    def role_networks(self, role: str) -> list[str]:
        roles = self.data.get("roles") or {}
        r = roles.get(role) if isinstance(roles, dict) else None
        if not isinstance(r, dict):
            known = ", ".join(str(k) for k in roles) if isinstance(roles, dict) else ""
            raise EditError([f"unknown role {role!r} (roles: {known or 'none'})"])
        nets = r.get("networks") or []
        return [str(n) for n in nets] if isinstance(nets, list) else []

    def networks(self) -> dict[str, ipaddress.IPv4Network]:
        out = {}
        for name, n in (self.data.get("networks") or {}).items():
            try:
                out[str(name)] = ipaddress.IPv4Network(str(n.get("cidr")), strict=False)
            except (ValueError, AttributeError):
                continue
        return out

    def claimed_addresses(self, except_host: str | None = None) -> set[ipaddress.IPv4Address]:
        """Every address the inventory gives to something: hosts, gateways, DNS servers,
        the master, VIPs and the LVS pairs' gateway VIPs."""
        out = set()
        for a in self._claims(except_host):
            try:
                out.add(ipaddress.IPv4Address(str(a)))
            except ValueError:
                continue
        return out

    def _claims(self, except_host: str | None) -> list[Any]:
        """The values that claim an address, as written (some may not be addresses)."""
        raw: list[Any] = []
        for name, h in (self.data.get("hosts") or {}).items():
            if str(name) != except_host and isinstance(h, dict):
                raw += list((h.get("addresses") or {}).values())
        for n in (self.data.get("networks") or {}).values():
            if isinstance(n, dict):
                raw += [n.get("gateway"), *(n.get("dns") or [])]
        raw.append((self.data.get("cluster") or {}).get("master_address"))
        for vs in (self.data.get("virtual_services") or {}).values():
            if isinstance(vs, dict):
                raw.append(vs.get("vip"))
        for p in (self.data.get("lvs_pairs") or {}).values():
            if isinstance(p, dict):
                raw += list((p.get("gateway_vips") or {}).values())
        return raw

    def free_address(self, network: str, taken: Iterable[ipaddress.IPv4Address] = (),
                     except_host: str | None = None) -> ipaddress.IPv4Address:
        """The lowest address of ``network`` that nothing claims (never the network or
        broadcast address). Bounded: at most one step per claimed address."""
        nets = self.networks()
        if network not in nets:
            raise EditError([f"unknown network {network!r} (networks: {', '.join(nets)})"])
        cidr = nets[network]
        claimed = {int(a) for a in self.claimed_addresses(except_host)} | {int(a) for a in taken}
        first, last = int(cidr.network_address) + 1, int(cidr.broadcast_address) - 1
        if cidr.prefixlen >= 31:
            first, last = int(cidr.network_address), int(cidr.broadcast_address)
        ip = first
        while ip <= last and ip in claimed:
            ip += 1
        if ip > last:
            raise EditError([f"network {network} ({cidr}) has no free address left"])
        return ipaddress.IPv4Address(ip)


# -- values --------------------------------------------------------------------------


def _flow_seq(items: Iterable[Any]) -> CommentedSeq:
    s = CommentedSeq(list(items))
    s.fa.set_flow_style()
    return s


def _flow_map(items: Iterable[tuple[str, Any]]) -> CommentedMap:
    m = CommentedMap()
    for k, v in items:
        m[k] = v
    m.fa.set_flow_style()
    return m


def mac_list(macs: Iterable[str]) -> CommentedSeq:
    """MACs canonical and quoted, as the example inventory writes them."""
    out = []
    problems = []
    for raw in macs:
        try:
            out.append(DoubleQuotedScalarString(normalize_mac(raw)))
        except ValueError as e:
            problems.append(str(e))
    if problems:
        raise EditError(problems)
    return _flow_seq(out)


def parse_assignments(pairs: Sequence[str], what: str = "KEY=VALUE") -> list[tuple[str, str]]:
    out, problems = [], []
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            problems.append(f"{p!r}: expected {what}")
            continue
        out.append((key.strip(), value))
    if problems:
        raise EditError(problems)
    return out


def parse_addresses(pairs: Sequence[str]) -> dict[str, ipaddress.IPv4Address]:
    out: dict[str, ipaddress.IPv4Address] = {}
    problems = []
    for net, value in parse_assignments(pairs, "NET=IP"):
        try:
            out[net] = ipaddress.IPv4Address(value.strip())
        except ValueError:
            problems.append(f"--address {net}={value}: malformed IPv4 address")
    if problems:
        raise EditError(problems)
    return out


def yaml_value(text: str) -> Any:
    """A value given on the command line, read as YAML (``[a, b]``, ``{primary: eth1}``,
    ``disk``, ``8``); an empty value is an empty string."""
    if text.strip() == "":
        return ""
    try:
        v = round_trip_yaml().load(text)
    except YAMLError as e:
        why = " ".join(str(getattr(e, "problem", None) or e).split())  # one line
        raise EditError([f"{text!r}: not a YAML value: {why}"]) from None
    if isinstance(v, CommentedMap | CommentedSeq):
        v.fa.set_flow_style()
    return v


# -- the edits -------------------------------------------------------------------------


def _addresses_for(doc: Document, host: str, role: str,
                   given: dict[str, ipaddress.IPv4Address],
                   keep: dict[str, Any] | None = None,
                   prefer: dict[str, ipaddress.IPv4Address] | None = None,
                   busy: Iterable[ipaddress.IPv4Address] = ()
                   ) -> tuple[CommentedMap, dict[str, str]]:
    """An address on each network ``role`` joins: given, else kept, else preferred (if
    free), else the lowest free (not claimed by the inventory, nor ``busy``: leased to
    another machine now). Returns the mapping and why each was chosen."""
    nets = doc.role_networks(role)
    problems = [f"--address {n}=...: role {role} does not join network {n} "
                f"(it joins {', '.join(nets) or 'none'})" for n in given if n not in nets]
    if problems:
        raise EditError(problems)
    out = CommentedMap()
    why: dict[str, str] = {}
    taken: set[ipaddress.IPv4Address] = set(given.values()) | set(busy)
    claimed = doc.claimed_addresses(except_host=host)
    cidrs = doc.networks()
    for net in nets:
        if net in given:
            out[net] = str(given[net])
            why[net] = "given"
        elif keep and net in keep:
            out[net] = keep[net]
            why[net] = "kept"
        elif (prefer and net in prefer and net in cidrs and prefer[net] in cidrs[net]
              and prefer[net] not in claimed and prefer[net] not in taken):
            out[net] = str(prefer[net])
            why[net] = "leased"
        else:
            a = doc.free_address(net, taken, except_host=host)
            out[net] = str(a)
            why[net] = "lowest free"
        taken.add(ipaddress.IPv4Address(str(out[net])))
    out.fa.set_flow_style()
    return out, why


def add_host(doc: Document, name: str, role: str, macs: Sequence[str],
             addresses: dict[str, ipaddress.IPv4Address], hwtype: str | None = None,
             prefer: dict[str, ipaddress.IPv4Address] | None = None,
             busy: Iterable[ipaddress.IPv4Address] = ()) -> dict[str, str]:
    """Add ``name`` after the last host of the same role (else at the end)."""
    hosts = doc.section("hosts", create=True)
    if name in hosts:
        raise EditError([f"host {name!r} already exists (change it with `dsas host set`)"])
    if not macs:
        raise EditError(["give the host's MACs with --mac (one per NIC, in NIC order)"])
    addrs, why = _addresses_for(doc, name, role, addresses, prefer=prefer, busy=busy)
    entry = CommentedMap()
    entry["role"] = role
    entry["macs"] = mac_list(macs)
    entry["addresses"] = addrs
    if hwtype:
        entry["hwtype"] = hwtype
    names = list(hosts)
    same = [i for i, n in enumerate(names)
            if isinstance(hosts[n], dict) and hosts[n].get("role") == role]
    pos = same[-1] + 1 if same else len(names)
    # In the style most of its neighbours (the same role's hosts, else all) are written in.
    peers = [hosts[names[i]] for i in same] or [hosts[n] for n in names]
    flow = sum(1 for p in peers if isinstance(p, CommentedMap) and p.fa.flow_style())
    if 2 * flow >= len(peers):
        entry.fa.set_flow_style()
    tail = take_tail(hosts, names[pos - 1]) if pos > 0 else ""
    hosts.insert(pos, name, entry)
    put_tail(hosts, name, tail)
    return why


def _set_path(m: CommentedMap, path: list[str], value: Any) -> None:
    for i, part in enumerate(path[:-1]):
        sub = m.get(part)
        if sub is None:
            sub = _flow_map([])
            m[part] = sub
        if not isinstance(sub, dict):
            raise EditError([f"{'.'.join(path[: i + 1])} is not a mapping"])
        m = sub  # type: ignore[assignment]
    m[path[-1]] = value


def _unset_path(m: CommentedMap, path: list[str]) -> bool:
    for part in path[:-1]:
        sub = m.get(part)
        if not isinstance(sub, dict):
            return False
        m = sub  # type: ignore[assignment]
    if path[-1] in m:
        del m[path[-1]]
        return True
    return False


def set_host(doc: Document, name: str, assignments: Sequence[tuple[str, str]],
             unset: Sequence[str] = ()) -> None:
    """Set (dotted) keys of one host: ``bond.primary=eth1``, ``macs=[..]``,
    ``addresses.inside=198.18.1.9``; ``unset`` removes keys."""
    h = doc.host(name)
    problems = []
    for key, raw in assignments:
        problems += _assign(h, key, raw)
    for key in unset:
        path = key.split(".")
        if path[0] in ("role", "macs", "addresses") and len(path) == 1:
            problems.append(f"--unset {key}: every host needs {key}")
        elif not _unset_path(h, path):
            problems.append(f"--unset {key}: host {name} has no {key}")
    if problems:
        raise EditError(problems)


def _assign(h: CommentedMap, key: str, raw: str) -> list[str]:
    """Set ``key`` (dotted) of host ``h`` to ``raw``; the problems, if it cannot."""
    path = key.split(".")
    if path[0] not in HOST_KEYS:
        return [f"{key}: unknown host key (keys: {', '.join(HOST_KEYS)})"]
    if path[0] == "role":
        return ["role: use `dsas assign HOST ROLE` (it picks the new role's "
                "addresses and shows what changes)"]
    try:
        if path == ["macs"]:
            value: Any = mac_list(str(m) for m in _as_list(yaml_value(raw)))
        elif path[0] == "addresses" and len(path) == 2:
            value = str(ipaddress.IPv4Address(raw.strip()))
        else:
            value = yaml_value(raw)
        _set_path(h, path, value)
    except EditError as e:
        return [f"{key}: {p}" for p in e.problems]
    except ValueError:
        return [f"{key}={raw}: malformed IPv4 address"]
    return []


def _as_list(v: Any) -> list[Any]:
    if isinstance(v, list):
        return list(v)
    return [s for s in str(v).replace(",", " ").split() if s]


def remove_host(doc: Document, name: str) -> None:
    hosts = doc.section("hosts")
    if name not in hosts:
        raise EditError([f"no host {name!r} in {doc.filename}"])
    names = list(hosts)
    i = names.index(name)
    tail = take_tail(hosts, name) if i > 0 else ""
    del hosts[name]
    if i > 0:
        put_tail(hosts, names[i - 1], tail)


def assign_role(doc: Document, name: str, role: str,
                addresses: dict[str, ipaddress.IPv4Address],
                busy: Iterable[ipaddress.IPv4Address] = ()) -> dict[str, str]:
    """Give ``name`` the role ``role``: addresses on networks both roles join are kept
    (unless given), the new ones picked, the ones the new role does not join dropped."""
    h = doc.host(name)
    old = h.get("addresses") or {}
    keep = {str(k): v for k, v in old.items()} if isinstance(old, dict) else {}
    addrs, why = _addresses_for(doc, name, role, addresses, keep=keep, busy=busy)
    h["role"] = role
    if isinstance(old, CommentedMap):
        for k in list(old):
            if str(k) not in addrs:
                del old[k]
        for k, v in addrs.items():
            if old.get(k) != v:
                old[k] = v
    else:
        h["addresses"] = addrs
    _lvs_membership(doc, name, role)
    return why


def _runs_lvs(doc: Document, role: str, host: CommentedMap) -> bool:
    """Does a host of ``role`` (with its own ``services``) run the lvs service?"""
    roles = doc.data.get("roles") or {}
    r = roles.get(role) if isinstance(roles, dict) else None
    services = list((r.get("services") or []) if isinstance(r, dict) else [])
    services += list(host.get("services") or []) if isinstance(host.get("services"), list) \
        else []
    return "lvs" in (str(s) for s in services)


def _lvs_membership(doc: Document, name: str, role: str) -> None:
    """A host moved to a role that runs lvs joins the LVS pair as a further backup (one
    priority step lower than the last); one moved away from it leaves the pairs where it is
    a further backup. Only when the choice is clear: with several pairs (or where the
    host is a pair's active or only backup) the inventory is left for the operator, and
    `dsas check` names what is missing."""
    pairs = doc.data.get("lvs_pairs")
    if not isinstance(pairs, CommentedMap):
        return
    member = {str(p): m for p, m in pairs.items()
              if isinstance(m, dict) and isinstance(m.get("hosts"), dict)
              and name in m["hosts"]}
    if _runs_lvs(doc, role, doc.host(name)):
        if member or len(pairs) != 1:
            return
        hosts = next(iter(pairs.values())).get("hosts")
        if isinstance(hosts, CommentedMap):
            hosts[name] = "backup"
        return
    for pname, m in member.items():
        _leave_pair(pname, m["hosts"], name)


def _leave_pair(pname: str, hosts: CommentedMap, name: str) -> None:
    """``name`` leaves the pair: a further backup simply; the active hands its place to
    the first backup (the pair's next priority). Refused, with the reason, when the pair
    would be left without an active and a backup."""
    backups = [str(h) for h, st in hosts.items() if st == "backup"]
    if len(backups) < 2:
        raise EditError([f"{name} is one of the two directors of LVS pair {pname}: moving "
                         "it would leave the pair without a backup; `dsas assign` another "
                         "host to lvs first (it joins the pair), then move this one"])
    if hosts.get(name) == "active":
        hosts[backups[0]] = "active"
    del hosts[name]
