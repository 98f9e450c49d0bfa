"""The status page: the farm at a glance, served by the HTTP service at ``/``.

Read-only routes (GET and HEAD only; nothing here changes state, so no login):

    /                              the page (static HTML + JS shipped in the package)
    /status/host/<name>            a page per host (timeline, events, dsas.conf masked)
    /status/static/<file>          the page's CSS and JS, from memory (no file system path)
    /api/v1/status                 every host, discovered machines, masters (JSON;
                                   ``dsas status`` reads it too)
    /api/v1/status/hosts/<name>    one host in detail (JSON)
    /api/v1/status/stream          server-sent events: a snapshot, then changed hosts

Live updates: while at least one browser listens, one poller reads the state store
every ``POLL`` seconds (new events by id, the other tables by a fingerprint; events
may also come from another process, pushes always do), builds the views of the hosts
that changed, and sends each change once, serialised once, to every listener.
A listener that falls ``QUEUE`` messages behind is dropped (its browser reconnects
and gets a fresh snapshot); at most ``MAX_VIEWERS`` listen at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

import jinja2
from aiohttp import web

from ..inventory.model import Inventory
from ..observability import status
from .base import ServeContext

log = logging.getLogger(__name__)

POLL = 0.2  # s between store reads while someone listens: a failure shows within 1 s
PING = 15.0  # s between SSE comments, so proxies and browsers keep the stream open
GONE_CHECK = 1.0  # s between checks that a quiet listener's connection is still open
QUEUE = 256  # messages a listener may lag behind before it is dropped
MAX_VIEWERS = 64

M_VIEWERS = "dsas_status_viewers"
M_DROPPED = "dsas_status_viewers_dropped_total"

STATIC_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript",
                ".svg": "image/svg+xml"}
# The page loads only itself: no CDN, no inline script, no frames.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (bytes, content type, etag), read once from the package. The pages
    (``*.html``) extend ``_base.html``, their shared head; names starting with ``_``
    are not served."""
    folder = resources.files("provision.services") / "static"
    sources = {f.name: f.read_text("utf-8") for f in folder.iterdir()
               if f.is_file() and f.name.endswith(".html")}
    pages = jinja2.Environment(loader=jinja2.DictLoader(sources), trim_blocks=True,
                               keep_trailing_newline=True, autoescape=False)
    out = {}
    for f in folder.iterdir():
        suffix = "." + f.name.rsplit(".", 1)[-1]
        if f.is_file() and suffix in STATIC_TYPES and not f.name.startswith("_"):
            data = (pages.get_template(f.name).render().encode() if suffix == ".html"
                    else f.read_bytes())
            out[f.name] = (data, STATIC_TYPES[suffix],
                           '"' + hashlib.sha256(data).hexdigest()[:20] + '"')
    return out


class StatusPage:
    """The status page and its JSON, rendered from the status source."""

    def __init__(self, ctx: ServeContext, inventory: Callable[[], Inventory]):
        self.ctx = ctx
        self.inventory = inventory  # the HTTP service's current one (reload swaps it)
        self.source = status.StatusSource(ctx.store)
        self.static = _static_files()
        self._lock: asyncio.Lock | None = None
        self._dirty: set[str] | None = set()  # changed since the poller last looked; None: all
        self._subs: set[asyncio.Queue[bytes | None]] = set()
        self._sent: dict[str, str] = {}  # host -> the view last sent to listeners
        self._sent_discovered = ""
        self._sent_rollout = "null"  # the running rollout last sent (issue 23)
        self._sent_masters = ""  # the masters' states last sent
        self._sent_inv: Inventory | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closing = False
        ctx.metrics.describe(M_VIEWERS, "Browsers listening to the status page's live stream")
        ctx.metrics.describe(M_DROPPED, "Status page listeners dropped for falling behind")

    def register(self, app: web.Application) -> None:
        """Add the routes (before the boot tree's catch-all) and the shutdown hook."""
        app.router.add_get("/", self.index)
        app.router.add_get("/status/host/{name}", self.host_page)
        app.router.add_get("/status/static/{name}", self.static_file)
        app.router.add_get("/api/v1/status", self.api_status)
        app.router.add_get("/api/v1/status/stream", self.stream)
        app.router.add_get("/api/v1/status/hosts/{name}", self.api_host)
        app.on_shutdown.append(self._shutdown)

    # -- reading the store (one reader at a time, off the event loop) -------------

    async def _refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            changed = await asyncio.get_running_loop().run_in_executor(None,
                                                                       self.source.refresh)
        if changed is None:
            self._dirty = None
        elif self._dirty is not None:
            self._dirty |= changed

    def _snapshot(self, hosts: list[str] | None = None) -> dict[str, Any]:
        doc = status.snapshot(self.inventory(), self.source.obs, time.time(), hosts)
        pair = self.ctx.pair
        if pair is not None:  # a master of a pair: each master's role, sync and mirror
            states = pair.states()
            for m in doc["masters"]:
                m["state"] = states.get(m["host"], "not in the pair")
        return doc

    # -- pages ----------------------------------------------------------------------

    def _page(self, name: str) -> web.Response:
        data, ctype, etag = self.static[name]
        return web.Response(body=data, content_type=ctype, charset="utf-8",
                            headers={"ETag": etag, "Cache-Control": "no-cache",
                                     **SECURITY_HEADERS})

    async def index(self, request: web.Request) -> web.Response:
        return self._page("index.html")

    async def host_page(self, request: web.Request) -> web.Response:
        if request.match_info["name"] not in self.inventory().hosts:
            return web.Response(status=404, text="host not in inventory\n")
        return self._page("host.html")

    async def static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.static:
            return web.Response(status=404, text="no such file\n")
        if request.headers.get("If-None-Match") == self.static[name][2]:
            return web.Response(status=304, headers={"ETag": self.static[name][2]})
        return self._page(name)

    # -- JSON -------------------------------------------------------------------------

    async def api_status(self, request: web.Request) -> web.Response:
        await self._refresh()
        doc = self._snapshot()
        role = request.query.get("role")
        if role:
            doc["hosts"] = [v for v in doc["hosts"] if v["role"] == role]
        return web.json_response(doc, headers={"Cache-Control": "no-cache"})

    async def api_host(self, request: web.Request) -> web.Response:
        inv = self.inventory()
        host = inv.hosts.get(request.match_info["name"])
        if host is None:
            return web.json_response({"error": "host not in inventory"}, status=404)
        await self._refresh()
        view = status.host_view(inv, host, self.source.obs)  # now, before the poller moves on
        last = self.source.obs.last.get(host.name)
        loop = asyncio.get_running_loop()
        events = await loop.run_in_executor(None, self.source.events, host.name,
                                            status.TIMELINE_EVENTS, last.id if last else 0)
        files = await loop.run_in_executor(None, self._files, inv, host)
        doc = status.host_detail(view, events, files, time.time())
        return web.json_response(doc, headers={"Cache-Control": "no-cache"})

    def _files(self, inv: Inventory, host: Any) -> dict[str, str]:
        from .. import render

        kinds = ["dsas.conf"]
        if any(host.name in p.directors for p in inv.lvs_pairs.values()):
            kinds.append("keepalived")
        out = {}
        for kind in kinds:
            try:
                out[kind] = render.render_host(inv, host, kind, self.ctx.templates)
            except Exception as e:  # noqa: BLE001 - shown on the page, the service goes on
                out[kind] = f"# render failed: {type(e).__name__}: {e}"[:300]
        return out

    # -- server-sent events -----------------------------------------------------------

    async def stream(self, request: web.Request) -> web.StreamResponse:
        if len(self._subs) >= MAX_VIEWERS or self._closing:
            return web.Response(status=503, text="too many viewers\n",
                                headers={"Retry-After": "10"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        q: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE)
        self._subs.add(q)  # before the snapshot: a change in between comes twice, not never
        self.ctx.metrics.set(M_VIEWERS, len(self._subs))
        try:
            await self._refresh()
            doc = self._snapshot()
            await resp.write(_sse("snapshot", doc))
            if self._sent_inv is None:  # the first listener: its snapshot is the baseline
                self._sent_inv = self.inventory()
                self._remember(doc)
            self._ensure_poller()
            quiet = 0.0
            while not self._closing:
                try:
                    msg = await asyncio.wait_for(q.get(), GONE_CHECK)
                except TimeoutError:
                    # A browser that left is noticed within GONE_CHECK s, not at a write.
                    if request.transport is None or request.transport.is_closing():
                        break
                    quiet += GONE_CHECK
                    if quiet < PING:
                        continue
                    msg = b": ping\n\n"
                quiet = 0.0
                if msg is None:
                    break
                await resp.write(msg)
        except ConnectionError:
            pass
        finally:
            self._subs.discard(q)
            self.ctx.metrics.set(M_VIEWERS, len(self._subs))
        return resp

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while self._subs and not self._closing:
            try:
                await self._refresh()
                self._publish()
            except Exception:  # noqa: BLE001 - a bad read must not end live updates
                log.exception("status: reading the state store failed")
            await asyncio.sleep(POLL)

    def _publish(self) -> None:
        inv = self.inventory()
        if inv is not self._sent_inv:  # a reload: hosts may have come and gone
            self._sent_inv, self._sent, self._dirty = inv, {}, set()
            doc = self._snapshot()
            self._broadcast(_sse("snapshot", doc))
            self._remember(doc)
            return
        dirty, self._dirty = self._dirty, set()
        doc = self._snapshot(None if dirty is None else sorted(dirty))
        changed = [v for v in doc["hosts"]
                   if self._sent.get(v["host"]) != json.dumps(v, sort_keys=True)]
        disc = json.dumps(doc["discovered"], sort_keys=True)
        delta: dict[str, Any] = {"now": doc["now"], "hosts": changed}
        if dirty is None and disc != self._sent_discovered:
            delta["discovered"] = doc["discovered"]
            delta["latest_releases"] = doc["latest_releases"]
        if json.dumps(doc.get("rollout"), sort_keys=True) != self._sent_rollout:
            delta["rollout"] = doc.get("rollout")
        masters = json.dumps(doc["masters"], sort_keys=True)
        if masters != self._sent_masters:
            delta["masters"] = doc["masters"]
            self._sent_masters = masters
        if changed or "discovered" in delta or "rollout" in delta or "masters" in delta:
            self._broadcast(_sse("hosts", delta))
        self._remember(doc)

    def _remember(self, doc: dict[str, Any]) -> None:
        for v in doc["hosts"]:
            self._sent[v["host"]] = json.dumps(v, sort_keys=True)
        if len(doc["hosts"]) == len(self.inventory().hosts):
            self._sent_discovered = json.dumps(doc["discovered"], sort_keys=True)
        self._sent_rollout = json.dumps(doc.get("rollout"), sort_keys=True)

    def _broadcast(self, msg: bytes) -> None:
        for q in list(self._subs):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:  # too slow: drop it; its browser reconnects
                self._subs.discard(q)
                self.ctx.metrics.inc(M_DROPPED)
                _hang_up(q)

    async def _shutdown(self, app: web.Application) -> None:
        self._closing = True
        for q in list(self._subs):
            _hang_up(q)
        if self._poller is not None:
            self._poller.cancel()


def _hang_up(q: asyncio.Queue[bytes | None]) -> None:
    """Make room if need be, then tell the listener's handler to end the stream."""
    if q.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            q.get_nowait()
    q.put_nowait(None)


def _sse(event: str, doc: dict[str, Any]) -> bytes:
    """One server-sent event (JSON has no raw newlines, so one data line)."""
    return f"event: {event}\ndata: {json.dumps(doc, separators=(',', ':'))}\n\n".encode()
