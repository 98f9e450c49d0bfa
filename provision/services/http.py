"""HTTP service: the boot tree, node boot events, /metrics and /healthz, on aiohttp.

Why aiohttp (see ``bench/bootfiles.py --http-libs`` for the figures): one event
loop serves hundreds of booting nodes without a thread each, its C parser
(llhttp) rejects malformed requests before our code runs, and it can hand large
files to the kernel with ``loop.sendfile`` (zero copy). Files: GET and HEAD
only, Content-Length, one byte range (206/416), ETag with If-None-Match (304)
and If-Range. Every name goes through ``BootTree.lookup`` (the same
confinement as TFTP), from the raw request path so '..' is seen, not
normalised away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import resource
import threading
import time
import urllib.parse
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from .. import layout
from ..balancer import members as lbmembers
from ..inventory.model import Inventory
from ..observability.logsafe import safe
from ..observability.metrics import STAGE_BUCKETS
from ..observability.quietlog import QuietLog
from ..observability.served import served
from ..policy import boottoken, httpfiles
from ..policy.boottree import BootFile, BootTree, Refused
from ..policy.ratelimit import TokenBuckets
from ..state import StateError
from ..state import events as stored_events
from ..state import rollout as rollout_pins
from ..state.leases import bound_addresses
from .base import ServeContext, Service
from .http_conn import Limits, Listener
from .statuspage import StatusPage

log = logging.getLogger(__name__)

M_REQUESTS = "dsas_http_requests_total"
M_TRANSFERS = "dsas_http_transfers_total"
M_BYTES = "dsas_http_bytes_total"
M_ERRORS = "dsas_http_errors_total"
M_EVENTS = "dsas_http_events_total"
M_EVENTS_REFUSED = "dsas_http_events_refused_total"  # {reason=rate|source|token|...}
BOOT_SECRET = "boot-report.key"  # in the state directory; never logged
M_LATENCY = "dsas_http_request_seconds"
M_STAGE = "dsas_boot_stage_seconds"
HELP = {
    M_LATENCY: "Seconds from an HTTP request to its answer, by handler (file, post_event, ...)",
    M_STAGE: "Seconds a host took to reach a boot stage from its previous one, by stage",
}

SENDFILE_MIN = 64 * 1024  # smaller files go out in one write; sendfile costs a syscall dance
TEXT_SUFFIXES = (".ipxe", ".cfg", ".conf", ".json", ".txt")


class HttpService(Service):
    """The HTTP service: boot files, node reports, /metrics and the status page."""

    name = "http"

    def __init__(self, ctx: ServeContext, port: int | None = None):
        super().__init__(ctx)
        self.port = ctx.http_port if port is None else port
        self.tree = BootTree(ctx.boot_root, ctx.inventory, templates=ctx.templates)
        self.metrics = ctx.metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self._stopped = threading.Event()
        self.limits = Limits(ctx.http_max_connections, ctx.http_max_per_client,
                             ctx.http_header_timeout, ctx.http_idle_timeout)
        self._event_buckets = TokenBuckets(ctx.http_event_rate, ctx.http_event_burst)
        self._refusals = QuietLog(log)
        self._secret = b""
        self._last_stage: dict[str, float] = {}  # host -> time of its latest event (bounded
        # by the inventory: events come only from its hosts)
        self.status = StatusPage(ctx, lambda: self.tree.inventory)  # the page at /

    # -- life cycle -------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=httpfiles.MAX_EVENT_BYTES,
                              middlewares=[self._timed])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.router.add_post("/api/v1/events", self.post_event)
        app.router.add_get("/api/v1/nodes", self.get_nodes)
        self.status.register(app)  # before the boot tree's catch-all
        app.router.add_route("*", "/{tail:.*}", self.file)
        return app

    @web.middleware
    async def _timed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        t0 = time.monotonic()
        try:
            return await handler(request)
        finally:
            route = getattr(request.match_info.route, "handler", None)
            self.metrics.observe(M_LATENCY, time.monotonic() - t0,
                                 handler=getattr(route, "__name__", "other"))

    def start(self) -> None:
        for metric, text in HELP.items():
            self.metrics.describe(metric, text)
        stored_events.ensure_events_schema(self.ctx.store)
        self._secret = self.ctx.store.secret(BOOT_SECRET, boottoken.new_secret)
        secret = self._secret
        self.tree.lb_overrides = lambda: lbmembers.load_quiet(self.ctx.store)
        self.tree.image_pins = lambda: rollout_pins.pins_quiet(self.ctx.store)
        self.tree.conf_extra = lambda host: boottoken.conf_lines(
            *boottoken.issue(secret, host, time.time()))
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="http",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(15):
            raise RuntimeError("http: server did not start within 15 s")
        if failure:
            raise failure[0]
        log.info("http: serving %s on %s:%d", self.tree.root, self._host(), self.port)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        want = 2 * self.limits.max_connections + 64  # a socket and a file each, and ours
        if soft != resource.RLIM_INFINITY and soft < want:
            log.warning("http: open files limit %d is below the %d that "
                        "--http-max-connections %d may need; past it, connections are "
                        "refused (LimitNOFILE in etc/dsas-serve.service)", soft, want,
                        self.limits.max_connections)

    def _host(self) -> str:
        return str(self.ctx.bind_address or "0.0.0.0")

    async def _listen(self) -> None:
        assert self._listener is not None
        self._listener.start(self._host(), self.port)
        a6 = self.ctx.inventory.cluster.master_address6
        if a6 is not None:  # netboot6 hosts fetch their files over IPv6
            try:
                self._listener.start(str(a6), self.port)
            except OSError as e:
                raise OSError(e.errno, f"http: cannot listen on [{a6}]:{self.port} "
                              f"(cluster.master_address6): {e.strerror}; is the address "
                              "configured on this machine?") from None
            log.info("http: also serving on [%s]:%d", a6, self.port)

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            kwargs: dict[str, Any] = {"keepalive_timeout": self.limits.idle_timeout,
                                      "access_log": None}
            self._runner = web.AppRunner(self.app(), **kwargs)
            loop.run_until_complete(self._runner.setup())
            assert self._runner.server is not None
            self._listener = Listener(self._runner.server, self.limits, self.metrics, kwargs)
            loop.run_until_complete(self._listen())
        except BaseException as e:  # noqa: BLE001 - handed to start()
            failure.append(e)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            if self._listener is not None:
                self._listener.close()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()
            self._stopped.set()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._thread = None

    def reload(self, inventory: Inventory) -> None:
        self.tree.reload(inventory)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- small endpoints --------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics_page(self, request: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def post_event(self, request: web.Request) -> web.Response:
        peer = request.remote or ""
        if not self._event_buckets.allow(peer, time.monotonic()):
            return self._refuse_event(peer, 429, "too many reports from this address", "rate")
        cl = request.content_length
        if cl is not None and cl > httpfiles.MAX_EVENT_BYTES:
            return self._refuse_event(peer, 413, "event too large", "too_large")
        loop = asyncio.get_running_loop()
        try:
            body = await request.content.read(httpfiles.MAX_EVENT_BYTES + 1)
        except Exception as e:  # noqa: BLE001 - a broken upload (bad chunking, reset...)
            return self._refuse_event(peer, 400, f"cannot read the body: {type(e).__name__}",
                                      "body")
        try:
            ev = httpfiles.parse_event(body, peer, self.tree.inventory, self._leased)
            verified = ev.ssh_key is not None and boottoken.verify(
                self._secret, ev.host, ev.boot_id, ev.token)
            if ev.ssh_key is not None and ev.token is not None and not verified:
                raise httpfiles.BadEvent(403, f"the boot token is not {ev.host}'s",
                                         "token")
        except httpfiles.BadEvent as e:
            return self._refuse_event(peer, e.status, e.message, e.reason)
        now = time.time()
        try:
            await loop.run_in_executor(None, self._store_event, ev, now, verified)
        except StateError as e:
            self._refusals.log(f"db:{type(e).__name__}", logging.ERROR,
                               "http: cannot store an event: %s", e)
            return self._json_error(503, "cannot store the event now", "store")
        self.metrics.inc(M_EVENTS, stage=ev.stage)
        before = self._last_stage.get(ev.host)
        self._last_stage[ev.host] = now
        if before is not None and ev.stage != "dhcp":  # dhcp: a new boot begins
            self.metrics.observe(M_STAGE, now - before, STAGE_BUCKETS, stage=ev.stage)
        log.info("http: node %s reports %s%s (from %s)", ev.host, ev.stage,
                 f": {safe(ev.reason)}" if ev.reason else "", ev.address)
        return web.json_response({"host": ev.host, "stage": ev.stage, "ts": now}, status=201)

    def _refuse_event(self, peer: str, status: int, message: str,
                      reason: str) -> web.Response:
        """Count a refused report; log it once per source and reason per interval."""
        self.metrics.inc(M_EVENTS_REFUSED, reason=reason)
        self._refusals.warning(f"{peer}:{reason}", "http: refused a report from %s: %s",
                               safe(peer), safe(message))
        return self._json_error(status, message, "bad_event")

    def _leased(self, host: str) -> set[str]:
        """The addresses DHCP leased to ``host`` (bound now), from the lease table."""
        h = self.tree.inventory.hosts.get(host)
        if h is None or not h.macs:
            return set()
        return bound_addresses(self.ctx.store, h.macs, time.time())

    def _store_event(self, ev: httpfiles.Event, ts: float, verified: bool) -> None:
        stored_events.record(self.ctx.store, ev, ts, verified, self.ctx.http_events_per_host)

    async def get_nodes(self, request: web.Request) -> web.Response:
        rows = await asyncio.get_running_loop().run_in_executor(None, self._last_events)
        inv = self.tree.inventory
        out = []
        for name, host in inv.hosts.items():
            r = rows.get(name)
            # the report's IMAGE@VERSION, else the inventory's bare image: one shape
            image, _, version = ((r.image if r else None) or host.image or "").partition("@")
            out.append({
                "host": name,
                "role": host.role.name,
                "address": r.address if r and r.address else
                str(host.primary_interface.address) if host.interfaces else None,
                "image": image or None,
                "version": version or None,  # as the host last reported it
                "stage": r.stage if r else None,
                "reason": r.reason if r else None,
                "when": _iso(r.ts) if r else None,
            })
        return web.json_response({"nodes": out})

    def _last_events(self) -> dict[str, stored_events.StoredEvent]:
        return stored_events.last_per_host(self.ctx.store)

    def _json_error(self, status: int, message: str, reason: str) -> web.Response:
        self.metrics.inc(M_ERRORS, reason=reason)
        return web.json_response({"error": message}, status=status)

    # -- files --------------------------------------------------------------------

    async def file(self, request: web.Request) -> web.StreamResponse:
        self.metrics.inc(M_REQUESTS, method=request.method)
        if request.method not in ("GET", "HEAD"):
            self.metrics.inc(M_ERRORS, reason="method")
            return web.Response(status=405, text="only GET and HEAD\n",
                                headers={"Allow": "GET, HEAD"})
        raw = request.raw_path.split("?", 1)[0]
        name = urllib.parse.unquote_to_bytes(raw).decode("utf-8", "surrogateescape")
        try:
            bf = self.tree.lookup(name, request.remote)
        except Refused as r:
            self.metrics.inc(M_ERRORS, reason=r.reason.key)
            self._refusals.info(f"{request.remote}:{r.reason.key}",
                                "http: refused %s from %s: %s", safe(name, 80),
                                request.remote, r.message)
            retry = {"Retry-After": "1"} if r.reason.http_status == 503 else None
            return web.Response(status=r.reason.http_status, text=r.message + "\n",
                                headers=retry)
        return await self._send(request, bf)

    async def _send(self, request: web.Request, bf: BootFile) -> web.StreamResponse:
        headers = {"ETag": bf.etag, "Accept-Ranges": "bytes",
                   "Content-Type": _content_type(bf.path)}
        if bf.rendered:
            headers["Cache-Control"] = "no-cache"
        else:
            headers["Last-Modified"] = _http_date(bf.mtime)
        if httpfiles.etag_matches(request.headers.get("If-None-Match"), bf.etag):
            self.metrics.inc(M_TRANSFERS, result="not_modified")
            return web.Response(status=304, headers=headers)
        first, last, status = 0, bf.size - 1, 200
        if httpfiles.if_range_allows(request.headers.get("If-Range"), bf.etag):
            try:
                rng = httpfiles.parse_range(request.headers.get("Range"), bf.size)
            except httpfiles.Unsatisfiable:
                self.metrics.inc(M_ERRORS, reason="range")
                headers["Content-Range"] = f"bytes */{bf.size}"
                return web.Response(status=416, headers=headers)
            if rng is not None:
                (first, last), status = rng, 206
                headers["Content-Range"] = f"bytes {first}-{last}/{bf.size}"
        count = last - first + 1
        t0 = time.monotonic()
        resp = web.StreamResponse(status=status, headers=headers)
        resp.content_length = count
        await resp.prepare(request)
        if request.method == "HEAD" or count == 0:
            await resp.write_eof()
            return resp
        try:
            await self._body(request, resp, bf, first, count)
        except ConnectionError:  # the client went away: counted, not logged as an error
            self.metrics.inc(M_TRANSFERS, result="aborted")
            return resp
        except asyncio.CancelledError:
            self.metrics.inc(M_TRANSFERS, result="aborted")
            raise
        self.metrics.inc(M_TRANSFERS, result="ok")
        self.metrics.inc(M_BYTES, count)
        await resp.write_eof()
        served("http", bf.host, bf.path, str(request.remote), count, time.monotonic() - t0,
               self.tree.inventory)
        return resp

    async def _body(self, request: web.Request, resp: web.StreamResponse, bf: BootFile,
                    first: int, count: int) -> None:
        if bf.data is not None:
            await resp.write(bf.data[first:first + count])
            return
        loop = asyncio.get_running_loop()
        with bf.open() as f:
            transport = request.transport
            if count >= SENDFILE_MIN and transport is not None:
                try:
                    await loop.sendfile(transport, f, first, count)  # zero copy
                    return
                except NotImplementedError:
                    pass
            f.seek(first)
            left = count
            while left > 0:
                chunk = await loop.run_in_executor(None, f.read, min(left, 256 * 1024))
                if not chunk:
                    raise ConnectionError("file shrank while sending")
                await resp.write(chunk)
                left -= len(chunk)


def _content_type(path: str) -> str:
    return "text/plain" if path.endswith(TEXT_SUFFIXES) or f"{layout.PXELINUX_DIR}/" in path \
        else "application/octet-stream"


def _http_date(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def create(ctx: ServeContext) -> Service:
    return HttpService(ctx)

