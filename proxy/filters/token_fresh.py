"""Filter ``token_fresh``: the token a call carries is decided right before it leaves for Exact.

Contract, for API calls whose Bearer token belongs to a known chain (``ctx.chain``, set by
``token_broker``; every other request passes by):
- It sits inside ``retry`` and ``call_budget``, so it runs for every attempt: after any wait in the
  division's queue, and again for a retry or a replay. No call of a known chain leaves with a token that
  expires within a second, was rotated away, or that Exact already refused, while
  ``tokens.substitute_expired`` is on: the chain's current token replaces it (refreshed first when
  needed, once for all waiting calls). Only ever within the same chain.
- When no valid token can be had, the call is not sent, and the answer comes after
  ``tokens.loop_delay`` seconds when the chain needs a person (a tool that refreshes after every 401
  slows to about a request a second): a chain whose refresh token Exact refused gets a local 401 in
  Exact's envelope saying a person must authorize again; a chain whose access token Exact refused
  gets 503 with ``Retry-After`` until Exact allows the new token the proxy will then ask for; a
  refresh that Exact cannot give now gets the broker's 429 or 503 with ``Retry-After``.
- On the way back: Exact's 401 to the chain's current access token tells the broker
  (``ChainBroker.rejected``), so the next refresh goes upstream instead of handing out the same token;
  any other answer to a refused token (a test call, ``probe_due``) tells it Exact takes it again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.context import Context, Next, Reply
from proxy.errors import exact_error
from proxy.tokens.answers import TokenAnswer
from proxy.tokens.chains import Chain
from proxy.tokens.settings import TokenSettings

if TYPE_CHECKING:
    from proxy.services import Services


class TokenFresh:
    name = "token_fresh"

    def __init__(self, services: Services) -> None:
        self.services = services

    def wants(self, ctx: Context) -> bool:
        return ctx.chain is not None

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        chain, broker, settings = ctx.chain, self.services.tokens, ctx.policy.tokens
        token = ctx.bearer
        assert chain is not None and token is not None  # wants(): a known chain (token_broker set both)
        now = self.services.clock.time()
        stale = token != chain.access_token or chain.access_expires_at <= now + 1 or \
            chain.rejected_at >= chain.issued_at > 0
        if chain.needs_reauth or (stale and settings.substitute_expired):
            upstream = self.services.policy.upstreams.get(chain.upstream) or ctx.upstream
            assert upstream is not None  # route chose one (or answered)
            answer = await broker.fresh_access(chain, upstream, settings)
            if answer.status != 200 and not (token == chain.access_token and broker.probe_due(chain)):
                return ctx.answer(self.name, await self._refuse(ctx, chain, answer, settings))
            if answer.status != 200:
                ctx.decide(f"sent to test chain {chain.id}'s refused token")
            if chain.access_token != token:
                token = chain.access_token
                ctx.header_changes["Authorization"] = f"Bearer {token}"
                ctx.decide(f"token substituted (chain {chain.id})")
        reply = await call_next(ctx)
        if reply.local or ctx.upstream_failure is not None:
            return reply
        if reply.status == 401:
            if broker.rejected(chain, token):
                ctx.decide(f"Exact refused the current token of chain {chain.id}")
        elif chain.rejected_at and token == chain.access_token:
            broker.accepted(chain)
        return reply

    async def _refuse(self, ctx: Context, chain: Chain, answer: TokenAnswer, settings: TokenSettings) -> Reply:
        if answer.reauth:
            if settings.loop_delay:
                await asyncio.sleep(settings.loop_delay)  # real time: it slows a real tool's loop
            if answer.status == 429:  # the proxy tries Exact again when it allows a new token
                ctx.decide(f"refused (Exact refused chain {chain.id}'s token; retry after "
                           f"{answer.headers.get('Retry-After')} s)")
                return exact_error(503, f"Exact refused the access token of chain {chain.id} (401); the proxy "
                                   f"asks Exact for a new one when it allows, in {answer.headers.get('Retry-After')} "
                                   "s; the call was not sent", {"Retry-After": answer.headers.get("Retry-After", "5")})
            ctx.decide(f"refused (chain {chain.id} needs a new authorization)")
            return exact_error(401, f"token chain {chain.id} of app {chain.client_id} needs a new authorization by "
                               f"a person ({chain.needs_reauth}); the call was not sent", {"Reason": "Unauthorized"})
        status = answer.status if answer.status in (429, 503) else 503
        wait = answer.headers.get("Retry-After", "5")
        ctx.decide(f"refused (no valid token for chain {chain.id}: {answer.decision})")
        return exact_error(status, f"no valid access token for chain {chain.id} can be had now "
                           f"({answer.body.get('error_description', answer.decision)}); the call was not sent",
                           {"Retry-After": wait})
