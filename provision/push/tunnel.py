"""rsync over the paramiko connection of the remote steps: one SSH handshake per node.

rsync needs a remote shell (``-e``) that runs ``rsync --server ...`` on the node
and connects its standard input and output to it. OpenSSH would make a second
connection (a second key exchange and login, a second sshd fork on the node).
Instead rsync runs ``rshim.sh`` under bash, about 1 ms of CPU (the Python shim
it replaces cost 9 ms, and 20 ms on a busy master, per host). A session gives
rsync two pipes (``pass_fds``):

1. the shim writes its PID on the first, and the numbers of its duplicates of
   its standard input, output and error; this process reads the host and the
   command from ``/proc/PID/cmdline`` and takes copies of the three with
   ``pidfd_getfd(2)`` (Linux 5.6; permitted because the shim is this process's
   descendant);
2. it answers ``ok`` on the second pipe, and the shim closes its own copies (so
   rsync sees the stream end when the node's side ends);
3. it opens an exec channel on the host's paramiko Transport, already logged in
   for the remote steps, and pumps bytes: rsync -> channel, channel -> rsync,
   channel stderr -> rsync's stderr;
4. the channel's exit status goes back on the second pipe, and the shim exits
   with it, so rsync sees what it would have seen from ssh.

Where ``pidfd_getfd`` is refused (an older kernel, a seccomp filter),
``unavailable()`` says why and dsas-push carries rsync over OpenSSH instead.

Bounded: the session ends with its rsync; a transfer is bounded by ``timeout``
(and by rsync's own). If this process dies, the second pipe ends and the shim
exits 255, as ssh does when its connection is lost.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import select
import shlex
import subprocess
import threading
import time
from pathlib import Path

import paramiko

from .. import proc

log = logging.getLogger(__name__)

CHUNK = 1 << 17
WINDOW = 8 << 20  # the channel's receive window: a few round trips of a fast stream
EXIT_LOST = 255  # as ssh: the connection, not the command, failed
SHIM = Path(__file__).with_name("rshim.sh")
SYS_PIDFD_GETFD = 438  # the same number on every architecture (Linux 5.6)


def pidfd_getfd(pidfd: int, target: int) -> int:
    """A copy (close-on-exec) of descriptor ``target`` of the process ``pidfd`` refers to."""
    libc = _libc()
    fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pidfd_getfd: {os.strerror(err)}")
    return int(fd)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


@functools.cache
def unavailable() -> str | None:
    """Why this process cannot take a shim's descriptors (None: it can).

    Tried on a child, as the shims are: taking from oneself is always allowed,
    while Yama's ptrace_scope or a seccomp filter may refuse it for a child."""
    fds: list[int] = []
    try:
        with proc.spawn(["sleep", "10"], stdin=subprocess.PIPE) as child:  # killed on the way out
            fds.append(os.pidfd_open(child.pid))
            fds.append(pidfd_getfd(fds[0], 0))
        return None
    except (OSError, AttributeError, proc.CommandError) as e:
        return str(e)
    finally:
        for fd in fds:
            _close(fd)


def shim_request(cmdline: bytes) -> tuple[str, str]:
    """(host, command) from a shim's ``/proc/PID/cmdline``:
    ``bash [options] rshim.sh REQ REP [-l USER] HOST COMMAND...``."""
    argv = [a.decode(errors="surrogateescape") for a in cmdline.split(b"\0")]
    if argv and argv[-1] == "":
        argv.pop()
    try:
        rest = argv[argv.index(str(SHIM)) + 3:]
    except ValueError:
        raise ValueError("not dsas-push's rsync shim") from None
    if rest[:1] == ["-l"]:  # rsync passes the user this way; the connection already has one
        rest = rest[2:]
    if len(rest) < 2:
        raise ValueError("no remote command")
    return rest[0], " ".join(rest[1:])  # joined as ssh joins them


class Session:
    """One rsync run carried over ``transport`` (see the module's docstring).

    Use as a context manager around the rsync process: give rsync ``rsh`` as its
    ``-e`` and ``pass_fds``, call ``settle`` once it has exited."""

    def __init__(self, host: str, transport: paramiko.Transport, timeout: float = 3600):
        self.host, self.transport, self.timeout = host, transport, timeout
        # req: the shim -> this process (its PID); rep: this process -> the shim.
        # The serving thread owns req_r and rep_w and closes them; close() the others.
        self._req_r, self._req_w = os.pipe()
        self._rep_r, self._rep_w = os.pipe()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"rsync-{host}", daemon=True)

    @property
    def pass_fds(self) -> tuple[int, int]:
        return (self._req_w, self._rep_r)

    @property
    def rsh(self) -> str:
        """rsync's ``-e``: the shim, told which of its descriptors are the two pipes."""
        argv = ["bash", str(SHIM), str(self._req_w), str(self._rep_r)]
        return " ".join(shlex.quote(a) for a in argv)

    def __enter__(self) -> Session:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settle(self, timeout: float = 10) -> bool:
        """After rsync has exited: wait until the session is served (the node's stderr
        all written; rsync may exit before its remote shell, when it kills it on an
        error). False if it still runs after ``timeout``."""
        self._closing.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        if not self.settle(30):
            log.warning("host=%s rsync session still running; left to finish", self.host)
        if self._thread.ident is None:  # never started: its descriptors are ours to close
            _close(self._req_r)
            _close(self._rep_w)
        _close(self._req_w)
        _close(self._rep_r)

    # -- serving (the thread) -------------------------------------------------

    def _serve(self) -> None:
        fds: list[int] = []
        try:
            request = self._read_request()
            if request is None:
                return
            pid, streams = request
            try:
                host, command, fds = self._take(pid, streams)
            except (OSError, ValueError) as e:
                log.warning("host=%s cannot take rsync's streams from pid %d: %s",
                            self.host, pid, e)
                self._reply(f"dsas-push cannot take rsync's streams: {e}")
                return
            self._reply("ok")
            if host != self.host:
                os.write(fds[2], f"dsas-push: rsync asked for {host}, not {self.host}\n".encode())
                self._reply(str(EXIT_LOST))
                return
            status, up = self._run(command, fds)
            # Answer before joining the upstream pump: rsync holds the stream it
            # reads until its remote shell (the shim) has exited.
            self._reply(str(status))
            if up is not None:
                up.join(timeout=30)
        except BrokenPipeError:
            pass  # rsync killed the shim (it does on errors): it has its status already
        except (OSError, ValueError) as e:
            log.warning("host=%s rsync session: %s", self.host, e)
        finally:
            for fd in fds:
                _close(fd)
            _close(self._req_r)
            _close(self._rep_w)

    def _read_request(self) -> tuple[int, list[int]] | None:
        """The shim's PID and its descriptors holding rsync's stdin, stdout and stderr;
        None if rsync ended without starting it."""
        buf = b""
        while not self._closing.is_set():
            ready, _, _ = select.select([self._req_r], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(self._req_r, 64)
            if not chunk:
                return None
            buf += chunk
            line, nl, _ = buf.partition(b"\n")
            if nl or len(buf) > 64:
                words = line.split()
                if not nl or len(words) != 4 or not all(w.isdigit() for w in words):
                    raise ValueError(f"malformed request {buf[:64]!r}")
                return int(words[0]), [int(w) for w in words[1:]]
        return None

    def _take(self, pid: int, streams: list[int]) -> tuple[str, str, list[int]]:
        """(host, command, copies of the shim's descriptors ``streams``: rsync's
        stdin, stdout and stderr)."""
        pidfd = os.pidfd_open(pid)
        fds: list[int] = []
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            ours = [os.fsencode(str(SHIM)), str(self._req_w).encode(), str(self._rep_r).encode()]
            if ours[0] not in argv or argv[argv.index(ours[0]):][:3] != ours:
                raise ValueError("the PID is not this session's shim")
            host, command = shim_request(b"\0".join(argv))
            for target in streams:
                fds.append(pidfd_getfd(pidfd, target))
        except BaseException:
            for fd in fds:
                _close(fd)
            raise
        finally:
            os.close(pidfd)
        for fd in fds:
            os.set_blocking(fd, True)
        return host, command, fds

    def _reply(self, line: str) -> None:
        os.write(self._rep_w, line.encode() + b"\n")

    def _run(self, command: str, fds: list[int]) -> tuple[int, threading.Thread | None]:
        """Run ``command`` on the host; (its exit status, the upstream pump to join)."""
        fd_in, fd_out, fd_err = fds
        try:
            chan = self.transport.open_session(window_size=WINDOW, timeout=30)
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            log.warning("host=%s cannot open rsync's channel: %s", self.host, e)
            os.write(fd_err, f"dsas-push: cannot start rsync on {self.host}: {e}\n".encode())
            return EXIT_LOST, None
        log.debug("host=%s rsync channel open: %s", self.host, command)
        deadline = time.monotonic() + self.timeout
        up = threading.Thread(target=_upstream, args=(fd_in, chan, deadline), name="rsync-up",
                              daemon=True)
        up.start()
        try:
            _downstream(chan, fd_out, fd_err, deadline)
            _close(fd_out)  # rsync sees EOF now, not when the shim is answered
            fds[1] = -1
            if not chan.status_event.wait(timeout=30):
                return EXIT_LOST, up
            status = chan.recv_exit_status()
            if 0 <= status < 256:
                return status, up
            lost = getattr(self.transport, "lost", None)  # FastTransport.watch closed it
            if lost:
                os.write(fd_err, f"dsas-push: {lost}\n".encode())
            return EXIT_LOST, up
        finally:
            chan.close()


def _upstream(fd_in: int, chan: paramiko.Channel, deadline: float) -> None:
    """Local rsync -> node, until rsync closes its end, the channel dies or the deadline."""
    try:
        while True:
            data = os.read(fd_in, CHUNK)
            if not data:
                break
            if not _send_all(chan, data, deadline):
                break
    except (OSError, paramiko.SSHException, EOFError):
        pass
    finally:
        try:
            chan.shutdown_write()
        except (OSError, paramiko.SSHException, EOFError):
            pass


def _send_all(chan: paramiko.Channel, data: bytes, deadline: float) -> bool:
    """``chan.sendall`` that waits for a closed window as long as the channel lives.

    The channel's timeout is ``_downstream``'s 1 s poll, and paramiko applies it to
    sends too (one timeout per channel): a node that read nothing for a second (a
    busy disk, a loaded CPU) made ``sendall`` raise, and the stream to a healthy
    node ended half-way. A timeout here sends nothing (paramiko raises it before
    taking any window), so the same bytes are offered again. False: the channel
    is closed or the deadline passed."""
    view = data
    while view:
        try:
            n = chan.send(view)
        except TimeoutError:
            if chan.closed or time.monotonic() > deadline:
                return False
            continue
        if n <= 0:  # closed or EOF sent
            return False
        view = view[n:]
    return True


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
