"""Build the proxy: shared services, one request handler per listener, and the response writer.

Contract
- ``Services`` is the state the app owns and every filter receives: the clock, the policy holder, the
  upstream HTTP client (one pool, keep-alive, no cookie jar, no decompression). ``start()`` and
  ``close()`` bracket its life; ``close()`` releases every connection.
- ``make_handler(services, listener)`` answers ``/_proxy/*`` itself (admin, never forwarded; Exact has no
  such path) and sends everything else down ``pipeline.ORDER``. An exception from a filter becomes a
  500 in Exact's envelope and an ERROR line with the traceback; the proxy keeps running.
- ``write_reply`` streams an upstream body to the client chunk by chunk. When the upstream breaks after
  the status line was sent, the client connection is closed so the tool sees a truncated answer, never
  a silently short one.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time

import aiohttp
from aiohttp import web

from . import admin, pipeline
from .clock import Clock, SystemClock
from .errors import exact_error
from .hosts import Listener, Upstream
from .metrics import Metrics
from .policy_watch import PolicyHolder
from .store import open_store
from .tls.connect_to import UpstreamResolver
from .tokens.broker import TokenBroker

log = logging.getLogger("exact_proxy.app")

class Services:
    def __init__(self, holder: PolicyHolder, clock: Clock | None = None) -> None:
        self.holder = holder
        self.clock = clock or SystemClock()
        self.http: aiohttp.ClientSession | None = None
        self.started_at = time.time()
        self._ssl: dict[str, ssl.SSLContext] = {}
        self.store = None
        self.metrics = Metrics()
        self._summary_task: asyncio.Task | None = None
        self.tokens = TokenBroker(self)
        self.resolver = UpstreamResolver(lambda: self.policy)
        self.metrics.sources.append(self._token_rows)
        self.filters, self.entry = pipeline.build(self)
        for f in self.filters:  # gauges that belong to a filter are read from it at scrape time
            rows = getattr(f, "metric_rows", None)
            if rows is not None:
                self.metrics.sources.append(rows)

    @property
    def policy(self):
        return self.holder.current

    async def start(self) -> None:
        fwd = self.policy.forwarding
        # The resolver honours an upstream's connect_to (Host, SNI and verification stay base_url's).
        connector = aiohttp.TCPConnector(limit=fwd.pool_size, keepalive_timeout=fwd.keepalive_timeout,
                                         ttl_dns_cache=300, resolver=self.resolver)
        self.http = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                          cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        # aiohttp silently resends GET/PUT/DELETE once when a kept-alive connection drops. A PUT or
        # DELETE that may have reached Exact must never be sent twice, and GET retries belong to the
        # retry filter (counted, logged, budgeted), so switch it off. No public switch exists in 3.x;
        # aiohttp's own test client sets the same attribute.
        if hasattr(self.http, "_retry_connection"):
            self.http._retry_connection = False
        self.holder.on_change(self._policy_changed)
        self.store = open_store(self.policy, self.clock)
        await self.store.open()
        for f in self.filters:  # filters that keep state read it back (learned filters, windows, errors)
            load = getattr(f, "load", None)
            if load is not None:
                await load(self.store)
        await self.tokens.load()
        self.tokens.start()
        self._summary_task = asyncio.get_running_loop().create_task(self._summaries())

    def _token_rows(self):
        for chain in self.tokens.snapshot():
            labels = {"app": str(chain["app"]), "chain": str(chain["chain"])}
            yield ("exact_proxy_token_calls_today", "Token-endpoint calls today per chain (Exact allows 200 "
                   "per app and user)", labels, chain["token_calls_today"])
            yield ("exact_proxy_access_token_expires_in_seconds", "Seconds until the chain's access token "
                   "expires", labels, chain["access_expires_in_s"])
            yield ("exact_proxy_token_chain_needs_reauth", "1 while the chain needs a new authorization by a "
                   "person (Exact refused its refresh token or its fresh access token)", labels,
                   int(chain["needs_reauth"]))

    async def _summaries(self) -> None:
        """Once a minute (on the proxy's clock), one line with what the last minute brought."""
        summary = logging.getLogger("exact_proxy.summary")
        while True:
            await self.clock.sleep(60)
            line = self.metrics.summary_line()
            if line:
                summary.info(line)

    async def close(self) -> None:
        if self._summary_task is not None:
            self._summary_task.cancel()
            self._summary_task = None
        await self.tokens.stop()
        for f in self.filters:  # filters with state write their final, exact figures (a clean stop)
            close = getattr(f, "close", None)
            if close is not None:
                close()
        if self.store is not None:
            await self.store.close()
        if self.http is not None:
            await self.http.close()
            self.http = None
        await self.resolver.close()

    def ssl_for(self, upstream: Upstream) -> ssl.SSLContext | bool:
        """Upstream TLS is always verified: against the system store, or the policy's ``ca_bundle``."""
        if not upstream.ca_bundle:
            return True
        ctx = self._ssl.get(upstream.ca_bundle)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=upstream.ca_bundle)
            self._ssl[upstream.ca_bundle] = ctx
        return ctx

    def _policy_changed(self, old, new) -> None:
        self._ssl.clear()
        if old.upstreams != new.upstreams and self.http is not None:
            self.http.connector.clear_dns_cache()  # a changed connect_to applies to new connections
        for name in ("pool_size", "keepalive_timeout"):
            if getattr(old.forwarding, name) != getattr(new.forwarding, name):
                log.warning("forwarding.%s changed: it takes effect at the next restart", name)
        if old.listeners != new.listeners:
            log.warning("listeners changed: they take effect at the next restart")


def make_handler(services: Services, listener: Listener):
    """The request handler of one listener (aiohttp's low-level server: no router, no middleware).

    ``/_proxy/*`` is answered by ``admin`` (never forwarded; Exact has no such path); every other
    target, whatever its shape, goes down the filter list, which alone decides what is forwarded."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if admin.is_admin_path(request.raw_path):
            return await admin.dispatch(request, services)
        return await handle(services, listener, request)

    return handler


async def handle(services: Services, listener: Listener, request: web.BaseRequest) -> web.StreamResponse:
    raw = request.raw_path
    path, _, query = raw.partition("?")
    ctx = pipeline.Context(request=request, listener=listener, policy=services.holder.current,
                           started=time.perf_counter(), method=request.method, raw_path=path, raw_query=query)
    status = 499  # client closed the connection before an answer, unless set below
    try:
        try:
            reply = await services.entry(ctx)
        except Exception as exc:  # a filter failed: answer, log, keep serving
            log.exception("request %s %s failed in the proxy: %s", ctx.method, ctx.raw_path, type(exc).__name__)
            ctx.decide(f"proxy error ({type(exc).__name__})")
            reply = ctx.answer("proxy", exact_error(500, f"internal proxy error ({type(exc).__name__}); "
                                                    "see the proxy log"))
        status = reply.status
        return await write_reply(request, ctx, reply)
    finally:
        for finish in ctx.finishers:
            try:
                finish(ctx, status)
            except Exception:
                log.exception("a request finisher failed")


async def write_reply(request: web.BaseRequest, ctx: pipeline.Context, reply: pipeline.Reply) -> web.StreamResponse:
    if reply.stream is None:
        body = reply.body or b""
        close = reply.headers.popone("Connection", "").lower() == "close"
        if request.method != "HEAD":
            reply.headers.popall("Content-Length", None)
        if request.method == "HEAD" or reply.status in (204, 304):
            # no body goes out; a HEAD keeps the Content-Length Exact announced
            resp = web.StreamResponse(status=reply.status, reason=reply.reason, headers=reply.headers)
        else:
            # a whole body: headers and body leave in one write (one system call, one packet)
            resp = web.Response(status=reply.status, reason=reply.reason, headers=reply.headers, body=body)
        if close:
            resp.force_close()
        await resp.prepare(request)
        await resp.write_eof()
        ctx.bytes_out = len(body)
        return resp
    reply.headers.popall("Content-Length", None)  # reply.length is the one truth; None means chunked
    resp = web.StreamResponse(status=reply.status, reason=reply.reason, headers=reply.headers)
    if reply.length is not None:
        resp.content_length = reply.length
    try:
        await resp.prepare(request)
        async for chunk in reply.stream:
            await resp.write(chunk)
            ctx.bytes_out += len(chunk)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        ctx.decide(f"upstream broke mid-body ({type(exc).__name__}); client connection cut")
        log.warning("upstream answer for %s %s broke after %d bytes: %s", ctx.method, ctx.raw_path,
                    ctx.bytes_out, type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return resp
    finally:
        await reply.discard()
    await resp.write_eof()
    return resp
