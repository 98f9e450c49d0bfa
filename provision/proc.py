"""The one way dsas runs a program: never through a shell, always with a timeout,
output captured, and a failure raised as one ``CommandError`` whose message is one
line naming the command (shell-quoted, secrets redacted), the exit status or signal,
and the last lines of its stderr.

``run`` is for programs that finish; ``spawn`` is for the few callers that stream a
long-running child's output (rsync's progress, tar's checkpoints, mmdebstrap's log):
it starts the child the same way and never leaves it running behind the caller.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import DsasError

REDACTED = "<redacted>"
TAIL_LINES = 3  # stderr lines kept in the error
TAIL_CHARS = 400
REAP_TIMEOUT = 30  # seconds to wait for a killed child


class CommandError(DsasError):
    """A program failed, timed out, or is not installed. ``command`` is the redacted,
    shell-quoted command line; ``returncode`` is None when it never exited by itself."""

    def __init__(self, command: str, reason: str, *, returncode: int | None = None,
                 stderr: str = "", stdout: str = ""):
        super().__init__(f"`{command}` {reason}")
        self.command = command
        self.reason = reason
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout


@dataclass(frozen=True)
class Completed:
    """A program that finished: its argv, exit status and captured output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: Any  # str, or bytes with text=False
    stderr: Any

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """One line on what went wrong: stderr's last lines, else the exit status."""
        return tail(self.stderr or "") or status(self.returncode)


def quote(argv: Sequence[str | os.PathLike[str]], secret: Collection[str] = ()) -> str:
    """The command line as a shell would read it, every ``secret`` value replaced."""
    out = []
    for a in argv:
        s = os.fspath(a)
        for value in secret:
            if value:
                s = s.replace(value, REDACTED)
        out.append(s)
    return shlex.join(out)


def tail(text: str | bytes, lines: int = TAIL_LINES) -> str:
    """The last non-empty lines of ``text``, joined into one line."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)[-TAIL_CHARS:]


def status(returncode: int) -> str:
    """'exited 3' or 'killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited {returncode}"


def failure(argv: Sequence[str | os.PathLike[str]], returncode: int, stderr: str | bytes = "",
            *, secret: Collection[str] = (), stdout: str | bytes = "") -> CommandError:
    """The error for a child that exited with ``returncode`` (for ``spawn`` users)."""
    err = tail(stderr) or tail(stdout)
    reason = status(returncode) + (f": {_redact(err, secret)}" if err else "")
    return CommandError(quote(argv, secret), reason, returncode=returncode,
                        stderr=_text(stderr), stdout=_text(stdout))


def run(argv: Sequence[str | os.PathLike[str]], *, timeout: float, input: str | bytes | None = None,
        check: bool = True, text: bool = True, cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None, secret: Collection[str] = ()) -> Completed:
    """Run ``argv`` (no shell) to completion within ``timeout`` seconds, output captured.

    Raises CommandError when the program is missing, times out, or (with ``check``)
    exits non-zero; ``check=False`` returns the non-zero result instead."""
    args = _argv(argv)
    try:
        res = subprocess.run(args, input=input, capture_output=True, text=text, timeout=timeout,
                             cwd=cwd, env=None if env is None else dict(env), check=False)
    except OSError as exc:
        raise _not_started(args, exc, secret) from None
    except subprocess.TimeoutExpired as exc:
        raise CommandError(quote(args, secret), f"timed out after {timeout:g}s"
                           + (f": {_redact(tail(exc.stderr or b''), secret)}"
                              if exc.stderr else "")) from None
    done = Completed(tuple(args), res.returncode, res.stdout, res.stderr)
    if check and res.returncode != 0:
        raise failure(args, res.returncode, res.stderr, secret=secret, stdout=res.stdout)
    return done


@contextmanager
def spawn(argv: Sequence[str | os.PathLike[str]], *, secret: Collection[str] = (),
          stdin: int | IO[Any] | None = subprocess.DEVNULL, **popen_kw: Any
          ) -> Iterator[subprocess.Popen[Any]]:
    """Start ``argv`` (no shell) for a caller that streams its output; the block must
    wait for it (``wait``). Leaving the block by an exception, or with the child still
    running, kills it and reaps it (bounded); its pipes are closed on the way out."""
    if popen_kw.get("shell"):
        raise ValueError("proc.spawn never uses a shell")
    args = _argv(argv)
    try:
        child = subprocess.Popen(args, stdin=stdin, **popen_kw)
    except OSError as exc:
        raise _not_started(args, exc, secret) from None
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=REAP_TIMEOUT)
        for f in (child.stdin, child.stdout, child.stderr):
            if f is not None:
                f.close()


def wait(child: subprocess.Popen[Any], timeout: float, *, secret: Collection[str] = ()) -> int:
    """``child.wait`` that raises CommandError (naming the command) on timeout."""
    try:
        return child.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise CommandError(quote(_display(child.args), secret),
                           f"timed out after {timeout:g}s") from None


def lines(stream: IO[str]) -> Iterator[str]:
    """A text stream's lines, split at "\\r" as well as "\\n" (progress meters redraw
    with "\\r"); read as it arrives."""
    buf = ""
    while True:
        ch = stream.read(1)
        if not ch:
            break
        if ch in "\r\n":
            yield buf
            buf = ""
        else:
            buf += ch
    if buf:
        yield buf


def _argv(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(argv, (str, bytes)):
        raise TypeError("proc takes an argument list, never a shell command string")
    return [os.fspath(a) for a in argv]


def _display(args: Any) -> list[str]:
    return [os.fspath(a) for a in args] if isinstance(args, (list, tuple)) else [str(args)]


def _not_started(args: list[str], exc: OSError, secret: Collection[str]) -> CommandError:
    if isinstance(exc, FileNotFoundError) and exc.filename in (None, args[0]):
        why = f"{args[0]} not found (install it: see tools/apt-packages.txt)"
    else:  # not executable, or the cwd is missing (then it is the file named)
        where = exc.filename if exc.filename not in (None, args[0]) else args[0]
        why = f"{where}: {exc.strerror or exc}"
    return CommandError(quote(args, secret), f"failed: {why}")


def _redact(text: str, secret: Collection[str]) -> str:
    for value in secret:
        if value:
            text = text.replace(value, REDACTED)
    return text


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data
