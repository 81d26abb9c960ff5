"""The broker's own calls to Exact: the token endpoint and ``current/Me``, inside their error budget.

Contract
- ``await post_token(upstream, app, form)`` and ``await get_me(upstream, app, access_token)`` return a
  ``Call``: status, JSON body (``{}`` when it is not JSON), the headers a tool may need (``Reason``,
  ``Retry-After``), and ``local`` when the proxy answered instead of Exact.
- **Error budget.** Each call is keyed (app, None, endpoint) in the app's ``ErrorBook``, the same book
  and keys the ``error_budget`` filters use: while Exact's block lasts, or counted errors + calls in
  flight reach ``error_budget.budget``, the call is not sent and ``Call.local`` is a 429 with
  ``Retry-After`` (never a 401: clients loop on it). Exact's 400/401/403/404 are counted; a 429 without
  rate-limit headers after counted errors is Exact's block and is kept for ``block_pause``.
- **No redirect is followed**: a 3xx is not a token answer; it is logged as an ERROR (where it pointed)
  and becomes a local 502. The grant, the refresh token and the client secret never leave for another
  host.
- Upstream unreachable or too slow: status 599, ``local`` False (nothing is known about what Exact did).
- ``last_ms`` is the time the last call took.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from proxy.clock import utc_text
from proxy.errorbudget.book import ErrorBook, StoreUnreachable
from proxy.errorbudget.settings import ErrorBudgetSettings
from proxy.errorbudget.window import Key

if TYPE_CHECKING:
    from proxy.policy.hosts import Upstream
    from proxy.services import Services

log = logging.getLogger("exact_proxy.tokens")

TOKEN, ME = "oauth2/token", "current/me"


@dataclass
class Call:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    local: bool = False


class TokenEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.last_ms = 0.0

    @property
    def book(self) -> ErrorBook:
        return self.services.error_book

    async def post_token(self, upstream: Upstream, app: str, form: dict[str, str]) -> Call:
        return await self._call(upstream, app, TOKEN, "POST", "/api/oauth2/token", data=form,
                                headers={"Accept": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=30, connect=10))

    async def get_me(self, upstream: Upstream, app: str, access_token: str) -> Call:
        return await self._call(upstream, app, ME, "GET", "/api/v1/current/Me?$select=UserID",
                                headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
                                timeout=aiohttp.ClientTimeout(total=15))

    async def identify(self, upstream: Upstream, app: str, access_token: str) -> str | None:
        """The user behind a token, from ``current/Me`` (no division, so it costs no call budget); None
        when Exact does not say."""
        call = await self.get_me(upstream, app, access_token)
        if call.status != 200:
            return None
        try:
            doc = call.body["d"]
            row = doc["results"][0] if "results" in doc else doc
            user = row.get("UserID") or row.get("UserName")
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
        return str(user) if user else None

    async def _call(self, upstream: Upstream, app: str, endpoint: str, method: str, path: str, **kw: Any) -> Call:
        settings = self.services.policy.error_budget
        key: Key = (app, None, endpoint)
        clock = self.services.clock
        if settings.enabled:
            refused = self._refusal(key, settings, clock.time())
            if refused is not None:
                return refused
            book = self.book
            try:
                if not book.reserve_now(key, settings.budget, clock.time()) and \
                        await book.reserve(key, settings.budget, clock.time) is None:
                    return self._refusal(key, settings, clock.time()) or _busy(1)
            except StoreUnreachable:  # cluster mode: the shared error budget cannot be asked
                return Call(503, {"error": "temporarily_unavailable", "error_description": "exact-proxy: the "
                                  "cluster's shared state server is unreachable; nothing was sent to Exact"},
                            {"Retry-After": "5"}, local=True)
        try:
            call = await self._send(upstream, method, path, **kw)
        finally:
            if settings.enabled:
                self.book.release(key)
        if settings.enabled and not call.local:
            self._count(key, call, settings)
        return call

    async def _send(self, upstream: Upstream, method: str, path: str, **kw: Any) -> Call:
        http = self.services.http
        if http is None:
            raise RuntimeError("the upstream HTTP session is not open (Services.start opens it)")
        t0 = time.perf_counter()
        try:
            async with http.request(method, upstream.base_url + path, allow_redirects=False,
                                    ssl=self.services.ssl_for(upstream), **kw) as resp:
                raw = await resp.read()
                if 300 <= resp.status < 400:
                    log.error("Exact's %s at %s answered %d redirecting to %s: not followed (the broker never "
                              "sends a grant, token or secret to another address)", path.split("?")[0],
                              upstream.base_url, resp.status, _host_of(resp.headers.get("Location", "")))
                    return Call(502, {"error": "temporarily_unavailable", "error_description": "exact-proxy: "
                                      f"Exact answered {resp.status} (a redirect, not followed)"}, local=True)
                headers = {k: v for k, v in resp.headers.items() if k.lower() in ("reason", "retry-after")}
                if any(k.lower().startswith("x-ratelimit-") for k in resp.headers):
                    headers["X-RateLimit"] = "1"  # marks a limit 429, not Exact's error block
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                return Call(resp.status, body if isinstance(body, dict) else {}, headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("%s of %s unreachable: %s", path.split("?")[0], upstream.base_url, type(exc).__name__)
            return Call(599, {})
        finally:
            self.last_ms = (time.perf_counter() - t0) * 1000

    def _refusal(self, key: Key, settings: ErrorBudgetSettings, now: float) -> Call | None:
        why = self.book.refusal(key, settings.budget, now)
        if why is None:
            return None
        reason, until = why
        wait = max(1, int(until - now + 0.999))
        text = (f"Exact blocked {key[2]} of app {key[0]} after too many errors; not sent until it ends"
                if reason == "blocked" else
                f"the error budget of {key[2]} for app {key[0]} is spent ({self.book.count(key, now)} errors "
                f"within {settings.window:g} s; Exact blocks the app at {settings.exact_limit + 1})")
        return Call(429, {"error": "temporarily_unavailable", "error_description": f"exact-proxy: {text}; "
                          f"retry in {wait} s"}, {"Retry-After": str(wait)}, local=True)

    def _count(self, key: Key, call: Call, settings: ErrorBudgetSettings) -> None:
        book, now = self.book, self.services.clock.time()
        if call.status in settings.statuses:
            count = book.add(key, now)
            if count >= settings.budget:
                log.warning("error budget of app %s, endpoint %s is spent (%d errors in %g s): the broker "
                            "sends it nothing until %s", key[0], key[2], count, settings.window,
                            utc_text(book.reset_at(key, now)))
        elif call.status == 429 and "X-RateLimit" not in call.headers and book.count(key, now) > 0:
            until = now + settings.block_pause
            book.block(key, until)
            log.error("EXACT BLOCKED app %s, endpoint %s (429 after %d errors): not sending it until %s",
                      key[0], key[2], book.count(key, now), utc_text(until))
        call.headers.pop("X-RateLimit", None)


def _busy(wait: int) -> Call:  # pragma: no cover - reserve() says no only when a refusal has a cause
    return Call(429, {"error": "temporarily_unavailable", "error_description": "exact-proxy: error budget"},
                {"Retry-After": str(wait)}, local=True)


def _host_of(location: str) -> str:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(location)
    except ValueError:
        return "(unreadable)"
    return parts.netloc or "(a relative address)"

