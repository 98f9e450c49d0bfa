"""Showing a push as it runs: a live board on a terminal, plain log lines otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

from ..state.pushes import HostResult
from .transfer import Progress

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """What a push tells its operator: per-host phases, progress and results."""

    def begin(self, hosts: list[str], title: str) -> None: ...
    def phase(self, host: str, phase: str) -> None: ...
    def progress(self, host: str, prog: Progress) -> None: ...
    def done(self, res: HostResult) -> None: ...
    def end(self) -> None: ...


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class PlainReporter:
    """One log line per host event; progress lines at most every ``interval`` seconds."""

    def __init__(self, interval: float = 5.0):
        self.interval = interval
        self._last: dict[str, float] = {}

    def begin(self, hosts: list[str], title: str) -> None:
        log.info("%s: %d host(s)", title, len(hosts))

    def phase(self, host: str, phase: str) -> None:
        log.info("host=%s %s", host, phase)

    def progress(self, host: str, prog: Progress) -> None:
        now = time.monotonic()
        if now - self._last.get(host, 0) >= self.interval:
            self._last[host] = now
            log.info("host=%s %d%% %s files=%d rate=%s", host, prog.percent,
                     human_bytes(prog.bytes), prog.files, prog.rate)

    def done(self, res: HostResult) -> None:
        if res.ok:
            log.info("host=%s ok release=%s bytes=%d seconds=%.1f", res.host, res.release,
                     res.bytes, res.seconds)
        else:
            log.warning("host=%s FAILED: %s", res.host, res.reason)

    def end(self) -> None:
        pass


@dataclass
class _Row:
    phase: str = "waiting"
    prog: Progress | None = None
    started: float = 0.0
    result: HostResult | None = None


class TtyReporter:
    """A board redrawn a few times a second: the hosts in flight, then one overall line."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float = 0.25, max_rows: int = 12):
        self.stream, self.interval, self.max_rows = stream, interval, max_rows
        self.rows: dict[str, _Row] = {}
        self._lock = threading.Lock()
        self._drawn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self.title = ""

    def begin(self, hosts: list[str], title: str) -> None:
        self.rows = {h: _Row() for h in hosts}
        self.title = title
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="push-progress", daemon=True)
        self._thread.start()

    def phase(self, host: str, phase: str) -> None:
        with self._lock:
            row = self.rows[host]
            if not row.started:
                row.started = time.monotonic()
            row.phase = phase

    def progress(self, host: str, prog: Progress) -> None:
        with self._lock:
            self.rows[host].prog = prog

    def done(self, res: HostResult) -> None:
        with self._lock:
            self.rows[res.host].result = res
            self.rows[res.host].phase = "ok" if res.ok else "FAILED"

    def end(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._draw()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._draw()

    def lines(self) -> list[str]:
        with self._lock:
            rows = list(self.rows.items())
        active = [(h, r) for h, r in rows if r.result is None and r.started]
        ok = sum(1 for _, r in rows if r.result and r.result.ok)
        failed = [h for h, r in rows if r.result and not r.result.ok]
        moved = sum((r.result.bytes if r.result else (r.prog.bytes if r.prog else 0))
                    for _, r in rows)
        files = sum((r.result.files if r.result else (r.prog.files if r.prog else 0))
                    for _, r in rows)
        secs = max(time.monotonic() - self._t0, 1e-6)
        out = []
        for h, r in active[: self.max_rows]:
            p = r.prog
            detail = (f"{p.percent:3d}% {human_bytes(p.bytes):>10} {p.files:6d} files {p.rate:>12}"
                      if p and r.phase == "transferring" else "")
            out.append(f"  {h:<16} {r.phase:<13} {detail}")
        if len(active) > self.max_rows:
            out.append(f"  ... and {len(active) - self.max_rows} more in flight")
        out.append(
            f"{self.title}: {ok + len(failed)}/{len(rows)} done, {ok} ok, {len(failed)} failed"
            f" | {files} files {human_bytes(moved)} {human_bytes(moved / secs)}/s"
            f" | {secs:.1f}s" + (f" | failed: {', '.join(failed[:5])}" if failed else ""))
        return out

    def _draw(self) -> None:
        lines = self.lines()
        with self._lock:
            buf = "".join("\x1b[1A\x1b[2K" for _ in range(self._drawn))
            buf += "".join(f"\x1b[2K{ln}\n" for ln in lines)
            self._drawn = len(lines)
        self.stream.write(buf)
        self.stream.flush()


def reporter_for(stream: TextIO) -> Reporter:
    return TtyReporter(stream) if stream.isatty() else PlainReporter()
