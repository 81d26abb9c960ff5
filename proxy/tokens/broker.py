"""The token broker: answers token requests from its chains and refreshes upstream at most once.

Contract
- ``exchange_code`` forwards an authorization-code exchange exactly once (codes are single use) and
  starts a chain from a successful answer.
- ``refresh`` serves a refresh request: from the cache while the access token has more than
  ``refresh_margin`` seconds left, or while Exact would refuse a new token anyway (less than
  ``min_refresh_interval`` since the last one, or a TooEarly pause); otherwise by exactly one upstream
  refresh per chain (single flight: concurrent callers wait for it and get the same pair). Any earlier
  refresh token of the chain, within ``old_token_window``, is served the same way.
- Upstream token calls per app and user per UTC day stop at ``daily_token_calls``.
- An invalid or expired refresh token marks the chain ``needs_reauth`` and says loudly, in the log and
  in the answer, how to authorize again.
- ``fresh_access(chain)`` returns a valid access token for a chain, refreshing first when needed (used
  to replace expired tokens on API calls).
- Every token and secret the broker sees is registered with ``redact.remember_secret``; chains are
  persisted after every change (flushed at once after a rotation: a lost rotation is a lost chain).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..redact import remember_secret
from .chains import COUNTS, NAMESPACE, Chain, ChainBook, new_chain_id
from .sealing import Sealer, fingerprint

log = logging.getLogger("exact_proxy.tokens")


@dataclass
class TokenAnswer:
    """What the broker answers a tool: status, JSON body, extra headers, and what it did (for the log)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    decision: str
    upstream_calls: int = 0


def ok_body(chain: Chain, now: float) -> dict[str, Any]:
    left = max(0, int(chain.access_expires_at - now))
    return {"access_token": chain.access_token, "token_type": "bearer", "expires_in": str(left),
            "refresh_token": chain.refresh_token}


def oauth_error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": "exact-proxy: " + description}


class TokenBroker:
    def __init__(self, services) -> None:
        self.services = services
        self.sealer = Sealer.from_env()
        self.book = ChainBook(self.sealer)
        self._locks: dict[str, asyncio.Lock] = {}
        self._task: asyncio.Task | None = None

    @property
    def clock(self):
        return self.services.clock

    @property
    def store(self):
        return getattr(self.services, "store", None)

    # -- life ------------------------------------------------------------------------------------
    async def load(self) -> None:
        store = self.store
        if store is None:
            return
        for rec in (await store.load(NAMESPACE)).values():
            try:
                chain = self.book.load_record(rec)
            except Exception as exc:  # a chain we cannot open must not stop the proxy
                log.error("a stored token chain cannot be read and is ignored: %s", exc)
                continue
            for secret in (chain.access_token, chain.refresh_token, chain.client_secret):
                remember_secret(secret)
            self.book.add(chain)
        self.book.calls.update({k: v for k, v in (await store.load(COUNTS)).items() if isinstance(v, list)})
        if self.book.chains:
            log.info("token broker: %d chain(s) loaded", len(self.book.chains))
        if not self.sealer.encrypting:
            log.warning("tokens are stored unencrypted (the state file is readable by its owner only); set "
                        "EXACT_PROXY_TOKEN_KEY to encrypt them (make a key with: exact-proxy token-key)")

    def start(self) -> None:
        self._task = asyncio.create_task(self._keepalive_loop(), name="token-keepalive")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _save(self, chain: Chain) -> None:
        if self.store is not None:
            self.store.put(NAMESPACE, chain.id, self.book.record(chain))

    async def _save_now(self, chain: Chain) -> None:
        self._save(chain)
        if self.store is not None:
            await self.store.flush()

    def _count(self, chain_key: tuple[str, str]) -> None:
        self.book.count_call(chain_key, self.clock.time())
        if self.store is not None:
            name = "|".join(chain_key)
            self.store.put(COUNTS, name, self.book.calls[name])

    # -- the code grant ----------------------------------------------------------------------------
    async def exchange_code(self, upstream, form: dict[str, str], client_id: str, secret: str | None,
                            settings) -> TokenAnswer:
        remember_secret(form.get("code"))
        status, body, headers = await self._post(upstream, form)
        if status != 200 or "access_token" not in body:
            self._count((client_id, f"code:{fingerprint(form.get('code', ''))}"))
            return TokenAnswer(status, body, headers, "code exchange failed upstream", 1)
        now = self.clock.time()
        chain = Chain(id=new_chain_id(), client_id=client_id, upstream=upstream.name,
                      access_token=body["access_token"], access_expires_at=now + _seconds(body, 600),
                      refresh_token=body.get("refresh_token", ""), issued_at=now, refresh_issued_at=now,
                      client_secret=secret, secret_fp=fingerprint(secret) if secret else None,
                      last_used_at=now)
        for value in (chain.access_token, chain.refresh_token, secret):
            remember_secret(value)
        if settings.identify_user:
            chain.user = await self._identify(upstream, chain.access_token)
        self._count(chain.key)  # Exact counts token calls per app and user: the user is known only now
        existing = self.book.for_user(client_id, chain.user)
        if existing is not None:
            self.book.replace(existing, chain)
            if self.store is not None:
                self.store.delete(NAMESPACE, existing.id)
            log.info("token chain %s replaces %s for app %s, user %s (new authorization)", chain.id,
                     existing.id, client_id, chain.user)
        else:
            self.book.add(chain)
            log.info("token chain %s started for app %s, user %s", chain.id, client_id, chain.user or "?")
        await self._save_now(chain)
        return TokenAnswer(200, ok_body(chain, now), {}, f"chain {chain.id} started", 1)

    # -- the refresh grant -------------------------------------------------------------------------
    async def refresh(self, upstream, form: dict[str, str], client_id: str, secret: str | None,
                      settings) -> TokenAnswer:
        token = form.get("refresh_token", "")
        remember_secret(token)
        now = self.clock.time()
        chain, current = self.book.by_refresh(token, now, settings.old_token_window)
        if chain is None:
            return await self._adopt(upstream, form, client_id, secret, settings)
        if chain.client_id != client_id:
            return TokenAnswer(401, oauth_error("unauthorized_client", "this refresh token belongs to "
                               "another app (client_id)"), {}, "refused (refresh token of another app)")
        if chain.secret_fp and secret and fingerprint(secret) != chain.secret_fp:
            return TokenAnswer(401, oauth_error("invalid_client", "client_secret does not match the one "
                               "this chain was authorized with"), {}, "refused (client secret mismatch)")
        if secret and not chain.client_secret:
            chain.client_secret, chain.secret_fp = secret, fingerprint(secret)
        chain.last_used_at = now
        how = "current" if current else "earlier"
        answer = await self._serve(chain, upstream, settings)
        answer.decision += f" ({how} refresh token)"
        return answer

    async def fresh_access(self, chain: Chain, upstream, settings) -> str | None:
        """A valid access token for the chain, refreshing upstream first when needed."""
        answer = await self._serve(chain, upstream, settings, margin=1.0)
        return chain.access_token if answer.status == 200 else None

    async def _serve(self, chain: Chain, upstream, settings, margin: float | None = None) -> TokenAnswer:
        margin = settings.refresh_margin if margin is None else margin
        cached = self._cached(chain, settings, margin)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(chain.id, asyncio.Lock())
        async with lock:
            cached = self._cached(chain, settings, margin)  # someone else refreshed while we waited
            if cached is not None:
                cached.decision = "answered from chain (refreshed by a concurrent request)"
                return cached
            return await self._refresh_upstream(chain, upstream, settings)

    def _cached(self, chain: Chain, settings, margin: float) -> TokenAnswer | None:
        now = self.clock.time()
        left = chain.access_expires_at - now
        if chain.needs_reauth:
            return TokenAnswer(400, oauth_error("invalid_grant", self._reauth_text(chain)), {},
                               "refused (chain needs a new authorization)")
        if left > margin:
            return TokenAnswer(200, ok_body(chain, now), {}, f"answered from chain {chain.id} "
                               f"({int(left)} s left)")
        too_soon = now < chain.issued_at + settings.min_refresh_interval or now < chain.paused_until
        if too_soon and left > 0:
            return TokenAnswer(200, ok_body(chain, now), {}, f"answered from chain {chain.id} "
                               f"({int(left)} s left; Exact allows no new token yet)")
        return None

    async def _refresh_upstream(self, chain: Chain, upstream, settings) -> TokenAnswer:
        now = self.clock.time()
        wait = max(chain.issued_at + settings.min_refresh_interval, chain.paused_until) - now
        if wait > 0:
            return TokenAnswer(429, oauth_error("temporarily_unavailable", f"Exact allows the next token for "
                               f"this chain in {int(wait) + 1} s"), {"Retry-After": str(int(wait) + 1)},
                               "refused (too early to refresh)")
        if self.book.calls_today(chain.key, now) >= settings.daily_token_calls:
            reset = (int(now // 86400) + 1) * 86400
            retry = int(reset - now) + 1
            return TokenAnswer(429, oauth_error("temporarily_unavailable", f"the daily token-call budget "
                               f"({settings.daily_token_calls} of Exact's 200) for app {chain.client_id} is "
                               f"spent; it resets at {_utc(reset)}"), {"Retry-After": str(retry)},
                               "refused (daily token budget)")
        form = {"grant_type": "refresh_token", "refresh_token": chain.refresh_token,
                "client_id": chain.client_id}
        if chain.client_secret:
            form["client_secret"] = chain.client_secret
        status, body, headers = await self._post(upstream, form)
        self._count(chain.key)
        now = self.clock.time()
        if status == 200 and "access_token" in body:
            chain.rotate(body["access_token"], _seconds(body, 600), body.get("refresh_token",
                         chain.refresh_token), now)
            chain.forget_older_than(now - settings.old_token_window)
            remember_secret(chain.access_token)
            remember_secret(chain.refresh_token)
            self.book.index(chain)
            await self._save_now(chain)
            return TokenAnswer(200, ok_body(chain, now), {}, f"refreshed upstream for chain {chain.id}", 1)
        reason = headers.get("Reason", "")
        description = str(body.get("error_description", ""))
        if "TooEarly" in reason or "access_token not expired" in description:
            retry = _int(headers.get("Retry-After")) or int(settings.min_refresh_interval)
            chain.paused_until = now + retry
            self._save(chain)
            log.warning("Exact said TooEarlyToRefreshTokens for chain %s; no refresh for %d s", chain.id, retry)
            if chain.access_expires_at > now:
                return TokenAnswer(200, ok_body(chain, now), {}, "answered from chain (Exact said too early)", 1)
            return TokenAnswer(429, oauth_error("temporarily_unavailable", f"Exact allows the next token in "
                               f"{retry} s"), {"Retry-After": str(retry)}, "refused (Exact said too early)", 1)
        if status in (400, 401) and body.get("error") in ("invalid_grant", "unauthorized_client",
                                                          "invalid_request", "invalid_client"):
            chain.needs_reauth = description or str(body.get("error"))
            self._save(chain)
            log.error("TOKEN CHAIN %s (app %s, user %s) NEEDS A NEW AUTHORIZATION: Exact refused its refresh "
                      "token (%s). %s", chain.id, chain.client_id, chain.user or "?", chain.needs_reauth,
                      self._reauth_text(chain))
            return TokenAnswer(400, oauth_error("invalid_grant", self._reauth_text(chain)), {},
                               "refused (chain needs a new authorization)", 1)
        if chain.access_expires_at > now:  # Exact is having trouble; the cached token still works
            return TokenAnswer(200, ok_body(chain, now), {}, f"answered from chain (upstream refresh "
                               f"failed with {status})", 1)
        return TokenAnswer(502 if status < 500 or status >= 600 else status, body or oauth_error(
            "temporarily_unavailable", f"Exact's token endpoint answered {status}"), {},
            f"upstream refresh failed ({status})", 1)

    async def _adopt(self, upstream, form, client_id, secret, settings) -> TokenAnswer:
        """A refresh token the proxy has never seen: send it once and start a chain from the answer."""
        status, body, headers = await self._post(upstream, form)
        self._count((client_id, "adopt"))
        if status != 200 or "access_token" not in body:
            return TokenAnswer(status, body, headers, "unknown refresh token forwarded; Exact refused it", 1)
        now = self.clock.time()
        chain = Chain(id=new_chain_id(), client_id=client_id, upstream=upstream.name,
                      access_token=body["access_token"], access_expires_at=now + _seconds(body, 600),
                      refresh_token=body.get("refresh_token", ""), issued_at=now, refresh_issued_at=now,
                      client_secret=secret, secret_fp=fingerprint(secret) if secret else None,
                      last_used_at=now)
        chain.old_refresh[fingerprint(form.get("refresh_token", ""))] = now
        for value in (chain.access_token, chain.refresh_token, secret):
            remember_secret(value)
        if settings.identify_user:
            chain.user = await self._identify(upstream, chain.access_token)
        existing = self.book.for_user(client_id, chain.user)
        if existing is not None:
            self.book.replace(existing, chain)
        else:
            self.book.add(chain)
        await self._save_now(chain)
        log.info("token chain %s adopted for app %s from a refresh token the proxy had not seen", chain.id,
                 client_id)
        return TokenAnswer(200, ok_body(chain, now), {}, f"chain {chain.id} adopted", 1)

    # -- upstream ----------------------------------------------------------------------------------
    async def _post(self, upstream, form: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        http: aiohttp.ClientSession = self.services.http
        url = upstream.base_url + "/api/oauth2/token"
        t0 = time.perf_counter()
        try:
            async with http.post(url, data=form, headers={"Accept": "application/json"},
                                 ssl=self.services.ssl_for(upstream),
                                 timeout=aiohttp.ClientTimeout(total=30, connect=10)) as resp:
                raw = await resp.read()
                headers = {k: v for k, v in resp.headers.items() if k.lower() in ("reason", "retry-after")}
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                if not isinstance(body, dict):
                    body = {}
                return resp.status, body, headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("token endpoint of %s unreachable: %s", upstream.base_url, type(exc).__name__)
            return 599, {}, {}
        finally:
            self.last_upstream_ms = (time.perf_counter() - t0) * 1000

    async def _identify(self, upstream, access_token: str) -> str | None:
        """The user behind a token (``current/Me``: no division, so it costs no call budget)."""
        http: aiohttp.ClientSession = self.services.http
        try:
            async with http.get(upstream.base_url + "/api/v1/current/Me?$select=UserID",
                                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
                                ssl=self.services.ssl_for(upstream),
                                timeout=aiohttp.ClientTimeout(total=15)) as resp:
                if resp.status != 200:
                    return None
                doc = await resp.json(content_type=None)
                row = doc["d"]["results"][0] if "results" in doc["d"] else doc["d"]
                user = row.get("UserID") or row.get("UserName")
                return str(user) if user else None
        except (TimeoutError, aiohttp.ClientError, ValueError, KeyError, IndexError, TypeError):
            return None

    def _reauth_text(self, chain: Chain) -> str:
        return (f"token chain {chain.id} of app {chain.client_id} needs a new authorization by a person "
                f"({chain.needs_reauth}). Open the app's authorization URL (/api/oauth2/auth?client_id="
                f"{chain.client_id}&redirect_uri=...&response_type=code) in a browser through this proxy, and "
                "let the tool exchange the code; every tool then follows the new chain")

    # -- keep-alive and expiry warnings ----------------------------------------------------------
    async def _keepalive_loop(self) -> None:
        while True:
            await self.clock.sleep(60)
            try:
                await self.keepalive_once()
            except Exception:
                log.exception("token keep-alive failed")

    async def keepalive_once(self) -> None:
        policy = self.services.policy
        settings = policy.tokens
        now = self.clock.time()
        for chain in list(self.book.chains.values()):
            if chain.needs_reauth:
                continue
            expires = chain.refresh_issued_at + settings.refresh_token_lifetime
            upstream = policy.upstreams.get(chain.upstream)
            if settings.keepalive and upstream is not None and chain.client_secret and \
                    now - chain.refresh_issued_at >= settings.keepalive_after:
                answer = await self._serve(chain, upstream, settings, margin=float("inf"))
                log.info("token keep-alive for chain %s: %s", chain.id, answer.decision)
                continue
            if expires - now <= settings.warn_before_expiry:
                log.warning("token chain %s (app %s) expires at %s unless used; enable tokens.keepalive or "
                            "run a tool before then", chain.id, chain.client_id, _utc(expires))

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock.time()
        settings = self.services.policy.tokens
        return [{"chain": c.id, "app": c.client_id, "user": c.user, "access_expires_in_s": int(c.access_expires_at - now),
                 "refresh_expires_at": _utc(c.refresh_issued_at + settings.refresh_token_lifetime),
                 "needs_reauth": bool(c.needs_reauth), "token_calls_today": self.book.calls_today(c.key, now)}
                for c in self.book.chains.values()]


def _seconds(body: dict, default: float) -> float:
    try:
        return float(body.get("expires_in", default))
    except (TypeError, ValueError):
        return default


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
