"""The remote steps of a push, run on a node through paramiko.

Each step is one short POSIX shell script (one round trip), built here from
quoted parameters, that prints ``KEY value`` lines the master parses. Steps:
``state`` (live release and the releases present), ``prepare`` (make the
incoming directory, pick what ``--link-dest`` uses), ``commit`` (verify the
received tree against the master's manifest, make it a release, switch the live
symlink by atomic rename), ``then`` (the operator's command), ``switch``
(rollback) and ``prune`` (``--keep``).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

import paramiko

from ..errors import DsasError
from ..sshtrust.sshconf import FastTransport, HostKeyError, SshConfig, paramiko_client
from .release import Manifest, NodeLayout, is_release_id, manifest_pipeline

log = logging.getLogger(__name__)


class RemoteError(DsasError):
    """A remote step failed; ``reason`` is one line for the summary table."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class NodeState:
    """What a node's release directory holds: the live release and the others."""

    live: str | None = None  # release id the live symlink points at
    releases: list[str] = field(default_factory=list)  # complete releases, oldest first
    not_symlink: bool = False

    def previous(self) -> str | None:
        """The newest complete release older than the live one."""
        older = [r for r in self.releases if self.live is None or r < self.live]
        return older[-1] if older else None


def parse_kv(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key.isupper():
            out.setdefault(key, []).append(value.strip())
    return out


def _head(lay: NodeLayout) -> str:
    return (f"TO={shlex.quote(lay.live)}; R={shlex.quote(lay.releases)}; "
            f"P={shlex.quote(lay.link_prefix)}; ")


def state_script(lay: NodeLayout) -> str:
    return _head(lay) + (
        'if [ -e "$TO" ] && [ ! -L "$TO" ]; then echo NOTLINK 1; fi; '
        'l=$(readlink "$TO" 2>/dev/null) && echo "LIVE ${l##*/}" || l=""; '
        'if [ -d "$R" ]; then for d in "$R"/*; do [ -d "$d" ] && echo "REL ${d##*/}"; done; '
        'fi; true'
    )


def prepare_script(lay: NodeLayout, rid: str, bases: Sequence[str] = ()) -> str:
    """Read the state (as ``state_script``) and make ``.incoming-<id>``, in one round trip.

    What an interrupted try of the same id left becomes ``.partial-<id>``. Prints
    ``ALREADY`` when the release is live already, ``HAVE`` when it is complete but
    not live (nothing to transfer then). With ``bases`` (see ``prelink.py``), the
    incoming tree starts as hard links of one of them the node has, its live
    release if that is one, else the first in the list; ``LINKED <base>`` says which.
    """
    link = ""
    names = " ".join(shlex.quote(b) for b in bases if is_release_id(b))
    if names:
        link = (f'; B=""; for b in "${{l##*/}}" {names}; do case " {names} " in *" $b "*) '
                'if [ -d "$b" ]; then B=$b; break; fi;; esac; done; '
                'if [ -n "$B" ]; then '
                'if cp -al "$B/." ".incoming-$ID/" 2>/dev/null; then echo "LINKED $B"; '
                'else rm -rf ".incoming-$ID"; mkdir ".incoming-$ID"; fi; fi')
    return state_script(lay) + f"; ID={shlex.quote(rid)}; " + (
        'set -e; if [ -e "$TO" ] && [ ! -L "$TO" ]; then '
        'echo "ERR $TO exists and is not a dsas release symlink"; exit 3; fi; '
        'if [ "$l" = "$P/$ID" ]; then echo ALREADY 1; exit 0; fi; '
        'if [ -d "$R/$ID" ]; then echo HAVE 1; exit 0; fi; '
        '[ -d "$R" ] || mkdir -p "$R"; cd "$R"; '
        'for d in .incoming-* .partial-*; do case "$d" in '
        '.incoming-"$ID"|.partial-"$ID"|".incoming-*"|".partial-*") ;; '
        '*) rm -rf -- "$d";; esac; done; '
        'if [ -d ".incoming-$ID" ]; then rm -rf ".partial-$ID"; '
        'mv -T ".incoming-$ID" ".partial-$ID"; '
        'echo PARTIAL 1; fi; '
        'mkdir ".incoming-$ID"' + link + '; echo OK 1'
    )


def commit_script(lay: NodeLayout, rid: str, expect: Manifest, prev: str | None,
                  delete: bool, prune: Sequence[str] = ()) -> str:
    """Verify the incoming tree, make it release ``rid`` and switch the live symlink to it.

    Without ``--delete``, files of the previous release that the source no longer
    has are carried over (hard links), as plain rsync would leave them.
    """
    inc = lay.incoming(rid)
    carry = ""
    if not delete and prev:
        carry = ('if [ -d "$R/$PREV" ]; then cp -a -l -n "$R/$PREV/." "$R/.incoming-$ID/"; fi; ')
    return _head(lay) + (
        f"ID={shlex.quote(rid)}; PREV={shlex.quote(prev or '')}; "
        f"got=$({manifest_pipeline(inc, lay.releases + '/.manifest-' + rid)}); "
        'echo "GOT $got"; '
        f'if [ "$got" != {shlex.quote(f"{expect.entries} {expect.digest}")} ]; then exit 4; fi; '
        "set -e; " + carry +
        'mv -T "$R/.incoming-$ID" "$R/$ID"; '
        '[ ! -e "$R/.partial-$ID" ] || rm -rf "$R/.partial-$ID"; '
        'sync -f "$R/$ID" || true; '
        + switch_fragment() + "set +e; " + prune_fragment(prune)
    )


def switch_fragment() -> str:
    """Point the live symlink at ``$R/$ID``: a new symlink under a temporary name, renamed over."""
    return ('ln -sfn "$P/$ID" "$TO.dsas-tmp-$ID"; mv -T "$TO.dsas-tmp-$ID" "$TO"; '
            'l=$(readlink "$TO"); echo "LIVE ${l##*/}"; ')


def switch_script(lay: NodeLayout, rid: str) -> str:
    return _head(lay) + f"ID={shlex.quote(rid)}; set -e; " + (
        'if [ ! -d "$R/$ID" ]; then echo "ERR release $ID not on this node"; exit 5; fi; '
        'if [ -e "$TO" ] && [ ! -L "$TO" ]; then echo "ERR $TO is not a symlink"; exit 3; fi; '
        + switch_fragment()
    )


def then_script(lay: NodeLayout, rid: str, command: str) -> str:
    return (f"cd {shlex.quote(lay.live)}/ && DSAS_RELEASE={shlex.quote(rid)} "
            f"DSAS_LIVE={shlex.quote(lay.live)} sh -c {shlex.quote(command)}")


def prune_fragment(remove: Sequence[str]) -> str:
    names = " ".join(shlex.quote(r) for r in remove if is_release_id(r))
    if not names:
        return "true"
    return f'for d in {names}; do rm -rf -- "$R/$d" && echo "PRUNED $d"; done; true'


def abort_script(lay: NodeLayout, rid: str) -> str:
    """After a failed push: drop the incoming tree (the live release is untouched)."""
    q = shlex.quote(rid)
    return _head(lay) + f'rm -rf -- "$R/.incoming-"{q} "$R/.partial-"{q}'


def to_prune(state: NodeState, keep: int) -> list[str]:
    """Releases beyond the newest ``keep`` (never the live one)."""
    if keep <= 0:
        return []
    old = state.releases[:-keep] if len(state.releases) > keep else []
    return [r for r in old if r != state.live]


class RemoteNode:
    """One paramiko connection to a node, reused for every step of its push."""

    def __init__(self, cfg: SshConfig, name: str, address: str, compress: bool = False):
        """``compress``: zlib on the connection (after the login, as OpenSSH's
        ``Compression``), for a node whose bulk goes another way (uftp): its steps'
        scripts, most of what the master sends it, shrink about threefold; never for
        a connection that carries rsync's data (random data costs CPU, gains nothing)."""
        self.cfg, self.name, self.address = cfg, name, address
        self.compress = compress
        self._client: paramiko.SSHClient | None = None

    def connect(self) -> None:
        # The key is loaded here, by its type, and given to paramiko: with key_filename,
        # paramiko's _auth tries each key class in turn and keeps the last failure (an
        # ed25519 key fails as ECDSA) in a local, a reference cycle (exception,
        # traceback, frame) that holds every calling frame, the caller's first step
        # (RemoteNode.run) included, until the garbage collector runs. See run().
        try:
            pkey = paramiko.PKey.from_path(self.cfg.key)
        except (OSError, ValueError, TypeError, paramiko.SSHException) as e:
            raise RemoteError(f"cannot use the SSH key {self.cfg.key}: {_short(e)}") from None
        client = paramiko_client(self.cfg)
        try:
            client.connect(self.address, port=self.cfg.port, username=self.cfg.user,
                           pkey=pkey, timeout=self.cfg.connect_timeout,
                           banner_timeout=self.cfg.connect_timeout,
                           auth_timeout=self.cfg.connect_timeout,
                           allow_agent=False, look_for_keys=False, compress=self.compress,
                           transport_factory=FastTransport)
        except HostKeyError as e:
            client.close()
            raise RemoteError(str(e)) from None
        except paramiko.BadHostKeyException as e:
            client.close()
            raise RemoteError(
                f"{self.name}: host key CHANGED ({e.key.get_name()} {e.key.fingerprint}, "
                f"trusted {e.expected_key.fingerprint}); refusing") from None
        except paramiko.AuthenticationException:
            client.close()
            raise RemoteError(f"authentication as {self.cfg.user} refused") from None
        except (TimeoutError, OSError, paramiko.SSHException) as e:
            # paramiko's own thread keeps the real cause (no banner: "No existing session")
            transport = client.get_transport()
            saved = getattr(transport, "saved_exception", None) if transport else None
            greeted = bool(getattr(transport, "remote_version", "")) if transport else None
            client.close()
            raise RemoteError(f"unreachable ({self._cause(saved or e, greeted)})") from None
        transport = client.get_transport()
        if isinstance(transport, FastTransport):
            transport.watch(self.cfg.alive_interval, self.cfg.alive_count)
        self._client = client

    def lost(self) -> str | None:
        """Why the watch closed this node's connection (it stopped answering), if it did."""
        transport = self._client.get_transport() if self._client is not None else None
        return transport.lost if isinstance(transport, FastTransport) else None

    def _cause(self, e: BaseException, greeted: bool | None = None) -> str:
        """One line for why the connection failed, in the operator's words; ``greeted``:
        whether the server sent its SSH version line (None: no connection was made)."""
        where, secs = f"{self.address}:{self.cfg.port}", f"{self.cfg.connect_timeout:g} s"
        text = str(e)
        if "protocol banner" in text or (greeted is False and "No existing session" in text):
            return f"{where} accepted the connection but sent no SSH greeting in {secs}"
        if "No existing session" in text:
            return f"the SSH handshake with {where} did not complete in {secs}"
        if isinstance(e, TimeoutError) or text == "timed out":
            return f"no answer from {where} in {secs}"
        if isinstance(e, ConnectionRefusedError):
            return f"{where} refused the connection (no sshd listening?)"
        if isinstance(e, EOFError | ConnectionResetError) or "reset by peer" in text:
            return f"{where} closed the connection before the SSH handshake"
        return _short(e)

    def run(self, script: str, timeout: float = 300, data: bytes | None = None
            ) -> tuple[int, str, str]:
        """Run ``script`` on the node; ``data``: its standard input (else none)."""
        if self._client is None:
            self.connect()
        assert self._client is not None
        chan = None
        try:
            stdin, out, err = self._client.exec_command(script, timeout=timeout)
            chan = out.channel
            # Finalized now, in this thread. Its finalizer (close, shutdown_write) takes
            # the channel's lock; left to the garbage collector (this frame held by a
            # reference cycle), it ran in whichever thread the collection started in:
            # in paramiko's transport thread, holding that lock while it handled the
            # node's CLOSE, the thread waited on itself forever, and the node's next
            # channel open timed out after 30 s (issue 13 item 13). The steps read no
            # input but ``data``: the node's command sees EOF at once after it.
            if data is not None:
                stdin.write(data)
            stdin.close()
            del stdin
            stdout = out.read().decode(errors="replace")
            stderr = err.read().decode(errors="replace")
            rc = chan.recv_exit_status()
            if rc == -1 and not chan.get_transport().is_active():  # closed under the step
                raise RemoteError(f"connection lost ({self.lost() or 'closed'})")
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as e:
            raise RemoteError(f"connection lost ({self.lost() or _short(e)})") from None
        finally:
            if chan is not None:
                chan.close()  # now, in this thread: not whenever the garbage collector runs
        log.debug("host=%s rc=%s out=%r err=%r", self.name, rc, stdout[-300:], stderr[-300:])
        return rc, stdout, stderr

    @property
    def connected(self) -> bool:
        """Whether a connection was made (it may have died since)."""
        return self._client is not None

    def transport(self) -> paramiko.Transport:
        """The logged-in connection (made now if need be), for rsync's channel."""
        if self._client is None:
            self.connect()
        assert self._client is not None
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise RemoteError(f"connection lost ({self.lost() or 'transport closed'})")
        return transport

    def host_key_line(self) -> str:
        """``<type> <base64>`` of the host key this connection verified (dsas's
        known_hosts accepted it), for a peer that must check the same node."""
        key = self.transport().get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"

    def state(self, lay: NodeLayout) -> NodeState:
        rc, out, err = self.run(state_script(lay), timeout=60)
        return state_from(parse_kv(out))

    def prepare(self, lay: NodeLayout, rid: str, bases: Sequence[str] = ()
                ) -> tuple[NodeState, dict[str, list[str]]]:
        """State and prepare in one round trip; raises RemoteError if it failed."""
        rc, out, err = self.run(prepare_script(lay, rid, bases), timeout=120)
        kv = parse_kv(out)
        if rc != 0:
            raise RemoteError(f"prepare: {first_error(out, err)}")
        return state_from(kv), kv

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def state_from(kv: dict[str, list[str]]) -> NodeState:
    return NodeState(
        live=kv["LIVE"][0] if kv.get("LIVE") else None,
        releases=sorted(r for r in kv.get("REL", []) if is_release_id(r)),
        not_symlink="NOTLINK" in kv,
    )


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:120]


def first_error(out: str, err: str) -> str:
    """One line explaining a failed step: an ERR line, else the last stderr line."""
    kv = parse_kv(out)
    if "ERR" in kv:
        return kv["ERR"][0]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "failed without a message"
