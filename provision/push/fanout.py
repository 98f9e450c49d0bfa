"""dsas-push's fan-out: nodes that have the release rsync it to the next ones.

The master rsyncs the release to the first ``width`` targets only (as the rsync
transfer does). Every other target has a parent in a ``width``-ary tree over the
targets in order (``parent``): once the parent holds the release, verified
against the master's manifest (its ``commit`` passed: ``<to>.releases/<id>``
exists), the target's thread has the parent rsync that release over SSH into the
target's ``.incoming-<id>``, then verifies the target against the master's
manifest and switches it, exactly as for an rsync from the master. Whatever
fails on the way (the parent failed or is gone, the relay rsync, the
verification), the target is prepared again and completed by rsync from the
master; it is never switched unverified.

Trust between nodes, for one push only:

- **Login**: the master makes a key pair for the push (``new_key``). The child's
  ``~/.ssh/authorized_keys`` gets the public key with ``from="<parent>",restrict``
  and the push's tag (``authorize_script``) just before the relay, and loses it
  just after (``deauthorize_script``): only that parent can use it, only then.
  The private key goes to the parent over the master's SSH channel on standard
  input (never on a command line), into a private ``mktemp -d`` directory that
  the relay script removes on exit.
- **Host key**: the parent checks the child's host key against one line the
  master writes for it: the key the master's own connection to the child
  presented and dsas verified against its known_hosts a moment before
  (``RemoteNode.host_key_line``), under a ``HostKeyAlias``, with
  ``StrictHostKeyChecking=yes``. That is the master's verified key, not a copy
  of its known_hosts file: the parent learns only its children's keys, no hashed
  or ``[host]:port`` entries need to be found, and a child whose key changed is
  refused by the master before any relay starts.
"""

from __future__ import annotations

import logging
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..sshtrust.sshconf import SshConfig
from .release import NodeLayout
from .targets import Target

log = logging.getLogger("provision.push.push")  # one logger for the whole push

DEFAULT_WIDTH = 4  # targets the master feeds; and children per node
PEER_ALIAS = "dsas-fanout-peer"  # the child's name in the parent's one-line known_hosts
RELAY_TIMEOUT = 3600.0
KEYDIR = "{keydir}"  # in relay_argv's words: the parent's private directory, "$d"


def parent(index: int, width: int) -> int | None:
    """The parent of target ``index`` in a ``width``-ary tree whose first ``width``
    targets the master feeds (None: the master)."""
    if width < 1:
        raise ValueError(f"fan-out width {width} is below 1")
    return None if index < width else index // width - 1


@dataclass(frozen=True)
class PushKey:
    """The push's own key pair: the private key (for the parents) and the public line."""

    private: bytes
    public: str  # "ssh-ed25519 AAAA... <tag>"
    tag: str


def new_key(workdir: Path, rid: str) -> PushKey:
    """A fresh ed25519 key pair for the push ``rid``, made in ``workdir`` (private)."""
    tag = f"dsas-fanout-{rid}"
    path = workdir / "fanout-key"
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", tag, "-f", str(path)],
             timeout=30)
    key = PushKey(path.read_bytes(), path.with_suffix(".pub").read_text().strip(), tag)
    path.unlink()
    return key


def authorize_script(key: PushKey, parent_address: str) -> str:
    """Append the push key, usable from ``parent_address`` only, to the login user's
    authorized_keys (a missing last newline is added first). Prints ``AUTHORIZED 1``."""
    line = f'from="{parent_address}",restrict {key.public}'
    return (
        'umask 077; f="$HOME/.ssh/authorized_keys"; mkdir -p "$HOME/.ssh" || exit 3; '
        # a stale push key (a push that could not clean up) goes first
        f'if grep -q -F -e " dsas-fanout-" "$f" 2>/dev/null; then '
        f'grep -v -F -e " dsas-fanout-" "$f" > "$f.dsas-tmp"; mv -f "$f.dsas-tmp" "$f"; fi; '
        'if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f"; fi; '
        f'printf "%s\\n" {shlex.quote(line)} >> "$f" || exit 3; echo AUTHORIZED 1'
    )


def deauthorize_script(key: PushKey) -> str:
    """Remove the push key's lines (by their tag) from authorized_keys, atomically
    (a new file renamed over); every other line is kept as it was."""
    return (
        'f="$HOME/.ssh/authorized_keys"; [ -f "$f" ] || exit 0; umask 077; '
        f'grep -v -F -e {shlex.quote(" " + key.tag)} "$f" > "$f.dsas-tmp"; '
        'rc=$?; if [ $rc -le 1 ]; then mv -f "$f.dsas-tmp" "$f"; else rm -f "$f.dsas-tmp"; '
        'exit 3; fi'
    )


def relay_argv(cfg: SshConfig, lay: NodeLayout, rid: str, child: str,
               link_dests: Sequence[str], excludes: Sequence[str], delete: bool,
               checksum: bool = False) -> list[str]:
    """The rsync the parent runs: its release ``rid`` into the child's incoming tree.
    ``KEYDIR`` stands for the parent's private directory (``relay_script`` makes it).
    ``checksum``: the push's ``--checksum`` (the manifest checks no content: a file
    the child's base has with the same size and mtime must be compared by content,
    as the master's rsync would)."""
    keydir = KEYDIR
    rsh = (f"ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes "
           f"-o UserKnownHostsFile={keydir}/known_hosts -o GlobalKnownHostsFile=/dev/null "
           f"-o HostKeyAlias={PEER_ALIAS} -o IdentitiesOnly=yes -i {keydir}/key "
           f"-o ConnectTimeout={int(cfg.connect_timeout)} -o ServerAliveInterval=5 "
           f"-o ServerAliveCountMax=3 -p {cfg.port} -l {shlex.quote(cfg.user)}")
    argv = ["rsync", "-a", "--stats", "--no-inc-recursive", "--modify-window=-1", "-e", rsh]
    argv += [f"--link-dest={d}" for d in link_dests]
    argv += [f"--exclude={p}" for p in excludes]
    if checksum:
        argv.append("--checksum")
    if delete:
        argv += ["--delete"] + (["--delete-excluded"] if excludes else [])
    host = f"[{child}]" if ":" in child else child
    return argv + [lay.release(rid) + "/", f"{host}:{lay.incoming(rid)}/"]


KEYDIR_PREFIX = "dsas-fanout."
STALE_KEYDIR_MIN = 120  # minutes: older key directories are a dead relay's


def relay_script(argv: Sequence[str], host_key_line: str) -> str:
    """Run on the parent: the private key from standard input into a fresh private
    directory, the child's host key beside it, then the relay rsync; the directory
    goes on exit. Prints ``RELAYED <bytes sent>`` on success (exit 0), else exits
    with rsync's status."""
    words = []
    for a in argv:  # "$d" stays a shell expansion: the directory is made on the parent
        words.append(shlex.quote(a).replace(KEYDIR, "'\"$d\"'"))
    return (
        # What a relay killed with the node (or the master's connection) left: its key
        # directory, the private key of a past push (its authorized_keys lines are gone
        # already, see authorize_script). Relays are bounded by the transfer's hour.
        f'find /tmp -maxdepth 1 -type d -name "{KEYDIR_PREFIX}*" -user "$(id -u)" '
        f'-mmin +{STALE_KEYDIR_MIN} -exec rm -rf {{}} + 2>/dev/null; '
        f'umask 077; d=$(mktemp -d /tmp/{KEYDIR_PREFIX}XXXXXX) || exit 3; '
        'trap \'rm -rf "$d"\' EXIT; trap \'exit 129\' HUP INT TERM; '
        'cat > "$d/key" || exit 3; '
        f'printf "%s\\n" {shlex.quote(PEER_ALIAS + " " + host_key_line)} > "$d/known_hosts"; '
        f'out=$({" ".join(words)} 2>&1); rc=$?; '
        'if [ $rc -ne 0 ]; then printf "%s\\n" "$out" | tail -n 3 >&2; exit $rc; fi; '
        'echo "RELAYED $(printf "%s\\n" "$out" | sed -n "s/^Total bytes sent: //p" | tr -d ,)"'
    )


class Tree:
    """One push's fan-out tree: who feeds whom, and which nodes hold the release.

    Every target's thread calls ``finished`` exactly once (holds the verified
    release or not); a child's thread ``wait``s for its parent's. The targets
    are handed to the thread pool in order, parents before children, so a
    parent has always started when its child waits (no pool size can deadlock)."""

    def __init__(self, targets: Sequence[Target], width: int):
        self.width = width
        self._index = {t.name: i for i, t in enumerate(targets)}
        self._targets = list(targets)
        self._events = {t.name: threading.Event() for t in targets}
        self._holds: dict[str, bool] = {}

    def parent_of(self, t: Target) -> Target | None:
        p = parent(self._index[t.name], self.width)
        return None if p is None else self._targets[p]

    def finished(self, t: Target, holds: bool) -> None:
        self._holds[t.name] = holds
        self._events[t.name].set()

    def wait(self, t: Target, timeout: float = RELAY_TIMEOUT) -> bool:
        """Whether ``t`` holds the verified release (False if it failed or took too long)."""
        if not self._events[t.name].wait(timeout):
            return False
        return self._holds.get(t.name, False)
