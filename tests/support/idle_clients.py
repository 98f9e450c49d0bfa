"""Hold many idle TCP connections to a server (run inside a lab namespace).

    python -m tests.support.idle_clients HOST PORT COUNT SECONDS [SOURCE]

Opens COUNT connections (a refused or reset one is counted, not retried),
prints ``open N`` once, then ``closed K`` whenever more of them were closed by
the server, and exits after SECONDS or once every connection is closed.
Sends nothing: what an idle or half-open client looks like to the server.
"""

from __future__ import annotations

import selectors
import socket
import sys
import time


def main(argv: list[str]) -> int:
    host, port, count, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    source = argv[4] if len(argv) > 4 else None
    sel = selectors.DefaultSelector()
    socks = []
    failed = 0
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            if source:
                s.bind((source, 0))
            s.connect((host, port))
        except OSError:
            failed += 1
            s.close()
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    print(f"open {len(socks)} failed {failed}", flush=True)
    closed = 0
    deadline = time.monotonic() + seconds
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                closed += 1
                print(f"closed {closed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
