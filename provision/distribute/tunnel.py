"""rsync over the paramiko connection of the remote steps: one SSH handshake per node.

rsync needs a remote shell (``-e``) that runs ``rsync --server ...`` on the node
and connects its standard input and output to it. OpenSSH would make a second
connection (a second key exchange and login, a second sshd fork on the node).
Instead rsync runs ``rshim.py``, which connects to a unix socket served here (in
the push's private 0700 directory), names the host and the command, and hands
over its stdin/stdout/stderr. This process opens an exec channel on the host's
paramiko Transport (already logged in for the remote steps) and pumps bytes:
rsync -> channel, channel -> rsync, channel stderr -> rsync's stderr. The
channel's exit status goes back to the shim, which exits with it, so rsync
sees what it would have seen from ssh.

Bounded: a connection that sends nothing sensible is dropped after a few
seconds; a transfer is bounded by ``timeout`` (and by rsync's own).
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import paramiko

from . import rshim

log = logging.getLogger(__name__)

CHUNK = 1 << 17
MAX_REQUEST = 16384
WINDOW = 8 << 20  # the channel's receive window: a few round trips of a fast stream
EXIT_LOST = 255  # as ssh: the connection, not the command, failed


class Tunnel:
    """Serves rsync shims for the hosts routed to a paramiko Transport."""

    def __init__(self, directory: Path, timeout: float = 3600):
        self.path = directory / "rsync.sock"
        self.timeout = timeout
        self._routes: dict[str, paramiko.Transport] = {}
        self._lock = threading.Condition()
        self._active: dict[str, int] = {}  # host -> sessions being served
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(256)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept_loop, name="rsync-tunnel",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Tunnel:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def rsh(self) -> str:
        """The command rsync runs as its remote shell (``-e``)."""
        argv = [sys.executable, "-S", "-I", rshim.__file__, str(self.path)]
        return " ".join(shlex.quote(a) for a in argv)

    def route(self, host: str, transport: paramiko.Transport) -> None:
        with self._lock:
            self._routes[host] = transport

    def unroute(self, host: str) -> None:
        with self._lock:
            self._routes.pop(host, None)

    def wait_idle(self, host: str, timeout: float = 10) -> bool:
        """Wait until no session of ``host`` is being served (its stderr is all written:
        rsync may exit before its remote shell, when it kills it on an error)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._active.get(host), timeout)

    # -- serving --------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if not self._stopping.is_set():
                    log.exception("rsync tunnel: accept failed")
                return
            threading.Thread(target=self._serve, args=(conn,), name="rsync-pump",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        fds: list[int] = []
        host: str | None = None
        try:
            conn.settimeout(5)
            host, command, fds = read_request(conn)
            with self._lock:
                transport = self._routes.get(host)
                self._active[host] = self._active.get(host, 0) + 1
            if transport is None or not transport.is_active() or len(fds) != 3:
                log.warning("rsync tunnel: no connection for host=%s", host)
                if len(fds) == 3:
                    os.write(fds[2], f"dsas-push: no connection to {host}\n".encode())
                status, up = EXIT_LOST, None
            else:
                status, up = self._run(transport, host, command, fds)
            # Answer first: rsync holds the pipe the upstream pump reads until its
            # remote shell (the shim) has exited.
            conn.sendall(f"{status}\n".encode())
            if up is not None:
                up.join(timeout=30)
        except BrokenPipeError:
            pass  # rsync killed the shim (it does on errors): it has its status already
        except (OSError, ValueError) as e:
            log.warning("rsync tunnel: %s", e)
        finally:
            for fd in fds:
                _close(fd)
            conn.close()
            if host is not None:
                with self._lock:
                    self._active[host] -= 1
                    self._lock.notify_all()

    def _run(self, transport: paramiko.Transport, host: str, command: str,
             fds: list[int]) -> tuple[int, threading.Thread | None]:
        """Run ``command`` on ``host``; (its exit status, the upstream pump to join)."""
        fd_in, fd_out, fd_err = fds
        try:
            chan = transport.open_session(window_size=WINDOW, timeout=30)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            log.warning("host=%s cannot open rsync's channel: %s", host, e)
            os.write(fd_err, f"dsas-push: cannot start rsync on {host}: {e}\n".encode())
            return EXIT_LOST, None
        log.debug("host=%s rsync channel open: %s", host, command)
        up = threading.Thread(target=_upstream, args=(fd_in, chan), name="rsync-up",
                              daemon=True)
        up.start()
        try:
            _downstream(chan, fd_out, fd_err, time.monotonic() + self.timeout)
            _close(fd_out)  # rsync sees EOF now, not when the shim is answered
            fds[1] = -1
            if not chan.status_event.wait(timeout=30):
                return EXIT_LOST, up
            status = chan.recv_exit_status()
            return (status if 0 <= status < 256 else EXIT_LOST), up
        finally:
            chan.close()


def read_request(conn: socket.socket) -> tuple[str, str, list[int]]:
    """(host, command, [stdin, stdout, stderr]) from a shim's first message."""
    data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST + 4, 3)
    for fd in fds:
        os.set_blocking(fd, True)
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        if len(data) >= 4 and struct.unpack("!I", data[:4])[0] > MAX_REQUEST:
            break
        more = conn.recv(MAX_REQUEST)
        if not more:
            break
        data += more
    if len(data) < 4:
        return _bad(fds, "short request")
    size = struct.unpack("!I", data[:4])[0]
    body = data[4:4 + size]
    if size > MAX_REQUEST or len(body) != size or b"\0" not in body:
        return _bad(fds, "malformed request")
    host, _, command = body.decode(errors="replace").partition("\0")
    return host, command, fds


def _bad(fds: list[int], why: str) -> tuple[str, str, list[int]]:
    for fd in fds:
        _close(fd)
    raise ValueError(why)


def _upstream(fd_in: int, chan: paramiko.Channel) -> None:
    """Local rsync -> node, until rsync closes its end or the channel dies."""
    try:
        while True:
            data = os.read(fd_in, CHUNK)
            if not data:
                break
            chan.sendall(data)
    except (OSError, paramiko.SSHException, EOFError):
        pass
    finally:
        try:
            chan.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError):
            pass


def _downstream(chan: paramiko.Channel, fd_out: int, fd_err: int, deadline: float) -> None:
    """Node -> local rsync (and its stderr), until the channel's EOF or the deadline."""
    chan.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            data = chan.recv(CHUNK)
        except TimeoutError:
            _drain_stderr(chan, fd_err)
            continue
        except (OSError, paramiko.SSHException, EOFError):
            break
        if not data:
            break
        try:
            _write_all(fd_out, data)
        except OSError:
            break  # rsync went away
        if chan.recv_stderr_ready():
            _drain_stderr(chan, fd_err)
    _drain_stderr(chan, fd_err)


def _drain_stderr(chan: paramiko.Channel, fd_err: int) -> None:
    while chan.recv_stderr_ready():
        try:
            _write_all(fd_err, chan.recv_stderr(CHUNK))
        except OSError:
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
