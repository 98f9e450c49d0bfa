"""The HTTP service's connections: accept, cap, time out, and keep quiet.

asyncio's own accept loop is what turned 1,100 idle connections into a 201 MB
log: on EMFILE, Python 3.11's ``_accept_connection`` logs a traceback and goes
on trying for the rest of its backlog-sized batch, and schedules one more
retry each time, so the tracebacks multiply. So the listening socket is ours:

* ``max_connections`` open connections at most, ``max_per_client`` from one
  address; one more is closed at once (counted, logged once per interval);
* out of descriptors (EMFILE/ENFILE) on accept: a spare descriptor kept for
  that moment is closed, the waiting connections are accepted and closed at
  once (the clients see a close, not a hang), the spare is taken again; one
  line per interval, never a traceback, never an exit;
* a connection must send a complete request head within ``header_timeout``
  (from accept, or from the first byte of a later request); between requests
  it may stay idle for ``idle_timeout`` (aiohttp's keep-alive timeout);
* aiohttp's full traceback per malformed request, and asyncio's per client
  that vanished mid-sendfile, become one rate-limited line each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from ..errors import OUT_OF_DESCRIPTORS
from ..observability.logsafe import safe
from ..observability.metrics import Metrics
from ..observability.quietlog import QuietLog

log = logging.getLogger("provision.services.http")

M_CONNECTIONS = "dsas_http_connections"  # gauge: open now
M_REFUSED = "dsas_http_connections_refused_total"  # {reason=cap|descriptors}
M_CLOSED = "dsas_http_connections_closed_total"  # {reason=header_timeout}
M_BAD_REQUESTS = "dsas_http_bad_requests_total"  # malformed, rejected by aiohttp's parser

ACCEPT_BATCH = 128  # connections accepted per wake-up of the listening socket
_CLIENT_FAULTS = (HttpProcessingError, ConnectionError, asyncio.CancelledError, TimeoutError)


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the HTTP service (``dsas serve --http-*``)."""

    max_connections: int = 512
    max_per_client: int = 64  # open connections from one address
    header_timeout: float = 10.0  # s to send a complete request head
    idle_timeout: float = 30.0  # s a keep-alive connection may wait between requests
    log_interval: float = 60.0  # s between two log lines of the same kind


class Connection(RequestHandler):
    """aiohttp's request handler plus the header timeout and one-line error logs."""

    def __init__(self, listener: Listener, client: str, manager: web.Server, **kw: Any):
        super().__init__(manager, **kw)
        self.listener = listener
        self.client = client
        self._head_timer: asyncio.TimerHandle | None = None
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._counted = True
        self._arm()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:  # a complete request head arrived
            self._disarm()
        elif data and self._head_timer is None:  # the first byte of another request
            self._arm()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.listener.closed(self.client)
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._head_timer = self._loop.call_later(self.listener.limits.header_timeout,
                                                 self._head_expired, self._request_count)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self, count: int) -> None:
        self._head_timer = None
        if self._request_count == count:  # still no complete head
            self.listener.metrics.inc(M_CLOSED, reason="header_timeout")
            self.force_close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        msg = (args[0] % args[1:]) if args else "error"
        if isinstance(exc, BaseException) and not isinstance(exc, _CLIENT_FAULTS):
            # our own bug: keep the traceback, but not once per request
            self.listener.quiet.log(f"bug:{type(exc).__name__}", logging.ERROR,
                                    "http: %s", safe(msg), exc_info=exc)
            return
        if isinstance(exc, HttpProcessingError):
            self.listener.metrics.inc(M_BAD_REQUESTS)
        what = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else ""
        self.listener.quiet.warning(f"client:{type(exc).__name__}", "http: %s: %s",
                                    safe(msg), safe(what))


class Listener:
    """The listening socket and its accept loop, on the service's event loop."""

    def __init__(self, server: web.Server, limits: Limits, metrics: Metrics,
                 handler_kwargs: dict[str, Any]):
        self.server = server
        self.limits = limits
        self.metrics = metrics
        self.quiet = QuietLog(log, limits.log_interval)
        self._kwargs = handler_kwargs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._socks: list[socket.socket] = []  # one per listening address
        self._spare: int | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._paused: asyncio.TimerHandle | None = None
        self.open = 0
        self.per_client: dict[str, int] = {}

    def start(self, host: str, port: int, backlog: int = 1024) -> None:
        """Listen on ``host``:``port`` (IPv4 or IPv6 literal); call again to listen on
        another address: every socket shares the same connection caps."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        first = not self._socks
        self._socks.append(sock)
        if first:
            self._spare = _take_spare()
            loop.set_exception_handler(self._loop_exception)
            self.metrics.set(M_CONNECTIONS, 0)
        loop.add_reader(sock.fileno(), self._accept, sock)

    def close(self) -> None:
        if self._paused is not None:
            self._paused.cancel()
        for sock in self._socks:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._socks = []
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    def closed(self, client: str) -> None:
        self.open -= 1
        n = self.per_client.get(client, 0) - 1
        if n > 0:
            self.per_client[client] = n
        else:
            self.per_client.pop(client, None)
        self.metrics.set(M_CONNECTIONS, self.open)

    # -- accepting -----------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        assert self._loop is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno in OUT_OF_DESCRIPTORS:
                    self._shed(sock, e)
                else:
                    self.quiet.warning(f"accept:{e.errno}", "http: accept failed: %s",
                                       e.strerror)
                    self._pause(1.0)
                return
            if self.open >= self.limits.max_connections:
                _reset(conn)
                self.metrics.inc(M_REFUSED, reason="cap")
                self.quiet.warning("cap", "http: %d connections open (--http-max-connections);"
                                          " refused one from %s", self.open, addr[0])
                continue
            client = addr[0]
            if self.per_client.get(client, 0) >= self.limits.max_per_client:
                _reset(conn)
                self.metrics.inc(M_REFUSED, reason="client_cap")
                self.quiet.warning(f"client_cap:{client}", "http: %s has %d connections open "
                                   "(--http-max-per-client); refused one more", client,
                                   self.per_client[client])
                continue
            self.open += 1
            self.per_client[client] = self.per_client.get(client, 0) + 1
            self.metrics.set(M_CONNECTIONS, self.open)
            task = self._loop.create_task(self._connect(conn, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, client: str) -> None:
        assert self._loop is not None
        proto: Connection | None = None

        def factory() -> Connection:
            nonlocal proto
            proto = Connection(self, client, self.server, loop=self._loop, **self._kwargs)
            return proto

        try:
            await self._loop.connect_accepted_socket(factory, conn)
        except OSError as e:  # the client left already, or no descriptor for the transport
            if proto is None or not proto._counted:
                self.closed(client)
            conn.close()
            self.quiet.warning(f"connect:{e.errno}", "http: connection dropped: %s",
                               e.strerror)

    def _shed(self, sock: socket.socket, e: OSError) -> None:
        """Out of descriptors: turn the waiting clients away instead of spinning."""
        shed = 0
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
            for _ in range(ACCEPT_BATCH):
                try:
                    conn, _addr = sock.accept()
                except OSError:
                    break
                _reset(conn)
                shed += 1
            self._spare = _take_spare()
        self.metrics.inc(M_REFUSED, max(shed, 1), reason="descriptors")
        self.quiet.warning("descriptors", "http: out of file descriptors (%s) with %d "
                                          "connections open; refused %d", e.strerror,
                           self.open, max(shed, 1))
        if self._spare is None:  # could not even keep the spare: wait before the next try
            self._pause(0.5)

    def _pause(self, seconds: float) -> None:
        """Stop accepting on every socket for ``seconds``."""
        assert self._loop is not None
        if self._paused is not None:
            return
        for sock in self._socks:
            self._loop.remove_reader(sock.fileno())

        def resume() -> None:
            self._paused = None
            if self._loop is not None:
                for sock in self._socks:
                    self._loop.add_reader(sock.fileno(), self._accept, sock)
                self._take_spare_again()

        self._paused = self._loop.call_later(seconds, resume)

    def _take_spare_again(self) -> None:
        if self._spare is None:
            self._spare = _take_spare()

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        """asyncio's complaints (a client gone mid-write, mid-sendfile): one line each."""
        exc = ctx.get("exception")
        msg = str(ctx.get("message", "asyncio error"))
        what = f"{type(exc).__name__}: {exc}" if exc is not None else ""
        if exc is not None and not isinstance(exc, (OSError, *_CLIENT_FAULTS)):
            self.quiet.log(f"loop-bug:{type(exc).__name__}", logging.ERROR, "http: %s",
                           safe(msg), exc_info=exc)
            return
        self.quiet.warning(f"loop:{msg[:40]}:{type(exc).__name__}", "http: %s: %s",
                           safe(msg), safe(what))


def _take_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _reset(conn: socket.socket) -> None:
    """Close with a RST (SO_LINGER 0): no TIME_WAIT kept for a refused client."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    conn.close()
