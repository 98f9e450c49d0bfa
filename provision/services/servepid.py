"""How an inventory edit reaches a running `dsas serve`: a pid file, SIGHUP, a receipt.

`dsas serve` holds an exclusive ``flock`` on ``<state-dir>/serve.pid`` for as long as
it runs (so a pid file left by a crash is recognised as stale, never signalled: a
reused pid is not ours), and after every (re)load it writes the sha256 of the inventory
it now serves to ``<state-dir>/serve.loaded``. An edit sends SIGHUP to the serve that
serves the edited file and waits, bounded, until the receipt shows the new sha256, so
it can tell the operator that DHCP, DNS and the boot files answer with the new facts.

Why a signal rather than the serve polling the file: the reload happens exactly when an
edit has committed a validated file (never on a half-saved hand edit), the edit command
can say whether the serve took it, and SIGHUP is already the reload path (systemd's
ExecReload); a hand edit is reloaded the same way, with `kill -HUP` or systemctl reload.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PID_FILE = "serve.pid"
LOADED_FILE = "serve.loaded"


class ServePidFile:
    """The serve's side: take the pid file, write receipts, release on exit."""

    def __init__(self, state_dir: str | Path, inventory_path: str | Path):
        self.dir = Path(state_dir)
        self.inventory = str(Path(inventory_path).resolve())
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / PID_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.warning("another dsas serve holds %s; inventory edits will not signal this "
                        "one (give each serve its own --state-dir)", self.dir / PID_FILE)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "inventory": self.inventory}).encode()
                  + b"\n", 0)
        self.fd = fd
        return True

    def loaded(self, sha: str) -> None:
        """Record the sha256 of the inventory now served (atomically replaced)."""
        if self.fd is None:
            return
        tmp = self.dir / f".{LOADED_FILE}.{os.getpid()}"
        try:
            tmp.write_text(json.dumps({"pid": os.getpid(), "sha256": sha, "at": time.time()}))
            os.replace(tmp, self.dir / LOADED_FILE)
        except OSError as e:  # a full disk must not stop the serve: edits just wait longer
            log.warning("cannot write %s: %s", self.dir / LOADED_FILE, e)

    def release(self) -> None:
        if self.fd is not None:
            (self.dir / LOADED_FILE).unlink(missing_ok=True)
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


@dataclass(frozen=True)
class Notice:
    """What telling the running serve to reload did."""

    pid: int | None
    reloaded: bool
    message: str


def running_serve(state_dir: str | Path) -> dict[str, object] | None:
    """The pid file's contents if a serve holds it now; None if none runs."""
    p = Path(state_dir) / PID_FILE
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: a serve is running
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # nobody holds it: left over from a serve that died
    except ValueError:
        return None
    finally:
        os.close(fd)


def _loaded_sha(state_dir: Path, pid: int) -> str | None:
    try:
        info = json.loads((state_dir / LOADED_FILE).read_text())
    except (OSError, ValueError):
        return None
    return str(info.get("sha256")) if info.get("pid") == pid else None


def notify_serve(state_dir: str | Path, inventory_path: str | Path, sha: str,
                 timeout: float = 10.0) -> Notice:
    """SIGHUP the serve of ``inventory_path`` and wait until it serves ``sha``."""
    sd = Path(state_dir)
    info = running_serve(sd)
    if info is None:
        return Notice(None, False, f"no dsas serve runs with state dir {sd}; it reads the "
                                   "new inventory when it starts")
    pid = int(str(info["pid"]))
    if info.get("inventory") != str(Path(inventory_path).resolve()):
        return Notice(pid, False, f"dsas serve (pid {pid}) serves {info.get('inventory')}, "
                                  "not this file: not signalled")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        return Notice(pid, False, f"cannot signal dsas serve (pid {pid}): {e.strerror}; "
                                  f"reload it by hand (kill -HUP {pid})")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded: the serve reloads within its poll (1 s)
        if _loaded_sha(sd, pid) == sha:
            return Notice(pid, True, f"dsas serve (pid {pid}) reloaded: DHCP, DNS and boot "
                                     "files answer with the new inventory")
        time.sleep(0.05)
    return Notice(pid, False, f"dsas serve (pid {pid}) was signalled but did not confirm the "
                              f"reload within {timeout:g} s; see its log")
