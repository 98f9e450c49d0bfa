"""A stand-in for the master's HTTP side in the node-boot tests: serves a
directory (hosts/<name>/dsas.conf, images/...) and records every
POST /api/v1/events as one JSON line in an events file.

Run as a process inside the lab namespace:
    python tests/support/fake_master.py ROOT EVENTS_FILE BIND_ADDRESS PORT
(`dsas serve` replaces it in the full lab test.)
"""

from __future__ import annotations

import functools
import json
import sys
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class Handler(SimpleHTTPRequestHandler):
    events_file = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, 65536))
        if self.path != "/api/v1/events":
            self.send_error(404)
            return
        try:
            event = json.loads(body)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.send_error(400, f"bad event: {exc}")
            return
        event["t"] = time.time()
        event["peer"] = self.client_address[0]
        with open(self.events_file, "a") as f:
            f.write(json.dumps(event) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        sys.stderr.write(f"{self.address_string()} {format % args}\n")
        sys.stderr.flush()


def main(argv: list[str]) -> int:
    root, events, bind, port = argv[0], argv[1], argv[2], int(argv[3])
    Handler.events_file = events
    handler = functools.partial(Handler, directory=root)
    server = ThreadingHTTPServer((bind, port), handler)
    print(f"fake master on {bind}:{port} serving {root}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
