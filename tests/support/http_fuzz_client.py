"""Fuzzed HTTP requests against the master's HTTP service (run inside a lab namespace).

    python -m tests.support.http_fuzz_client HOST PORT CASES SEED

Each case is one request on its own connection: a mutated boot-file GET (paths,
Range, If-None-Match, If-Range), a mutated event POST (random JSON, random bytes,
broken chunking, wrong lengths) or a valid request with random bytes flipped,
inserted or cut in its head. Up to IN_FLIGHT connections are open at once; each
is read until the server closes it, answers, or ``WAIT`` seconds pass. Prints
{"cases": n, "answered": n, "status": {code: n}} as JSON.
"""

from __future__ import annotations

import json
import random
import selectors
import socket
import sys
import time

IN_FLIGHT = 48  # below the server's default per-client cap (64)
WAIT = 1.0
FIELDS = ["host", "stage", "reason", "detail", "image", "mac", "ssh_key", "boot_id", "token"]
STAGES = ["dhcp", "kernel", "initramfs", "dsas.conf", "image", "configured", "ready", "failed"]
PATHS = ["/images/tiny/1/vmlinuz", "/hosts/n1/dsas.conf", "/hosts/n1/boot.ipxe", "/boot.ipxe",
         "/pxelinux.cfg/default", "/api/v1/nodes", "/metrics", "/healthz", "/"]


def rand_json(r: random.Random, depth: int = 0) -> object:
    kind = r.randrange(8 if depth < 6 else 4)
    if kind == 0:
        return r.choice(STAGES + ["n1", "n2", "ghost", ""])
    if kind == 1:
        return "".join(chr(r.randrange(0, 0x2FF)) for _ in range(r.randrange(40)))
    if kind == 2:
        return r.choice([0, -1, 1e308, True, None, 2**70])
    if kind == 3:
        return "x" * r.choice([1, 199, 200, 201, 2048, 3000])
    if kind in (4, 5):
        return {r.choice(FIELDS + ["", "x"]): rand_json(r, depth + 1)
                for _ in range(r.randrange(6))}
    return [rand_json(r, depth + 1) for _ in range(r.randrange(4))]


def event_body(r: random.Random) -> bytes:
    k = r.randrange(6)
    if k == 0:
        return bytes(r.randrange(256) for _ in range(r.randrange(200)))
    if k == 1:
        return ("[" * r.randrange(500, 3000)).encode()
    if k == 2:
        doc = {"host": r.choice(["n1", "n2", "m1", "ghost"]), "stage": r.choice(STAGES)}
        doc[r.choice(FIELDS)] = rand_json(r)  # type: ignore[assignment]
        return json.dumps(doc).encode()
    return json.dumps(rand_json(r)).encode("utf-8", "surrogatepass")


def rand_path(r: random.Random) -> bytes:
    base = r.choice(PATHS).encode()
    k = r.randrange(5)
    if k == 0:
        return base
    if k == 1:
        return b"/" + bytes(r.randrange(0x21, 0x7F) for _ in range(r.randrange(300)))
    if k == 2:
        return base + b"/.." * r.randrange(5) + b"/%2e%2e/%00" * r.randrange(3)
    if k == 3:
        return b"/" + b"%" + bytes(r.randrange(256) for _ in range(3))
    return base + b"?" + bytes(r.randrange(0x21, 0x7F) for _ in range(r.randrange(50)))


def request(r: random.Random) -> bytes:
    k = r.randrange(4)
    if k == 0:  # an event POST
        body = event_body(r)
        if r.randrange(5) == 0:  # chunked, sometimes broken
            size = f"{len(body):x}" if r.randrange(2) else r.choice(["zz", "-1", "ffffffffff"])
            head = b"Transfer-Encoding: chunked\r\n"
            body = size.encode() + b"\r\n" + body + b"\r\n0\r\n\r\n"
        else:
            n = len(body) if r.randrange(6) else r.choice([0, max(0, len(body) - 3)])
            head = f"Content-Length: {n}\r\n".encode()
        return (b"POST /api/v1/events HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
                + head + b"Connection: close\r\n\r\n" + body)
    headers = [b"Host: m", b"Connection: close"]
    for name, values in ((b"Range", [b"bytes=0-99", b"bytes=-5", b"bytes=99999999999-",
                                     b"bytes=5-1", b"bytes=0-1,3-4", b"bytes=" + b"9" * 40]),
                         (b"If-None-Match", [b"*", b'"r-x"', b"W/\"s-1-2\"", b"\x01\x02"]),
                         (b"If-Range", [b'"s-0-0"', b"Mon, 01 Jan 2024 00:00:00 GMT"])):
        if r.randrange(3) == 0:
            headers.append(name + b": " + r.choice(values))
    method = r.choice([b"GET", b"HEAD", b"GET", b"PUT", b"DELETE", b"OPTIONS", b"BREW"])
    req = method + b" " + rand_path(r) + b" HTTP/1.1\r\n" + b"\r\n".join(headers) + b"\r\n\r\n"
    if k == 3:  # raw mutation of the head
        b = bytearray(req[:-4])
        for _ in range(r.randrange(1, 6)):
            op, i = r.randrange(3), r.randrange(len(b))
            if op == 0:
                b[i] = r.randrange(256)
            elif op == 1:
                b[i:i] = bytes(r.randrange(256) for _ in range(r.randrange(1, 20)))
            else:
                del b[i:i + r.randrange(1, 10)]
        req = bytes(b) + b"\r\n\r\n"
    return req


def main(argv: list[str]) -> int:
    host, port, cases, seed = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    r = random.Random(seed)
    sel = selectors.DefaultSelector()
    status: dict[str, int] = {}
    sent = answered = 0
    open_: dict[socket.socket, tuple[float, bytearray]] = {}
    deadline = time.monotonic() + cases * 0.05 + 120  # bounded, however the server behaves
    while (sent < cases or open_) and time.monotonic() < deadline:
        while sent < cases and len(open_) < IN_FLIGHT:
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect((host, port))
                s.sendall(request(r))
                s.shutdown(socket.SHUT_WR)
            except OSError:
                status["send_error"] = status.get("send_error", 0) + 1
                s.close()
                sent += 1
                continue
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
            open_[s] = (time.monotonic(), bytearray())
            sent += 1
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj  # type: ignore[assignment]
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if data and len(open_[s][1]) < 256:
                open_[s][1].extend(data[:256])
                continue
            if data:
                continue
            finish(sel, open_, s, status)
            answered += 1
        now = time.monotonic()
        for s in [s for s, (t, _) in open_.items() if now - t > WAIT]:
            finish(sel, open_, s, status)
    for s in list(open_):
        finish(sel, open_, s, status)
    print(json.dumps({"cases": sent, "answered": answered, "status": status}), flush=True)
    return 0


def finish(sel: selectors.BaseSelector, open_: dict, s: socket.socket,
           status: dict[str, int]) -> None:
    head = bytes(open_.pop(s)[1])
    sel.unregister(s)
    s.close()
    parts = head.split(b" ", 2)
    code = parts[1].decode("latin-1") if head.startswith(b"HTTP/") and len(parts) > 1 \
        else ("none" if not head else "garbage")
    status[code] = status.get(code, 0) + 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
