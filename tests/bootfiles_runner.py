"""Run the TFTP service with non-default settings (worker cap, timeout) until SIGTERM.

``python -m tests.bootfiles_runner INVENTORY BOOT_ROOT STATE_DIR --max-transfers N``;
``dsas serve`` has no flags for these, and the cap test needs a small cap.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from provision.inventory import load
from provision.services.base import ServeContext
from provision.services.tftp import TftpService, TftpSettings


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("inventory")
    p.add_argument("boot_root")
    p.add_argument("state_dir")
    p.add_argument("--max-transfers", type=int, default=128)
    p.add_argument("--timeout", type=float, default=5.0)
    a = p.parse_args(argv)
    ctx = ServeContext(inventory=load(a.inventory), interfaces=[], state_dir=Path(a.state_dir),
                       boot_root=Path(a.boot_root))
    svc = TftpService(ctx, TftpSettings(max_transfers=a.max_transfers, timeout=a.timeout))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    svc.start()
    print("ready", flush=True)
    while not stop.wait(0.2):
        if not svc.alive():
            return 1
    svc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
