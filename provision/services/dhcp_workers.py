"""The other DHCP worker processes of ``dsas serve --dhcp-workers N`` (``dhcp_steer``
says who serves whom and why no address is given twice).

Worker 0 is the DHCP service of the serve itself: it binds its sockets, attaches the
steering program, then starts workers 1..N-1 one at a time (``python -m
provision.services.dhcp_workers``, its settings as JSON on stdin), each bound before
the next starts, as the group numbers its sockets in bind order. A worker is the same
DHCP service in a process of its own: its lease table from the shared state store, its
own group commit into it (sqlite serializes the writers), SIGHUP to reload the
inventory file, SIGTERM to stop; it dies with the serve (PR_SET_PDEATHSIG). A worker
that dies makes the DHCP service dead, so the whole serve stops (exit 1) and its
supervisor (systemd) starts it again with the same N. Each worker keeps its own
counters: /metrics shows worker 0's.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .base import ServeContext

READY_TIMEOUT = 30.0  # s for a worker to load its leases and bind its sockets
STOP_TIMEOUT = 5.0  # s after SIGTERM before SIGKILL
PR_SET_PDEATHSIG = 1


def _spec(ctx: ServeContext, index: int) -> dict[str, Any]:
    return {"inventory": ctx.inventory_path, "interfaces": list(ctx.interfaces),
            "state_dir": str(ctx.state_dir), "boot_root": str(ctx.boot_root),
            "http_port": ctx.http_port, "discovery": ctx.discovery,
            "discovery_rate": ctx.discovery_rate, "proxy": ctx.proxy,
            "workers": ctx.dhcp_workers, "index": index}


def start_all(ctx: ServeContext) -> list[subprocess.Popen[bytes]]:
    """Workers 1..N-1, each ready (bound) before the next starts; OSError if one is not
    (the ones started are stopped)."""
    if ctx.inventory_path is None:
        raise OSError("dhcp workers need the inventory's path")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(1, ctx.dhcp_workers):
            proc = subprocess.Popen([sys.executable, "-m", "provision.services.dhcp_workers"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.append(proc)
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(_spec(ctx, index)).encode())
            proc.stdin.close()
            ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
            line = proc.stdout.readline() if ready else b""
            if line.strip() != b"ready":
                raise OSError(f"dhcp worker {index} did not start (exit "
                              f"{proc.poll()}; its log says why)")
    except OSError:
        stop_all(procs)
        raise
    return procs


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)


def all_alive(procs: list[subprocess.Popen[bytes]]) -> bool:
    return all(p.poll() is None for p in procs)


def reload_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGHUP)


def main() -> int:
    """A worker: the DHCP service alone, until SIGTERM (or the serve's death)."""
    from ..cli.common import setup_logging
    from ..inventory import load
    from .dhcp import DhcpService
    from .supervisor import Supervisor

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # the serve gone: so are we
    spec = json.loads(sys.stdin.read())
    if os.getppid() == 1:  # the serve died before the prctl
        return 1
    setup_logging(0)
    ctx = ServeContext(load(spec["inventory"]), spec["interfaces"], Path(spec["state_dir"]),
                       Path(spec["boot_root"]), http_port=spec["http_port"],
                       discovery=spec["discovery"], discovery_rate=spec["discovery_rate"],
                       proxy=spec["proxy"], inventory_path=spec["inventory"],
                       dhcp_workers=spec["workers"], dhcp_worker=spec["index"])
    sup = Supervisor(ctx, [DhcpService(ctx)], spec["inventory"], poll=0.2)
    sup.install_signals()
    return sup.run(on_started=lambda: print("ready", flush=True))


if __name__ == "__main__":
    sys.exit(main())
