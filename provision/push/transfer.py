"""The transfer: the real ``rsync`` over ``ssh``, its progress and its statistics."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import proc
from ..sshtrust.sshconf import SshConfig

# --info=progress2 lines: "  12,345,678  45%   11.77MB/s    0:00:01 (xfr#12, to-chk=100/5000)"
PROGRESS_RE = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+)\s+\S+(?:\s+\(xfr#(\d+),)?")
STAT_RES = {
    "sent": re.compile(r"^Total bytes sent: ([\d,]+)", re.M),
    "files": re.compile(r"^Number of regular files transferred: ([\d,]+)", re.M),
    "size": re.compile(r"^Total transferred file size: ([\d,]+)", re.M),
}
# rsync(1) EXIT VALUES that mean the connection, not the data, was the problem.
CONNECTION_CODES = {10: "socket I/O error", 12: "protocol data stream error",
                    30: "timeout", 35: "timeout waiting for daemon", 255: "ssh failed"}


@dataclass
class Progress:
    """rsync's progress on one host."""

    bytes: int = 0  # bytes of file data handled so far (rsync's progress2 count)
    percent: int = 0
    files: int = 0
    rate: str = ""


@dataclass
class TransferResult:
    """What one rsync transfer did."""

    returncode: int
    sent: int  # bytes on the wire from the master
    files: int  # regular files transferred
    size: int  # file data that had to move
    seconds: float
    reason: str  # empty when returncode == 0


def rsync_argv(
    src: str,
    dest: str,
    rsh: str,
    link_dests: Sequence[str] = (),
    excludes: Sequence[str] = (),
    checksum: bool = False,
    dry_run: bool = False,
    delete: bool = False,
    delete_excluded: bool = False,
    files_from: str | None = None,
) -> list[str]:
    """rsync's argv. mtimes are compared to the nanosecond (``--modify-window=-1``;
    rsync's default is the second): a file rewritten within the second of its last
    push with the same size is sent, not taken from the base release.

    ``files_from``: a NUL-separated list of the only names to visit
    (``prelink.delta_names``): listed names missing from ``src`` are deleted, no
    recursion (but "." brings the top level, as ``--dirs`` does), no excludes (the
    list was made with them)."""
    argv = ["rsync", "-a", "--stats", "--info=progress2", "--no-inc-recursive",
            "--modify-window=-1", "-e", rsh]
    if files_from is not None:
        argv += [f"--files-from={files_from}", "--from0", "--delete-missing-args", "--force"]
        if checksum:
            argv.append("--checksum")
        return argv + [src.rstrip("/") + "/", dest.rstrip("/") + "/"]
    argv += [f"--link-dest={d}" for d in link_dests]
    argv += [f"--exclude={p}" for p in excludes]
    if checksum:
        argv.append("--checksum")
    if dry_run:
        argv.append("--dry-run")
    if delete:
        argv.append("--delete")
    if delete_excluded:
        argv.append("--delete-excluded")
    return argv + [src.rstrip("/") + "/", dest.rstrip("/") + "/"]


def remote_dest(cfg: SshConfig, address: str, path: str) -> str:
    return f"{cfg.user}@{address}:{path}"


def _num(text: str) -> int:
    return int(text.replace(",", ""))


def parse_progress(line: str) -> Progress | None:
    m = PROGRESS_RE.match(line)
    if not m:
        return None
    return Progress(_num(m.group(1)), int(m.group(2)), int(m.group(4) or 0), m.group(3))


def parse_stats(text: str) -> dict[str, int]:
    out = {}
    for key, rx in STAT_RES.items():
        m = rx.search(text)
        out[key] = _num(m.group(1)) if m else 0
    return out


def explain(returncode: int, stderr: str) -> str:
    """One line: why rsync failed. Disk full and lost connections are named as such."""
    if "No space left on device" in stderr:
        return "disk full (No space left on device)"
    if "Host key verification failed" in stderr:
        return "host key verification failed (ssh)"
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    msgs = [ln for ln in lines if ln.startswith("dsas-push:")]  # from the tunnel: the cause
    msgs += [ln for ln in lines if ln.startswith("rsync:") or "error" in ln.lower()]
    detail = (msgs or lines or [""])[0][:160]
    if returncode in CONNECTION_CODES:
        detail = detail or CONNECTION_CODES[returncode]
        return f"connection lost: rsync exit {returncode} ({detail})"
    return f"rsync exit {returncode}: {detail}"


def run_rsync(
    argv: Sequence[str],
    on_progress: Callable[[Progress], None] | None = None,
    timeout: float = 3600,
    cwd: Path | None = None,
    settle: Callable[[], object] | None = None,
    pass_fds: Sequence[int] = (),
) -> TransferResult:
    """Run rsync; feed its progress lines to ``on_progress``; bounded by ``timeout``.

    ``settle`` is called after rsync exits and before its stderr is read (whatever
    carries rsync's bytes may still be writing the remote side's messages).
    ``pass_fds``: descriptors rsync and its remote shell inherit (``tunnel.py``).
    """
    t0 = time.monotonic()
    errf = tempfile.TemporaryFile()  # a file, not a pipe: a chatty stderr cannot block rsync
    # No BASH_ENV: the remote shell may be a bash script (tunnel.py's shim).
    env = {k: v for k, v in os.environ.items() if k != "BASH_ENV"}
    tail: list[str] = []
    try:
        with proc.spawn(argv, stdout=subprocess.PIPE, stderr=errf, cwd=cwd, env=env,
                        pass_fds=tuple(pass_fds)) as child:  # killed and reaped on any error
            buf = _follow(child, on_progress, tail, t0 + timeout)
            rc = child.wait(timeout=30)
    finally:
        if settle is not None:
            settle()
        errf.seek(0)
        stderr = errf.read().decode(errors="replace")
        errf.close()
    tail.append(buf.decode(errors="replace"))
    stats = parse_stats("\n".join(tail))
    return TransferResult(rc, stats["sent"], stats["files"], stats["size"],
                          time.monotonic() - t0, "" if rc == 0 else explain(rc, stderr))


def _follow(child: subprocess.Popen[bytes], on_progress: Callable[[Progress], None] | None,
            tail: list[str], deadline: float) -> bytes:
    """Feed rsync's progress lines to ``on_progress`` and its other lines to ``tail``
    until it closes stdout (or past ``deadline``: killed); the unfinished last line."""
    assert child.stdout is not None
    buf = b""
    while True:
        chunk = os.read(child.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        *parts, buf = re.split(rb"[\r\n]", buf)
        for raw in parts:
            line = raw.decode(errors="replace")
            prog = parse_progress(line)
            if prog is not None:
                if on_progress is not None:
                    on_progress(prog)
            elif line.strip():
                tail.append(line)
        if time.monotonic() > deadline:
            child.kill()
            break
    return buf
