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
   first): its dsas is checked to be this one's version; the pair key (0600), dsas-push's
   SSH key and the new inventory are written (on stdin, never on a command line); then
   the start command (default ``systemctl restart dsas-serve``) runs there.
3. HOST's serve does the rest itself, as any returning master does: it pulls the leases
   (sha256-checked), mirrors the boot tree, the image store and known_hosts, gets the
   other state (events, push and inventory history) from the active, and only then starts
   keepalived. ``join`` waits (bounded) until the pair is in sync and HOST's mirror is not
   stale.

The dsas package itself is not installed by ``join``: a host gets it from its image (the
master role's) or ``make install``; ``join`` refuses a HOST without it or with another
version (the channel's frames must match).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from ..errors import DsasError
from ..inventory.edit import Document, EditError
from ..inventory.model import Inventory
from ..sshtrust.hostkeys import trusted_keys
from ..sshtrust.sshconf import SshConfig
from .members import PairError, resolve

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

    def run(self, what: str, script: str, data: bytes = b"") -> str:
        try:
            res = subprocess.run([*self.argv, self.address, "sh -c " + shlex.quote(script)],
                                 input=data, capture_output=True, timeout=SSH_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise JoinError(f"{what} on {self.host}: no answer in {SSH_TIMEOUT:g} s") from None
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


def check_dsas(remote: Remote, dsas: str, version: str) -> None:
    out = remote.run("dsas --version", f"command -v {shlex.quote(dsas)} >/dev/null 2>&1 "
                     f"|| {{ echo 'no {dsas} here' >&2; exit 3; }}; {shlex.quote(dsas)} "
                     "--version").strip()
    if out != version:
        raise JoinError(f"{remote.host} runs {out!r}, this master {version!r}: install the "
                        "same dsas there first")
