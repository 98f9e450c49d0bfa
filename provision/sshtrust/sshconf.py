"""SSH settings for a push: who to log in as, which key, and the known_hosts dsas manages.

Host keys are checked against ``<state-dir>/ssh/known_hosts`` and nothing else,
both by paramiko (remote steps) and by the ``ssh`` that rsync runs
(``UserKnownHostsFile=... StrictHostKeyChecking=yes``). A key gets there only
through ``dsas trust HOST`` (scanned, its fingerprint shown) or from a node's
boot report (:func:`add_known_host`). Unknown or changed keys are errors that
name the host.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
from paramiko.common import cMSG_GLOBAL_REQUEST

from .. import proc
from ..errors import DsasError
from . import DEFAULT_PORT, DEFAULT_USER

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PORT", "DEFAULT_USER"]  # re-exported: callers import them from here too


class HostKeyError(DsasError):
    """The node's host key is unknown to dsas, or differs from the one trusted."""


@dataclass(frozen=True)
class SshConfig:
    state_dir: Path
    user: str = DEFAULT_USER
    port: int = DEFAULT_PORT
    identity: Path | None = None  # default: <state-dir>/ssh/id_ed25519
    connect_timeout: float = 10.0
    # a connection whose node answers no keepalive for interval x count seconds is
    # closed (FastTransport.watch), as OpenSSH's ServerAliveInterval/CountMax do
    alive_interval: float = 5.0
    alive_count: int = 3

    @property
    def ssh_dir(self) -> Path:
        return self.state_dir / "ssh"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def key(self) -> Path:
        return self.identity or self.ssh_dir / "id_ed25519"

    def host_pattern(self, address: str) -> str:
        """How OpenSSH (and paramiko) name the host in known_hosts."""
        return address if self.port == 22 else f"[{address}]:{self.port}"

    def ssh_command(self, control_dir: Path) -> list[str]:
        """The ``ssh`` rsync runs (-e): strict host keys, batch mode, connection reuse."""
        return [
            "ssh",
            "-F", "/dev/null",
            "-o", "BatchMode=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-i", str(self.key),
            "-o", f"ConnectTimeout={int(self.connect_timeout)}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={control_dir}/%C",
            "-o", "ControlPersist=120",
            # AES-GCM is the cheapest cipher with AES-NI; the others stay as fallback.
            "-o", "Ciphers=aes128-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-ctr",
            "-p", str(self.port),
            "-l", self.user,
        ]

    def rsync_rsh(self, control_dir: Path) -> str:
        return " ".join(shlex.quote(a) for a in self.ssh_command(control_dir))


def ensure_client_key(cfg: SshConfig) -> Path:
    """Create dsas's own SSH key (ed25519, no passphrase) the first time it is needed."""
    key = cfg.key
    if key.exists():
        return key
    key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dsas-push", "-f", str(key)],
             timeout=30)
    return key


def fingerprint(key_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a base64 public key blob."""
    digest = hashlib.sha256(base64.b64decode(key_b64)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_key_lines(text: str) -> list[tuple[str, str]]:
    """(type, base64) pairs from ssh-keyscan output or a ``*.pub`` file; comments dropped."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        for i, f in enumerate(fields[:-1]):
            if f.startswith(("ssh-", "ecdsa-")):
                try:
                    base64.b64decode(fields[i + 1], validate=True)
                except ValueError:
                    break
                out.append((f, fields[i + 1]))
                break
    return out


def scan_host_keys(address: str, port: int, timeout: float = 10) -> list[tuple[str, str]]:
    res = proc.run(["ssh-keyscan", "-T", str(int(timeout)), "-p", str(port), address],
                   timeout=timeout + 10, check=False)  # no key: an empty answer, said by the caller
    return parse_key_lines(res.stdout)


def add_known_host(cfg: SshConfig, address: str, keys: list[tuple[str, str]]) -> int:
    """Trust ``keys`` for ``address`` (replacing older entries); returns how many were written."""
    cfg.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    pattern = cfg.host_pattern(address)
    kept = []
    if cfg.known_hosts.exists():
        for line in cfg.known_hosts.read_text().splitlines():
            if line.split(" ", 1)[0].split(",").count(pattern) == 0:
                kept.append(line)
    kept += [f"{pattern} {t} {b}" for t, b in keys]
    tmp = cfg.known_hosts.with_suffix(".tmp")
    tmp.write_text("\n".join(kept) + "\n")
    os.replace(tmp, cfg.known_hosts)
    return len(keys)


class _Reject(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"host key of {hostname} is unknown ({key.get_name()} "
            f"{key.fingerprint}); check it and run `dsas trust`"
        )


class FastTransport(paramiko.Transport):
    """paramiko's Transport preferring AES-GCM (AES-NI, no separate MAC: rsync's bytes
    go through it) and the plain curve25519 key exchange (cheap for the node's sshd)."""

    # Short lists: the KEXINIT goes to every node of a push, and paramiko's own list of
    # ciphers and MACs (CBC, 3DES, MD5, SHA-1) is longer than it is useful; what stays
    # is what any OpenSSH of the last decade offers.
    _preferred_ciphers = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr",
                          "aes256-ctr")
    _preferred_macs = ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-256", "hmac-sha2-512")
    _preferred_kex = ("curve25519-sha256@libssh.org",
                      *(k for k in paramiko.Transport._preferred_kex
                        if "curve25519" not in k and "exchange" not in k
                        and k not in ("ecdh-sha2-nistp384", "ecdh-sha2-nistp521")))

    def __init__(self, sock: Any, *args: Any, **kwargs: Any) -> None:
        # No Nagle: the remote steps are request/answer exchanges of small packets;
        # with Nagle each channel open waited for the node's delayed ACK (~40 ms).
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET,
                                                                socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, *args, **kwargs)
        self._pings = 0  # keepalives sent and not answered yet
        self._pings_lock = threading.Lock()  # never held across a send
        self._answered = time.monotonic()
        self._watched = False
        self._ended = threading.Event()  # set by close(): the watch ends with it
        self.lost: str | None = None  # why the watch closed the connection

    def close(self) -> None:
        self._ended.set()
        super().close()

    def watch(self, interval: float = 5.0, misses: int = 3) -> None:
        """Close this connection once the node stops answering.

        Every ``interval`` seconds a ``keepalive@openssh.com`` request that wants a
        reply goes out (sshd refuses it, at once: any reply is proof of life). With no
        reply for ``interval * misses`` seconds the connection is closed, so every
        channel on it ends: a step fails "connection lost", rsync's stream ends, and
        the push goes on with the other nodes, instead of waiting on a frozen node
        (SIGSTOP, a hung kernel, a cable pulled without a reset) for its step's
        timeout or a transfer's hour. paramiko's own ``set_keepalive`` wants no reply:
        it keeps a NAT entry open, it cannot tell a dead peer from a quiet one.

        A ping is sent from its own short thread: a send can block behind a full TCP
        window (the frozen node reads nothing), and the watch must still count.
        Replies to global requests come in the order asked and carry no id, so a
        watched connection takes no other global request that wants a reply.
        """
        self._watched = True
        threading.Thread(target=self._watch, args=(interval, misses),
                         name=f"dsas-ssh-watch-{self.name}", daemon=True).start()

    def _watch(self, interval: float, misses: int) -> None:
        limit = interval * misses
        sender: threading.Thread | None = None
        self._answered = time.monotonic()
        while self.active:
            silent = time.monotonic() - self._answered
            if silent > limit and self._pings:
                self.lost = (f"no answer to {self._pings} SSH keepalives in {silent:.0f} s; "
                             f"the node is frozen or gone")
                log.warning("ssh connection to %s: %s: closing it", self._peer(), self.lost)
                self.close()
                return
            if sender is None or not sender.is_alive():
                sender = threading.Thread(target=self._ping, daemon=True,
                                          name=f"dsas-ssh-ping-{self.name}")
                sender.start()
            self._ended.wait(interval)  # one wake-up per interval, at once on close

    def _peer(self) -> str:
        try:
            return str(self.sock.getpeername()[0])
        except (OSError, AttributeError, IndexError):
            return "?"

    def _ping(self) -> None:
        m = paramiko.Message()
        m.add_byte(cMSG_GLOBAL_REQUEST)
        m.add_string("keepalive@openssh.com")
        m.add_boolean(True)
        with self._pings_lock:
            if not self._pings:
                self._answered = time.monotonic()  # silence counts from a question
            self._pings += 1
        try:
            self._send_user_message(m)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the connection is going: the transport's own thread says why

    def global_request(self, kind: str, data: Any = None, wait: bool = True) -> Any:
        if wait and self._watched:
            raise paramiko.SSHException(
                f"global request {kind!r} on a watched connection: its reply could not "
                f"be told from a keepalive's")
        return super().global_request(kind, data, wait)

    def _answer(self) -> bool:
        """A global reply arrived: True if it answers a ping (then it is consumed)."""
        with self._pings_lock:
            self._answered = time.monotonic()
            if self._pings:
                self._pings -= 1
                return True
        return False

    def _parse_request_success(self, m: paramiko.Message) -> None:
        if not self._answer():
            super()._parse_request_success(m)

    def _parse_request_failure(self, m: paramiko.Message) -> None:
        if not self._answer():
            super()._parse_request_failure(m)


def paramiko_client(cfg: SshConfig) -> paramiko.SSHClient:
    """An SSHClient that trusts only dsas's known_hosts."""
    client = paramiko.SSHClient()
    if cfg.known_hosts.exists():
        client.load_host_keys(str(cfg.known_hosts))
    client.set_missing_host_key_policy(_Reject())
    return client
