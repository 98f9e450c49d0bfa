"""Load the inventory in a child process, bounded in time and memory: for a running server.

``dsas serve`` reloads on SIGHUP. ``load`` bounds what a file can make the parser
do (size, nesting, aliases), but a reload must never stop or hang the server
whatever the file holds, so it runs ``load`` in a child (``python -m
provision.inventory.isolated PATH``) that sends back the ``Inventory`` or its
problems, pickled, on its standard output. The child is killed past a deadline
(``$DSAS_INVENTORY_PARSE_TIMEOUT``, 60 s) or when the server is asked to stop,
and limited to ``MEMORY_LIMIT`` of address space; either way the caller gets an
ordinary ``InventoryError`` and keeps the inventory it has.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import InventoryError, Problem
from .load import load, load_bytes
from .model import Inventory

TIMEOUT_ENV = "DSAS_INVENTORY_PARSE_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # a 4 MiB inventory of 37,000 hosts takes 23 s of CPU
MEMORY_LIMIT = 2 << 30  # address space of the child: a 4 MiB inventory needs ~500 MB
_POLL = 0.1


def parse_timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        value = 0
    if not 0 < value <= 3600:
        raise InventoryError([Problem(f"${TIMEOUT_ENV}", None, "",
                                      f"must be 0-3600 seconds, not {raw[:40]!r}")])
    return value


def load_isolated(path: str | os.PathLike[str], timeout: float | None = None,
                  cancel: threading.Event | None = None, data: bytes | None = None) -> Inventory:
    """``load(path)`` in a child process; InventoryError for a bad file, a parse that
    takes longer than ``timeout``, a child that fails, or ``cancel`` being set.

    With ``data`` (the file's bytes, read by the caller) the child parses those bytes,
    not the file: the caller then knows exactly what was loaded (a reload's receipt)."""
    name = str(path)
    limit = parse_timeout() if timeout is None else timeout
    args = [sys.executable, "-m", __name__, name] + (["--stdin"] if data is not None else [])
    proc = subprocess.Popen(args, stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = _wait(proc, name, limit, cancel, data)
    return _answer(proc.returncode, out, err, name)


def _wait(proc: subprocess.Popen[bytes], name: str, limit: float,
          cancel: threading.Event | None, data: bytes | None) -> tuple[bytes, bytes]:
    """The child's stdout and stderr once it exits; killed (InventoryError) past ``limit``
    seconds or when ``cancel`` is set."""
    deadline = time.monotonic() + limit
    feed = data  # given to the first communicate() only: a retry must not send it again
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise InventoryError([Problem(
                    name, None, "",
                    f"not parsed within {limit:g} s (${TIMEOUT_ENV} sets the limit)")])
            if cancel is not None and cancel.is_set():
                raise InventoryError([Problem(name, None, "", "not loaded: stopping")])
            try:  # communicate reads as it waits: the child never blocks on a full pipe
                out, err = proc.communicate(feed, timeout=min(_POLL, left))
                return out, err
            except subprocess.TimeoutExpired:
                feed = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _answer(returncode: int | None, out: bytes, err: bytes, name: str) -> Inventory:
    """The child's Inventory, or an InventoryError with its problems or why it failed."""
    if returncode == 0:
        try:
            kind, value = pickle.loads(out)  # our own child's answer
        except Exception:  # noqa: BLE001 - anything else on its stdout: reported below
            kind, value = "", None
        if kind == "ok" and isinstance(value, Inventory):
            return value
        if kind == "problems":
            raise InventoryError(list(value))
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip()]
    why = lines[-1][:200] if lines else f"exit status {returncode}"
    raise InventoryError([Problem(name, None, "", f"the inventory parser failed: {why}")])


def _child(path: str, from_stdin: bool = False) -> int:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass
    try:
        inv = load_bytes(sys.stdin.buffer.read(), path) if from_stdin else load(path)
        answer: tuple[str, object] = ("ok", inv)
    except InventoryError as e:
        answer = ("problems", e.problems)
    except MemoryError:
        answer = ("problems", [Problem(path, None, "", f"needs more than {MEMORY_LIMIT >> 20} "
                                                       "MiB to parse")])
    sys.stdout.buffer.write(pickle.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child(str(Path(sys.argv[1])), "--stdin" in sys.argv[2:]))
