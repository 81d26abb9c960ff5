"""A chain's upstream refresh: when Exact would allow it, the call, and what its answer does to the chain.

Contract (a part of ``ChainBroker``, which supplies the book, the endpoint, the vault seams and the
``Rejections`` part):
- ``_early(chain, settings, now, rejected)``: the answer when Exact allows no new token yet (570 s since
  the last one, or a TooEarly pause): a 429 with ``Retry-After``, or needs_reauth when Exact already
  refused the access token. None when a refresh may go.
- ``_spent(chain, refused, rejected, now)``: the day's token calls are spent: ``refused`` (the 429), or
  needs_reauth when Exact already refused the access token.
- ``_refresh_form(chain)``: the form of the refresh call.
- ``await _after_refresh(chain, call, settings, rejected, commit)``: Exact's answer applied. On 200 the
  chain rotates and ``commit(chain)`` stores it, the first await after Exact's answer was read (single
  node: index and flush; cluster: the version CAS); TooEarly pauses the chain; a refused refresh token
  marks it needs_reauth; any other failure answers from the chain while its access token works.
- ``await _refresh_upstream(chain, upstream, settings)``: the single-node refresh: the checks, the call,
  its answer (in cluster mode ``proxy.cluster.chain_flow`` runs the same steps under the cluster's lease).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from proxy.clock import utc_text
from proxy.ops.redact import remember_secret
from proxy.tokens.answers import TokenAnswer, oauth_error, ok_body
from proxy.tokens.chains import Chain, ChainBook
from proxy.tokens.endpoint import Call, TokenEndpoint
from proxy.tokens.flight import remembered
from proxy.tokens.rejection import Rejections
from proxy.tokens.settings import TokenSettings

if TYPE_CHECKING:
    from proxy.policy.hosts import Upstream

log = logging.getLogger("exact_proxy.tokens")

Commit = Callable[[Chain], Awaitable[None]]


class Refresher(Rejections):
    book: ChainBook
    endpoint: TokenEndpoint

    def _count(self, chain_key: tuple[str, str]) -> None:  # pragma: no cover - the broker's
        raise NotImplementedError

    async def _save_now(self, chain: Chain) -> None:  # pragma: no cover - the broker's
        raise NotImplementedError

    def _daily_refusal(self, key: tuple[str, str], settings: TokenSettings,
                       now: float) -> TokenAnswer | None:  # pragma: no cover - the broker's
        raise NotImplementedError

    @staticmethod
    def is_rejected(chain: Chain) -> bool:
        return chain.rejected_at >= chain.issued_at > 0

    def _early(self, chain: Chain, settings: TokenSettings, now: float, rejected: bool) -> TokenAnswer | None:
        allowed = max(chain.issued_at + settings.min_refresh_interval, chain.paused_until)
        if allowed <= now:
            return None
        if rejected:
            return self._needs_reauth(chain, "Exact refused its access token (401) and allows no new "
                                      f"token before {utc_text(allowed)}", retry_at=allowed)
        wait = int(allowed - now) + 1
        return TokenAnswer(429, oauth_error("temporarily_unavailable", f"Exact allows the next token for "
                           f"this chain in {wait} s"), {"Retry-After": str(wait)}, "refused (too early to refresh)")

    def _spent(self, chain: Chain, refused: TokenAnswer, rejected: bool, now: float) -> TokenAnswer:
        if rejected:
            return self._needs_reauth(chain, "Exact refused its access token (401) and the day's token "
                                      "calls are spent", retry_at=(int(now // 86400) + 1) * 86400)
        return refused

    @staticmethod
    def _refresh_form(chain: Chain) -> dict[str, str]:
        form = {"grant_type": "refresh_token", "refresh_token": chain.refresh_token, "client_id": chain.client_id}
        if chain.client_secret:
            form["client_secret"] = chain.client_secret
        return form

    async def _commit_local(self, chain: Chain) -> None:
        self.book.index(chain)
        await self._save_now(chain)

    async def _refresh_upstream(self, chain: Chain, upstream: Upstream, settings: TokenSettings) -> TokenAnswer:
        now = self.clock.time()
        rejected = self.is_rejected(chain)
        early = self._early(chain, settings, now, rejected)
        if early is not None:
            return early
        refused = self._daily_refusal(chain.key, settings, now)
        if refused is not None:
            return self._spent(chain, refused, rejected, now)
        call = await self.endpoint.post_token(upstream, chain.client_id, self._refresh_form(chain))
        if call.local:
            return TokenAnswer(call.status, call.body, call.headers, "refused (token endpoint error budget)")
        self._count(chain.key)
        return await self._after_refresh(chain, call, settings, rejected, self._commit_local)

    async def _after_refresh(self, chain: Chain, call: Call, settings: TokenSettings, rejected: bool,
                             commit: Commit) -> TokenAnswer:
        now = self.clock.time()
        status, body, headers = call.status, call.body, call.headers
        if status == 200 and "access_token" in body:
            chain.rotate(body["access_token"], seconds(body, 600), body.get("refresh_token",
                         chain.refresh_token), now)
            chain.forget_older_than(now - settings.old_token_window)
            await commit(chain)  # the first await after Exact's answer: a lost rotation is a lost chain
            remember_secret(chain.access_token)
            remember_secret(chain.refresh_token)
            return TokenAnswer(200, ok_body(chain, now), {}, f"refreshed upstream for chain {chain.id}", 1)
        description = str(body.get("error_description", ""))
        if "TooEarly" in headers.get("Reason", "") or "access_token not expired" in description:
            retry = to_int(headers.get("Retry-After")) or int(settings.min_refresh_interval)
            chain.paused_until = now + retry
            self._save(chain)
            log.warning("Exact said TooEarlyToRefreshTokens for chain %s; no refresh for %d s", chain.id, retry)
            if rejected:
                answer = self._needs_reauth(chain, "Exact refused its access token (401) and said too early to "
                                            "refresh", retry_at=now + retry)
            elif chain.access_expires_at > now:
                answer = TokenAnswer(200, ok_body(chain, now), {}, "answered from chain (Exact said too early)")
            else:
                answer = TokenAnswer(429, oauth_error("temporarily_unavailable", f"Exact allows the next token "
                                     f"in {retry} s"), {"Retry-After": str(retry)}, "refused (Exact said too early)")
            answer.upstream_calls = 1
            return answer
        if remembered(status, body):
            answer = self._needs_reauth(chain, f"Exact refused its refresh token: {description or body.get('error')}")
            answer.upstream_calls = 1
            return answer
        if chain.access_expires_at > now and not rejected:  # Exact is having trouble; the token still works
            return TokenAnswer(200, ok_body(chain, now), {}, f"answered from chain (upstream refresh "
                               f"failed with {status})", 1)
        return TokenAnswer(502 if status < 500 or status >= 600 else status, body or oauth_error(
            "temporarily_unavailable", f"Exact's token endpoint answered {status}"), {},
            f"upstream refresh failed ({status})", 1)


def seconds(body: dict[str, Any], default: float) -> float:
    try:
        return float(body.get("expires_in", default))
    except (TypeError, ValueError):
        return default


def to_int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
