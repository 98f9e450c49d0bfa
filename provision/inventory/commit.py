"""Write an edited inventory safely: validated whole, one editor at a time, never over a
change made since it was read, atomically, with the replaced version kept.

    snap = read(path)                 # the bytes the edit starts from, and their sha256
    new = <edit snap.text>
    rev = commit(path, snap, new, command, state_dir)

``commit`` validates ``new`` with the real loader (every problem at once, nothing
written), takes the edit lock (``fcntl.flock`` on ``.<file>.lock`` beside the file: the
file itself is replaced by rename, so it cannot carry the lock), checks under the lock
that the file still has the sha256 it was read with, records the old and new versions
in the history and renames a fsynced temporary file into place (then fsyncs the
directory, so the rename itself survives a crash).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..errors import DsasError
from ..fsio import atomic_write
from ..state import StateError, StateStore
from ..state.inventory import InventoryHistory, sha256
from .errors import InventoryError
from .load import loads


class CommitError(DsasError):
    """The edit was refused; nothing was written."""

    exit_code = 1


class LockedError(CommitError):
    """Another edit holds the inventory's lock."""


class StaleError(CommitError):
    """The inventory changed since it was read: the edit is refused."""


@dataclass(frozen=True)
class Snapshot:
    """The inventory file as it was read: its bytes and their sha256."""

    path: Path
    data: bytes
    sha256: str

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def read(path: str | Path) -> Snapshot:
    p = Path(path)
    try:
        data = p.read_bytes()
        data.decode("utf-8")
    except FileNotFoundError:
        raise CommitError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CommitError(f"{p}: cannot read: {e}") from None
    return Snapshot(p, data, sha256(data))


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class EditLock:
    """Exclusive, non-blocking: a second editor is refused at once, told who holds it."""

    def __init__(self, path: str | Path, command: str = ""):
        self.path = lock_path(Path(path))
        self.command = command
        self.fd: int | None = None

    def __enter__(self) -> EditLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CommitError(f"cannot open the edit lock {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockedError(f"another edit of the inventory is in progress{holder}; "
                                  "nothing written: try again when it is done") from None
            raise CommitError(f"cannot lock {self.path}: {e.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": self.command}).encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f" (pid {int(info['pid'])}: {str(info.get('command', ''))[:200]})"
    except (ValueError, KeyError, TypeError, OSError):
        return ""


def validate(text: str, filename: str) -> None:
    """Raise InventoryError with every problem of the would-be inventory."""
    loads(text, filename)


def commit(path: str | Path, snap: Snapshot, new_text: str, command: str,
           state_dir: str | Path, validated: bool = False) -> int | None:
    """Write ``new_text`` over ``path`` (see the module doc). Returns the new revision,
    or None when the text is unchanged. Raises InventoryError (invalid: nothing written),
    LockedError, StaleError or CommitError. ``validated``: the caller has just loaded
    exactly ``new_text`` with the loader (a 1,000-host inventory takes a second to load)."""
    p = Path(path)
    new = new_text.encode("utf-8")
    if new == snap.data:
        return None
    if not validated:
        validate(new_text, str(p))
    store = StateStore(state_dir)
    try:
        history = InventoryHistory(store)
        with EditLock(p, command):
            try:
                current = p.read_bytes()
            except OSError as e:
                raise CommitError(f"{p}: cannot read: {e.strerror}") from None
            if sha256(current) != snap.sha256:
                raise StaleError(
                    f"{p} changed since this command read it (sha256 {snap.sha256[:12]} -> "
                    f"{sha256(current)[:12]}: a hand edit or another command); nothing "
                    "written: run the command again")
            with history.recording(p, current, new, command) as rev:
                atomic_write(p, new)
            return rev
    except (OSError, StateError) as e:
        raise CommitError(f"cannot write {p} or its history in {state_dir}: {e}") from None
    finally:
        store.close()


__all__ = ["CommitError", "EditLock", "InventoryError", "LockedError", "Snapshot",
           "StaleError", "atomic_write", "commit", "read", "validate"]
