"""`dsas master join HOST` (issue 18): make a host a master of the pair.

Run on a master of the pair (normally the active primary). HOST takes the place of the
*other* master (the secondary when run on the primary); the master that runs the command
keeps its side, so its pool half and keepalived priority do not change under it.

1. The inventory: ``cluster.masters.<side>: HOST``, committed like every edit (history,
   lock, the running serve told). The serve follows live (``PairRuntime.retarget``): its
   channel and mirror go to HOST, keepalived's unicast peer is reloaded (SIGHUP, never a
   restart); until HOST is in sync it is communication-interrupted (own half only). The
   master that left gets the new inventory by its mirror and lets the VIP go.
2. Over SSH, HOST's host key checked against dsas's known_hosts only (`dsas trust HOST`
   first): its dsas is checked to be this one's version (installed if not, below); the
   pair key (0600), dsas-push's SSH key and the new inventory are written (on stdin,
   never on a command line); then
   the start command (default ``systemctl restart dsas-serve``) runs there.
3. HOST's serve does the rest itself, as any returning master does: it pulls the leases
   (sha256-checked), mirrors the boot tree, the image store and known_hosts, gets the
   other state (events, push and inventory history) from the active, and only then starts
   keepalived. ``join`` waits (bounded) until the pair is in sync and HOST's mirror is not
   stale.

A HOST without dsas, or with another version (the channel's frames must match), gets
this master's own installation first (``provision.ha.install``: the ``make install``
tree copied over the same verified SSH connection, its sha256 sums checked on HOST,
swapped in whole; HOST's python3 must be the venv's version). ``--no-install`` refuses
such a HOST instead, as before.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO, Any

from ..errors import DsasError
from ..inventory.edit import Document, EditError
from ..inventory.model import Inventory
from ..sshtrust.hostkeys import trusted_keys
from ..sshtrust.sshconf import SshConfig
from .members import Me, PairError, key_path, read_key, resolve
from .replicator import STATUS_FILE, ask_status
from .wire import WireError

SSH_TIMEOUT = 60.0  # s for one remote step


class JoinError(DsasError):
    """HOST cannot join the pair (one line: why, and what to do)."""


@dataclass(frozen=True)
class JoinPlan:
    """Who joins, in whose place."""

    host: str
    address: IPv4Address
    side: str  # the side HOST takes
    replaces: str  # the master that leaves
    me: str  # the master running the join (keeps its side)


def plan(inv: Inventory, me_name: str | None, host: str) -> JoinPlan:
    try:
        me = resolve(inv, me_name)
    except PairError as e:
        raise JoinError(str(e)) from None
    h = inv.hosts.get(host)
    if h is None:
        raise JoinError(f"no host {host!r} in the inventory (add it first: dsas host add)")
    if host == me.name:
        raise JoinError(f"{host} is this master; run join here for another host")
    if host == me.peer_name:
        raise JoinError(f"{host} is already the {me.peer_side} master")
    net = next(n for n in inv.networks.values() if me.vip in n.cidr)
    address = h.addresses.get(net.name)
    if address is None:
        raise JoinError(f"{host} has no address on {net.name} ({net.cidr}), the network of "
                        f"the master VIP {me.vip}")
    return JoinPlan(host, address, me.peer_side, me.peer_name, me.name)


def edit_inventory(doc: Document, p: JoinPlan) -> None:
    masters = doc.section("cluster").get("masters")
    if not isinstance(masters, dict):
        raise EditError(["cluster.masters is missing or not a mapping"])
    masters[p.side] = p.host


class Remote:
    """Commands on the joining host over ssh, its host key verified (dsas's known_hosts
    only, BatchMode, no connection sharing left behind)."""

    def __init__(self, cfg: SshConfig, host: str, address: IPv4Address) -> None:
        if not trusted_keys(cfg, str(address)):
            raise JoinError(f"no trusted host key for {host} ({address}) in "
                            f"{cfg.known_hosts}: check it and run `dsas trust {host}`")
        if not cfg.key.exists():
            raise JoinError(f"no SSH key {cfg.key} to log in to {host} with")
        argv = cfg.ssh_command(Path("/nonexistent"))
        self.argv = [a for i, a in enumerate(argv)
                     if not a.startswith("Control") and not (a == "-o" and i + 1 < len(argv)
                                                             and argv[i + 1].startswith("Control"))]
        self.host = host
        self.address = str(address)

    def run(self, what: str, script: str, data: bytes | IO[bytes] = b"",
            timeout: float = SSH_TIMEOUT) -> str:
        """``script`` on the host, ``data`` on its stdin (bytes or a file)."""
        argv = [*self.argv, self.address, "sh -c " + shlex.quote(script)]
        try:
            if isinstance(data, bytes):
                res = subprocess.run(argv, input=data, capture_output=True, timeout=timeout)
            else:
                res = subprocess.run(argv, stdin=data, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise JoinError(f"{what} on {self.host}: no answer in {timeout:g} s") from None
        err = res.stderr.decode(errors="replace").strip().splitlines()
        last = err[-1] if err else f"exit {res.returncode}"
        if res.returncode == 255:
            raise JoinError(f"ssh to {self.host} ({self.address}): {last}")
        if res.returncode != 0:
            raise JoinError(f"{what} on {self.host} failed: {last}")
        return res.stdout.decode(errors="replace")

    def write(self, what: str, path: str, data: bytes, mode: int) -> None:
        """``path`` on the host, whole or not at all (a temporary file renamed)."""
        q, tmp = shlex.quote(path), shlex.quote(path + ".dsas-join")
        self.run(what, f"umask 077 && mkdir -p \"$(dirname {q})\" && cat > {tmp} && "
                       f"chmod {mode:o} {tmp} && mv -f {tmp} {q}", data)


def remote_version(remote: Remote, dsas: str) -> str | None:
    """What ``dsas --version`` answers on the host; None if it has no ``dsas``."""
    out = remote.run("dsas --version", f"command -v {shlex.quote(dsas)} >/dev/null 2>&1 "
                     f"|| exit 0; {shlex.quote(dsas)} --version || echo broken").strip()
    return out or None


def check_dsas(remote: Remote, dsas: str, version: str) -> None:
    out = remote_version(remote, dsas)
    if out is None:
        raise JoinError(f"no {dsas} on {remote.host}: install the same dsas there first "
                        "(join does it, unless --no-install)")
    if out != version:
        raise JoinError(f"{remote.host} runs {out!r}, this master {version!r}: install the "
                        "same dsas there first")


def deliver(remote: Remote, cfg: SshConfig, state_dir: Path, rstate: str, inv: Inventory,
            rinv: str, text: str) -> None:
    """On HOST: the pair key (0600), dsas-push's SSH key, the inventory ``text`` at
    ``rinv`` (each on stdin, written whole or not at all)."""
    pair = inv.cluster.pair
    assert pair is not None
    key = key_path(state_dir, pair)
    read_key(state_dir, pair)  # it is there, 0600 and well formed
    rkey = key_path(Path(rstate), pair)
    remote.write("the pair key", str(rkey), key.read_bytes(), 0o600)
    if cfg.key.exists():
        remote.write("dsas-push's key", f"{rstate}/ssh/id_ed25519", cfg.key.read_bytes(),
                     0o600)
        pub = cfg.key.with_name(cfg.key.name + ".pub")
        if pub.exists():
            remote.write("dsas-push's key", f"{rstate}/ssh/id_ed25519.pub",
                         pub.read_bytes(), 0o644)
    remote.write("the inventory", rinv, text.encode(), 0o644)


def wait_joined(me: Me, state_dir: Path, inv: Inventory, wait: float) -> str | None:
    """None once the pair is in sync and the peer's mirror is not stale; else why not
    (after ``wait`` s)."""
    assert inv.cluster.pair is not None
    key = read_key(state_dir, inv.cluster.pair)
    deadline = time.monotonic() + wait
    why = "no answer yet"
    while time.monotonic() < deadline:
        try:
            peer = ask_status(me, key, 2.0)
        except (OSError, ConnectionError, WireError) as e:
            why = f"its channel does not answer ({e})"
            time.sleep(1)
            continue
        stale = [k for k, v in (peer.get("mirror") or {}).items() if v.get("stale")]
        mine = local_status(state_dir, me, time.time())
        active = peer if peer.get("role") == "active" else mine
        if mine.get("peer") != me.peer_name:
            why = "this master's serve has not taken the new inventory"
        elif not active.get("in_sync"):
            why = "the leases are not in sync yet"
        elif stale or not peer.get("mirror"):
            why = f"its mirror is stale ({', '.join(stale) or 'none yet'})"
        else:
            return None
        time.sleep(1)
    return why


def local_status(state_dir: Path, me: Me, now: float) -> dict[str, Any]:
    """This master's status as its serve last wrote it (role unknown if stale)."""
    path = state_dir / STATUS_FILE
    try:
        doc = dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        return {"name": me.name, "side": me.side, "role": "unknown",
                "error": f"no status from a running serve ({path}: {e})"}
    if now - float(doc.get("written", 0)) > 5:
        doc["role"] = "unknown"
        doc["error"] = f"stale: the serve wrote {path} {now - doc['written']:.0f} s ago"
    return doc
