"""Run the proxy: bind every listener, watch the policy, shut down gracefully.

Contract
- ``ProxyServer(holder, clock).start()`` starts the services, binds each listener of the policy
  (port 0 picks a free port: see ``url()``), and starts the policy watcher. A ``tls: true`` listener
  serves HTTPS with a certificate from the local CA (``proxy.tls``); without a CA it does not start.
  Every listener intercepts ``CONNECT`` to configured Exact hosts (``proxy.tls.intercept``).
- Connections from tools follow the policy's ``clients`` settings in force when each is made: deadlines
  for idle connections, request heads and bodies, and at most ``max_connections`` per listener
  (``proxy.http.listen``, ``proxy.http.client_timeouts``, ``proxy.http.body``, ``proxy.http.connection_cap``).
- ``stop()`` stops accepting, lets in-flight requests finish for up to ``forwarding.drain_timeout``
  seconds, then closes the upstream pool and the state cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from proxy.clock import Clock
from proxy.http.bad_requests import ExactServer
from proxy.http.handler import make_handler
from proxy.http.listen import GuardedSite
from proxy.policy.watch import PolicyHolder
from proxy.services import Services
from proxy.tls.contexts import ServerContexts
from proxy.tls.intercept import Interceptor

log = logging.getLogger("exact_proxy.server")


class ProxyServer:
    def __init__(self, holder: PolicyHolder, clock: Clock | None = None) -> None:
        self.holder = holder
        self.services = Services(holder, clock)
        self.runners: list[web.ServerRunner] = []
        self.bound: dict[str, tuple[str, int]] = {}
        self.schemes: dict[str, str] = {}
        self.tls = ServerContexts(lambda: self.holder.current, self.services.clock)
        self.interceptors: list[Interceptor] = []
        self._watcher: asyncio.Task | None = None

    async def start(self) -> None:
        policy = self.holder.current
        await self.services.start()
        fwd = policy.forwarding
        try:
            def clients():  # read by each new connection: a reload applies to the next ones
                return self.holder.current.clients

            def make_server(handler) -> web.Server:
                return ExactServer(handler, settings=clients, handler_cancellation=True,
                                   access_log=None, max_line_size=fwd.max_url_length + 64,
                                   max_field_size=max(8190, fwd.max_url_length))

            for listener in policy.listeners:
                server = make_server(make_handler(self.services, listener))
                runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=fwd.drain_timeout)
                await runner.setup()
                self.runners.append(runner)
                interceptor = Interceptor(self.services, listener, self.tls, make_server)
                self.interceptors.append(interceptor)
                ssl_context = self.tls.for_listener(listener) if listener.tls else None
                site = GuardedSite(runner, listener.host, listener.port, ssl_context=ssl_context,
                                   interceptor=interceptor, settings=clients, name=listener.name)
                await site.start()
                host, port = runner.addresses[0][:2]
                self.bound[listener.name] = (host, port)
                self.schemes[listener.name] = "https" if listener.tls else "http"
                upstream = policy.upstreams[listener.upstream]
                log.info("listening on %s://%s:%d (%s) -> %s", self.schemes[listener.name], host, port,
                         listener.name, upstream.base_url)
                if not upstream.is_known_exact_host:
                    log.warning("upstream %s (%s) is not a known Exact Online host: fine for the emulator, "
                                "a mistake otherwise", upstream.name, upstream.base_url)
        except BaseException:
            await self.stop()
            raise
        self._watcher = asyncio.create_task(self.holder.watch(), name="policy-watch")

    def url(self, listener: str | None = None) -> str:
        name = listener or next(iter(self.bound))
        host, port = self.bound[name]
        return f"{self.schemes[name]}://{host}:{port}"

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self.services.events.close()  # open dashboard pages must not hold the shutdown up
        for runner in reversed(self.runners):
            await runner.cleanup()
        self.runners.clear()
        for interceptor in self.interceptors:  # connections that arrived through CONNECT
            await interceptor.shutdown(self.holder.current.forwarding.drain_timeout)
        self.interceptors.clear()
        await self.services.close()
