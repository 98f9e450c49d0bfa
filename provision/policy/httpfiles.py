"""HTTP decisions for the boot tree, free of any server library: ranges,
conditional requests, and node boot events (validated here, stored by
``provision.state.events``).

RFC 9110 sections 13 (conditional requests) and 14 (range requests).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ..inventory.model import Host, Inventory

# --------------------------------------------------------------------------
# Ranges and validators.

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    """The range cannot be served: answer 416 with ``Content-Range: bytes */size``."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, for one byte range; None means "send it all".

    Malformed headers and multiple ranges are ignored (RFC 9110 14.2 allows a
    server to ignore Range); a well-formed range outside the file raises
    ``Unsatisfiable``.
    """
    if not header:
        return None
    m = _RANGE.match(header.strip().replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first_s, last_s = m.groups()
    if len(first_s) > 19 or len(last_s) > 19:
        return None
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise Unsatisfiable()
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # invalid: ignore
    if first >= size:
        raise Unsatisfiable()
    return first, min(last, size - 1)


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match: '*' or a list containing the tag (weak comparison)."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == bare for t in header.split(","))


def if_range_allows(header: str | None, etag: str) -> bool:
    """If-Range: the range applies only when the client's (strong) tag still matches."""
    if not header:
        return True
    return header.strip() == etag and not etag.startswith("W/")


# --------------------------------------------------------------------------
# Node boot events.

STAGES = ("dhcp", "kernel", "initramfs", "dsas.conf", "image", "configured", "ready", "failed")
MAX_EVENT_BYTES = 4096
MAX_REASON = 200
# "detail" is free text for any stage (ready carries the addresses); "reason" is its
# older name. A failed stage needs one of them.
# "boot_id" and "token": what the master put in this boot's dsas.conf (policy.boottoken);
# they bind an ssh_key to the boot.
_FIELDS = {"host", "stage", "reason", "detail", "image", "mac", "ssh_key", "boot_id", "token"}
_SAFE = re.compile(r"^[\x20-\x7e]*$")
# "ssh_key": the node's SSH host public key, one ``*.pub`` line (dsas trust reads it).
SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
                 "ecdsa-sha2-nistp521", "ssh-rsa")
MAX_SSH_KEY = 2048


class BadEvent(Exception):
    """A refused report: the HTTP status, a one-line reason, and a metrics label."""

    def __init__(self, status: int, message: str, reason: str = "bad"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason


@dataclass(frozen=True)
class Event:
    """A node's validated report (boot stage, reason, image, SSH key)."""

    host: str
    stage: str
    reason: str | None
    image: str | None
    address: str
    ssh_key: tuple[str, str] | None = None  # (type, base64 blob)
    boot_id: str | None = None
    token: str | None = None


def parse_event(body: bytes, peer: str | None, inv: Inventory,
                leased: Callable[[str], set[str]] | None = None) -> Event:
    """Validate a node's report. The host is named in the body (or found by the
    peer address); the report must come from one of that host's inventory
    addresses, or from an address DHCP leased it (``leased(host)``)."""
    doc = _decode_event(body)
    stage = doc.get("stage")
    if stage not in STAGES:
        raise BadEvent(400, f"stage must be one of {', '.join(STAGES)}")
    detail = doc.get("detail") or doc.get("reason") or None
    if stage == "failed" and not detail:
        raise BadEvent(400, "stage 'failed' needs a reason")
    host, address = _reporter(doc, peer, inv, leased)
    if "mac" in doc and doc["mac"].lower() not in host.macs:
        raise BadEvent(403, f"MAC {doc['mac']} is not {host.name}'s")
    ssh_key = parse_ssh_key(doc["ssh_key"]) if doc.get("ssh_key") else None
    return Event(host.name, stage, detail, doc.get("image") or host.image,
                 address, ssh_key, doc.get("boot_id") or None, doc.get("token") or None)


def _decode_event(body: bytes) -> dict[str, str]:
    """The report's JSON object: known fields only, each printable text within its limit."""
    if len(body) > MAX_EVENT_BYTES:
        raise BadEvent(413, f"event larger than {MAX_EVENT_BYTES} bytes", "too_large")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadEvent(400, "body is not JSON") from None
    except RecursionError:  # [[[[... nested deeper than the parser's stack
        raise BadEvent(400, "body is nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadEvent(400, "body must be a JSON object")
    extra = set(doc) - _FIELDS
    if extra:
        raise BadEvent(400, f"unknown field(s): {', '.join(sorted(extra))}")
    for k, v in doc.items():
        limit = MAX_SSH_KEY if k == "ssh_key" else MAX_REASON
        if not isinstance(v, str) or not _SAFE.match(v) or len(v) > limit:
            raise BadEvent(400, f"field {k!r} must be printable text up to {limit} chars")
    return doc


def _reporter(doc: dict[str, str], peer: str | None, inv: Inventory,
              leased: Callable[[str], set[str]] | None) -> tuple[Host, str]:
    """The host the report is for, and the address it came from (one of the host's)."""
    by_peer = inv.host_by_ip(peer) if peer else None
    name = doc.get("host") or (by_peer.name if by_peer else None)
    if name is None:
        raise BadEvent(400, "no host named, and the peer address is not in the inventory")
    host = inv.hosts.get(name)
    if host is None:
        raise BadEvent(404, f"host {name!r} not in inventory")
    if by_peer is not None and by_peer.name != host.name:
        raise BadEvent(403, f"{peer} is {by_peer.name}, not {host.name}", "source")
    address = _peer_address(peer)
    if address is None:
        raise BadEvent(403, f"a report for {host.name} must come from its own address",
                       "source")
    if address not in host_addresses(host.name, inv) and \
            (leased is None or address not in leased(host.name)):
        raise BadEvent(403, f"{address} is not {host.name}'s address (inventory or lease)",
                       "source")
    return host, address


def _peer_address(peer: str | None) -> str | None:
    """The peer's address in canonical text (an IPv4-mapped IPv6 one as IPv4); None
    when it is not an IP address."""
    try:
        a = ipaddress.ip_address((peer or "").split("%")[0])
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


def host_addresses(name: str, inv: Inventory) -> set[str]:
    """The inventory addresses of host ``name``, IPv4 and IPv6 (empty if it is not in
    the inventory)."""
    host = inv.hosts.get(name)
    if host is None:
        return set()
    return {str(a) for a in host.addresses.values()} | {
        str(a) for a in host.addresses6.values()}


def parse_ssh_key(text: str) -> tuple[str, str]:
    """(type, base64) from one public key line (``type base64 [comment]``); the blob
    must decode and name the same type inside (RFC 4253 6.6), else BadEvent 400."""
    fields = text.split()
    if len(fields) < 2 or fields[0] not in SSH_KEY_TYPES:
        raise BadEvent(400, f"ssh_key must be '<type> <base64>' with type one of "
                            f"{', '.join(SSH_KEY_TYPES)}")
    ktype, b64 = fields[0], fields[1]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadEvent(400, "ssh_key: the key is not base64") from None
    if len(blob) < 4 or blob[4:4 + struct.unpack("!I", blob[:4])[0]] != ktype.encode():
        raise BadEvent(400, f"ssh_key: the key blob is not a {ktype} key")
    return ktype, b64

