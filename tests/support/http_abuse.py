"""Abusive HTTP clients for the hardening lab (run inside a lab namespace).

    python -m tests.support.http_abuse post URL SOURCE COUNT BODY
        COUNT POSTs of BODY on one keep-alive connection from SOURCE; prints
        {"status": {code: n}} as JSON.
    python -m tests.support.http_abuse raw HOST PORT HEX...
        each HEX (a hex-encoded request) on its own connection; prints the
        status line answered to each (or "closed") as a JSON list.
    python -m tests.support.http_abuse abort HOST PORT PATH COUNT
        COUNT GETs of PATH, each read for 64 KiB and then reset (SO_LINGER 0):
        a client that vanishes mid-transfer; prints {"aborted": n}.
    python -m tests.support.http_abuse trickle HOST PORT SECONDS
        a request head sent one header line every 0.5 s for up to SECONDS;
        prints {"closed_by_server": bool, "lines_sent": n}.
Every socket has a timeout; every loop is bounded.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import sys
import time
import urllib.parse


def post(url: str, source: str, count: int, body: str) -> dict:
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=10,
                                      source_address=(source, 0))
    status: dict[str, int] = {}
    for _ in range(count):
        try:
            conn.request("POST", u.path, body=body.encode(),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            code = str(r.status)
        except (OSError, http.client.HTTPException):
            conn.close()
            code = "error"
        status[code] = status.get(code, 0) + 1
    conn.close()
    return {"status": status}


def raw(host: str, port: int, requests: list[bytes]) -> list[str]:
    out = []
    for req in requests:
        with socket.create_connection((host, port), timeout=10) as s:
            try:
                s.sendall(req)
                data = b""
                while b"\r\n" not in data and len(data) < 4096:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                data = b""
            out.append(data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed")
    return out


def abort(host: str, port: int, path: str, count: int) -> dict:
    n = 0
    for _ in range(count):
        with socket.create_connection((host, port), timeout=10) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            got = 0
            while got < 64 * 1024:
                chunk = s.recv(16384)
                if not chunk:
                    break
                got += len(chunk)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            n += 1
    return {"aborted": n}


def trickle(host: str, port: int, seconds: float) -> dict:
    sent = 0
    closed = False
    deadline = time.monotonic() + seconds
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        while time.monotonic() < deadline:
            try:
                s.sendall(f"X-Slow-{sent}: x\r\n".encode())
                sent += 1
                s.settimeout(0.5)
                if s.recv(4096) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
    return {"closed_by_server": closed, "lines_sent": sent}


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "post":
        res: object = post(args[0], args[1], int(args[2]), args[3])
    elif cmd == "raw":
        res = raw(args[0], int(args[1]), [bytes.fromhex(h) for h in args[2:]])
    elif cmd == "abort":
        res = abort(args[0], int(args[1]), args[2], int(args[3]))
    elif cmd == "trickle":
        res = trickle(args[0], int(args[1]), float(args[2]))
    else:
        raise SystemExit(f"unknown command {cmd}")
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
