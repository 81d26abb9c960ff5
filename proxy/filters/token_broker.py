"""Filter ``token_broker``: own the OAuth token chain so that no tool can break it.

Contract
- ``POST /api/oauth2/token`` is answered by ``proxy.tokens.broker``: credentials in the body or as HTTP
  Basic, the client id compared in its normal form; a code exchange is sent once and starts a chain; a
  refresh (current or earlier token of a chain) is answered from the chain or refreshed upstream at
  most once; no tokens without the app's secret. A malformed token request gets 400 in the OAuth error
  shape. Token answers never carry a rate-limit or error-budget status that a client would mistake for
  a bad token: the broker never answers 401 for a budget reason. While a chain needs a new
  authorization, its refusals wait ``tokens.loop_delay`` seconds first, so a tool that refreshes in a
  loop slows to about one request a second.
- On API calls with ``Authorization: Bearer``: a token of a known chain sets the request's app to the
  chain's client id, and ``ctx.chain`` and ``ctx.bearer`` for ``token_fresh``, which decides right
  before the call leaves whether the token must be replaced. In cluster mode a token this node does not
  know is looked up in the shared index once (``proxy.cluster.chain_flow``; a miss is remembered).
- With ``tokens.broker: false`` everything passes through untouched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from proxy.context import Context, Reply
from proxy.exact.classify import Classification
from proxy.exact.client_id import normal_client_id
from proxy.exact.credentials import basic_credentials
from proxy.http.body import BodyTooLarge
from proxy.tokens.settings import TokenSettings

if TYPE_CHECKING:
    from proxy.services import Services
    from proxy.tokens.broker import ChainBroker as Broker
    from proxy.tokens.chains import Chain


class TokenBroker:
    name = "token_broker"

    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def broker(self) -> Broker:
        return self.services.tokens

    def before(self, ctx: Context) -> Awaitable[Reply | None] | None:
        settings = ctx.policy.tokens
        cls = ctx.cls
        if not settings.broker or cls is None:
            return None
        if cls.kind == "token":
            if ctx.method != "POST":
                return None
            return self._token_request(ctx, cls, settings)
        auth = ctx.request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            chain = self.broker.book.by_access(token)
            if chain is None and self.broker.shared is not None:
                return self._shared_bearer(ctx, cls, token)  # cluster mode: a chain of another node
            if chain is not None:
                self._known(ctx, cls, chain, token)
        return None

    @staticmethod
    def _known(ctx: Context, cls: Classification, chain: Chain, token: str) -> None:
        ctx.chain, ctx.bearer = chain, token
        if cls.app != chain.client_id:
            ctx.cls = dataclasses.replace(cls, app=chain.client_id)

    async def _shared_bearer(self, ctx: Context, cls: Classification, token: str) -> Reply | None:
        assert self.broker.shared is not None
        chain = await self.broker.shared.find_access(token, cls.app)
        if chain is not None:
            self._known(ctx, cls, chain, token)
        return None

    async def _token_request(self, ctx: Context, cls: Classification, settings: TokenSettings) -> Reply:
        upstream, request_body = ctx.upstream, ctx.body
        assert upstream is not None and request_body is not None  # route and read_body set them
        try:
            body = await request_body.read_all(64 * 1024)
        except BodyTooLarge:
            return _oauth(ctx, 400, {"error": "invalid_request", "error_description": "exact-proxy: the token "
                          "request body is larger than 64 KiB"}, {}, "refused (token request too large)")
        form = {k: v for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        basic = basic_credentials(ctx.request.headers.get("Authorization"))
        if basic is not None:
            client_id = client_id or basic[0]
            secret = secret or basic[1]
        if client_id and secret and "client_secret" not in form:
            form["client_id"], form["client_secret"] = client_id, secret
        grant = form.get("grant_type")
        if not client_id or not client_id.strip():
            return _oauth(ctx, 400, {"error": "invalid_request", "error_description":
                          "exact-proxy: client_id missing (send it in the body or as HTTP Basic)"}, {}, "refused (no client_id)")
        answer = None
        if grant == "authorization_code":
            answer = await self.broker.exchange_code(upstream, form, client_id, secret, settings)
        elif grant == "refresh_token" and form.get("refresh_token"):
            answer = await self.broker.refresh(upstream, form, client_id, secret, settings)
        ctx.cls = dataclasses.replace(cls, app=normal_client_id(client_id))
        if answer is None:
            return _oauth(ctx, 400, {"error": "unsupported_grant_type", "error_description":
                          f"exact-proxy: grant_type {grant!r} with these fields is not supported"}, {},
                          "refused (bad grant)")
        if answer.upstream_calls:
            ctx.attempt += answer.upstream_calls
            ctx.upstream_ms += self.broker.last_upstream_ms
        if answer.reauth and settings.loop_delay:
            await asyncio.sleep(settings.loop_delay)  # real time: it slows a real tool's loop
        return _oauth(ctx, answer.status, answer.body, answer.headers, answer.decision)


def _oauth(ctx: Context, status: int, body: dict[str, Any], headers: dict[str, str], decision: str) -> Reply:
    ctx.decide(decision)
    h = {"Cache-Control": "no-store", "Pragma": "no-cache", **headers}
    return Reply.make_local(status, json.dumps(body).encode(), h)
