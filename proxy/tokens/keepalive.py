"""Keep idle token chains alive, and warn before one expires.

Contract: ``KeepAlive(broker)``; ``start()`` runs ``once()`` every 60 s on the broker's clock until
``await stop()``. ``once()``: a chain idle for ``tokens.keepalive_after`` (and whose secret the proxy
has) is refreshed through the broker, so it never reaches Exact's 30 days; otherwise a chain within
``warn_before_expiry`` of its refresh token's expiry gets a WARNING. Chains that need a person are left
alone. In cluster mode every node runs it: the shared record is read first, and the cluster's lease
decides who refreshes. A failing round is logged and the next one runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.clock import utc_text

if TYPE_CHECKING:
    from proxy.tokens.broker import ChainBroker

log = logging.getLogger("exact_proxy.tokens")


class KeepAlive:
    def __init__(self, broker: ChainBroker) -> None:
        self.broker = broker
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="token-keepalive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self.broker.clock.sleep(60)
            try:
                await self.once()
            except Exception:
                log.exception("token keep-alive failed")

    async def once(self) -> None:
        broker = self.broker
        policy = broker.services.policy
        settings = policy.tokens
        now = broker.clock.time()
        for chain in list(broker.book.chains.values()):
            if broker.shared is not None:  # cluster mode: another node may have refreshed it
                chain, down = await broker.shared.before_deciding(chain)
                if down is not None:
                    continue
            if chain.needs_reauth:
                continue
            expires = chain.refresh_issued_at + settings.refresh_token_lifetime
            upstream = policy.upstreams.get(chain.upstream)
            if settings.keepalive and upstream is not None and chain.client_secret and \
                    now - chain.refresh_issued_at >= settings.keepalive_after:
                answer = await broker.serve(chain, upstream, settings, margin=float("inf"))
                log.info("token keep-alive for chain %s: %s", chain.id, answer.decision)
                continue
            if expires - now <= settings.warn_before_expiry:
                log.warning("token chain %s (app %s) expires at %s unless used; enable tokens.keepalive or "
                            "run a tool before then", chain.id, chain.client_id,
                            utc_text(expires))
