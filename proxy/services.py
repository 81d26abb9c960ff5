"""The state the proxy owns and every filter receives.

Contract: ``Services(holder, clock)`` holds the clock, the policy holder, the upstream HTTP client (one
pool, keep-alive, no cookie jar, no decompression), the store, the metrics, the error book, the token
broker, the upstream resolver, the usage counts (``proxy.ops.usage``) and the filters built from ``pipeline.ORDER`` (each checked against
``proxy.filters.types`` as it is built). ``start()`` calls every filter's ``load`` hook, ``close()`` every
``close`` hook, and the metrics read every ``metric_rows`` hook. ``start()`` and ``close()`` bracket its
life; ``close()`` releases every connection. ``ssl_for(upstream)`` is the verified TLS context of an
upstream. The request handler is ``proxy.http.handler``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import aiohttp

from proxy import pipeline
from proxy.clock import Clock, SystemClock
from proxy.context import Next
from proxy.errorbudget.book import ErrorBook
from proxy.filters import types as hooks
from proxy.filters.types import Filter
from proxy.http.resolver import UpstreamResolver
from proxy.ops.events import Events
from proxy.ops.metrics import Metrics, Row
from proxy.ops.recent import Recent
from proxy.ops.usage import Usage
from proxy.policy import Policy
from proxy.policy.hosts import Upstream
from proxy.policy.watch import PolicyHolder
from proxy.store import Store, open_store
from proxy.tokens.broker import ChainBroker

if TYPE_CHECKING:
    from proxy.cluster.node import ClusterNode

log = logging.getLogger("exact_proxy.app")


class Services:
    """The shared objects, each a declared attribute; built in this order (the filters last, so they
    may take any of the others)."""

    holder: PolicyHolder
    clock: Clock
    http: aiohttp.ClientSession | None     # opened by start()
    started_at: float
    store: Store | None                    # opened by start()
    metrics: Metrics
    usage: Usage                           # where the budget went: per day, app, division, tool, endpoint
    recent: Recent                         # the last decisions that were not routine (the dashboard)
    events: Events                         # the dashboard's live feed (/_proxy/events)
    cluster: ClusterNode | None            # cluster mode (policy cluster.redis_url); None on one node
    error_book: ErrorBook                  # shared by error_budget, error_headroom and the token endpoint
    tokens: ChainBroker
    resolver: UpstreamResolver
    filters: list[Filter]
    entry: Next

    def __init__(self, holder: PolicyHolder, clock: Clock | None = None) -> None:
        self.holder = holder
        self.clock = clock or SystemClock()
        self.http = None
        self.started_at = time.time()
        self._ssl: dict[str, ssl.SSLContext] = {}
        self.store = None
        self.metrics = Metrics()
        self.usage = Usage(self)
        self.recent = Recent()
        self.events = Events()
        self.metrics.registry.register(self.usage.collector())
        self.cluster = None
        if self.policy.cluster.enabled:  # before everything that shares state through it
            from proxy.cluster.node import ClusterNode

            self.cluster = ClusterNode(self.policy.cluster, self.clock)
            self.metrics.sources.append(self.cluster.metric_rows)
        self._summary_task: asyncio.Task[None] | None = None
        self.error_book = ErrorBook()
        self.tokens = ChainBroker(self)
        self.resolver = UpstreamResolver(lambda: self.policy)
        self.metrics.sources.append(self._token_rows)
        self.filters, self.entry = pipeline.build(self)
        for f in self.filters:  # gauges that belong to a filter are read from it at scrape time
            if isinstance(f, hooks.Gauges):
                self.metrics.sources.append(f.metric_rows)

    @property
    def policy(self) -> Policy:
        return self.holder.current

    async def start(self) -> None:
        if self.cluster is not None:
            self._check_cluster()
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
        if self.cluster is not None:
            await self.cluster.open()
        store = self.store = open_store(self.policy, self.clock)
        await store.open()
        for f in self.filters:  # filters that keep state read it back (learned filters, windows, errors)
            if isinstance(f, hooks.Loads):
                await f.load(store)
        await self.usage.load(store)
        await self.tokens.load()
        self.tokens.start()
        self._summary_task = asyncio.get_running_loop().create_task(self._summaries())

    def _token_rows(self) -> Iterator[Row]:
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
            if isinstance(f, hooks.Closes):
                f.close()
        self.usage.close()
        if self.store is not None:
            await self.store.close()
        if self.http is not None:
            await self.http.close()
            self.http = None
        await self.resolver.close()
        if self.cluster is not None:
            await self.cluster.close()

    def _check_cluster(self) -> None:
        from proxy.cluster.settings import ClusterError
        from proxy.tokens.sealing import ENV, Sealer

        if not Sealer.from_env().encrypting:
            raise ClusterError(f"cluster mode keeps token chains on a shared server: set {ENV} (the same key on "
                               "every node; make one with: exact-proxy token-key) so that they are sealed "
                               "before they leave the node")

    def ssl_for(self, upstream: Upstream) -> ssl.SSLContext | bool:
        """Upstream TLS is always verified: against the system store, or the policy's ``ca_bundle``."""
        if not upstream.ca_bundle:
            return True
        ctx = self._ssl.get(upstream.ca_bundle)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=upstream.ca_bundle)
            self._ssl[upstream.ca_bundle] = ctx
        return ctx

    def _policy_changed(self, old: Policy, new: Policy) -> None:
        self._ssl.clear()
        connector = self.http.connector if self.http is not None else None
        if old.upstreams != new.upstreams and isinstance(connector, aiohttp.TCPConnector):
            connector.clear_dns_cache()  # a changed connect_to applies to new connections
        for name in ("pool_size", "keepalive_timeout"):
            if getattr(old.forwarding, name) != getattr(new.forwarding, name):
                log.warning("forwarding.%s changed: it takes effect at the next restart", name)
        if old.listeners != new.listeners:
            log.warning("listeners changed: they take effect at the next restart")
