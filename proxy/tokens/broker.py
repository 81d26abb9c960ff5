"""The token broker: answers token requests from its chains and refreshes upstream at most once.

Contract
- Client ids are compared in their normal form (``proxy.exact.client_id``): ``{GUID}`` and ``guid`` are one
  app, one chain.
- **No token without the secret.** A token request answered from a chain needs the client id and the
  secret that started it (body or HTTP Basic); otherwise the answer is Exact's ``401 invalid_client``.
- ``exchange_code`` sends an authorization-code exchange once (codes are single use) and starts a chain
  from a successful answer.
- ``refresh`` serves a refresh request: from the chain while its access token has more than
  ``refresh_margin`` seconds left (30 = 600 - 570: from when Exact allows a new token, a refresh gets
  one, as it would from Exact), or while Exact would refuse a new token anyway (less than
  ``min_refresh_interval`` since the last one, or a TooEarly pause); otherwise by one upstream refresh.
  Any earlier refresh token of the chain, within ``old_token_window``, is served the same way. A refresh
  token the proxy never saw is sent once and adopted as a chain.
- **Single flight.** Every upstream token call (a chain's refresh, an adoption, a code exchange) runs once
  for all the tools that ask at the same time; they all get its answer (``proxy.tokens.flight``). A code
  or refresh token Exact refused is remembered with the credentials that presented it and answered
  locally after that: a retry loop costs Exact nothing.
- **Budgets.** Upstream token calls per app and user per UTC day stop at ``daily_token_calls`` (code
  exchanges and adoptions, whose user is not known yet, count per app); the token endpoint and
  ``current/Me`` calls of the broker pass the app's error budget (``proxy.tokens.endpoint``).
- **A rejected chain cannot loop.** ``rejected(chain, token)`` says Exact answered 401 to the chain's
  current access token. The next refresh goes upstream as soon as Exact allows one; when it cannot (too
  early, budget spent) or Exact refuses it, the chain is marked ``needs_reauth``: an ERROR in the log,
  the status page and a metric. Such a chain is tried upstream again once Exact would allow it
  (``reauth_retry_at``) unless its refresh token itself was refused; until then a handful of calls
  (``probe_due``: after 5, 20, 80 and 320 s) test the refused token, and ``accepted`` ends it all
  when Exact takes the token again (an outage that ended). Answers for a chain that needs a person
  carry ``reauth`` so the filters can slow a looping tool down.
- ``fresh_access(chain)`` returns a valid access token for a chain, refreshing first when needed (used
  right before an API call is sent).
- **Cluster mode** (``services.cluster``): the chains live on the shared server and every node serves
  every chain; the cluster's lease and version CAS make the single flight cluster-wide
  (``proxy.cluster.chain_flow``; the seams are ``shared`` in ``load``, ``_save``, ``refresh``, ``serve``
  and ``_start_chain``). With ``services.cluster`` None none of it runs.
- Every token and secret the broker sees is registered with ``redact.remember_secret``; chains are
  persisted after every change (flushed at once after a rotation: a lost rotation is a lost chain).
  With ``EXACT_PROXY_TOKEN_KEY`` set, chains stored in plain text are sealed at start.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from proxy.clock import utc_text
from proxy.exact.client_id import normal_client_id
from proxy.ops.redact import remember_secret
from proxy.tokens.answers import TokenAnswer, joined, no_client, oauth_error, ok_body, remembered_answer
from proxy.tokens.chains import NAMESPACE, Chain, ChainBook, new_chain_id, status_row
from proxy.tokens.endpoint import Call, TokenEndpoint
from proxy.tokens.flight import Flights, Refusals, Refused, remembered
from proxy.tokens.keepalive import KeepAlive
from proxy.tokens.refresh import Refresher, seconds
from proxy.tokens.sealing import Sealer, fingerprint
from proxy.tokens.settings import TokenSettings
from proxy.tokens.vault import ChainVault

if TYPE_CHECKING:
    from proxy.cluster.chain_flow import SharedChains
    from proxy.policy.hosts import Upstream
    from proxy.services import Services
    from proxy.store.base import Store

log = logging.getLogger("exact_proxy.tokens")

NO_SECRET = "no client_secret in the body or as HTTP Basic"

NEW_USER = "(new)"  # the day's count of code exchanges and adoptions, before the user is known


class ChainBroker(Refresher):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.sealer = Sealer.from_env()
        self.book = ChainBook(self.sealer)
        self.endpoint = TokenEndpoint(services)
        self.flights: Flights[TokenAnswer] = Flights()
        self.refusals = Refusals()
        self.keepalive = KeepAlive(self)
        self.vault = ChainVault(services, self.book, self.sealer)
        self.shared: SharedChains | None = None  # cluster mode: the chains every node shares
        if services.cluster is not None:
            from proxy.cluster.chain_flow import SharedChains

            self.shared = SharedChains(self, services.cluster)

    @property
    def store(self) -> Store | None:
        return self.services.store

    @property
    def last_upstream_ms(self) -> float:
        return self.endpoint.last_ms

    # -- life ------------------------------------------------------------------------------------
    async def load(self) -> None:
        await self.vault.load()
        if self.shared is not None:
            await self.shared.start()

    def start(self) -> None:
        self.keepalive.start()

    async def stop(self) -> None:
        await self.keepalive.stop()

    def _save(self, chain: Chain) -> None:
        self.vault.save(chain)
        if self.shared is not None:
            self.shared.annotate_soon(chain)

    async def _save_now(self, chain: Chain) -> None:
        await self.vault.save_now(chain)

    def _count(self, chain_key: tuple[str, str]) -> None:
        self.vault.count(chain_key)

    def _daily_refusal(self, key: tuple[str, str], settings: TokenSettings, now: float) -> TokenAnswer | None:
        if self.book.calls_today(key, now) < settings.daily_token_calls:
            return None
        reset = (int(now // 86400) + 1) * 86400
        return TokenAnswer(429, oauth_error("temporarily_unavailable", f"the daily token-call budget "
                           f"({settings.daily_token_calls} of Exact's 200) for app {key[0]} is spent; it resets "
                           f"at {utc_text(reset)}"), {"Retry-After": str(int(reset - now) + 1)},
                           "refused (daily token budget)")

    # -- the code grant ----------------------------------------------------------------------------
    async def exchange_code(self, upstream: Upstream, form: dict[str, str], client_id: str, secret: str | None,
                            settings: TokenSettings) -> TokenAnswer:
        code = form.get("code", "")
        app = self._presented(code, client_id)
        if not secret:
            return no_client(NO_SECRET)
        rkey, known = self._refused_before(code, app, secret, "code")
        if known is not None:
            return known
        answer, shared = await self.flights.run(("code",) + rkey, lambda: self._start_chain(
            upstream, form, app, secret, settings, rkey))
        return joined(answer, "exchange") if shared else answer

    async def _start_chain(self, upstream: Upstream, form: dict[str, str], app: str, secret: str,
                           settings: TokenSettings, rkey: tuple[str, str]) -> TokenAnswer:
        """A code exchange, or a refresh token the proxy has never seen: sent once; a chain is started
        from a successful answer (replacing the app and user's earlier chain, whose tools follow it)."""
        if self.shared is not None:
            return await self.shared.start_chain(upstream, form, app, secret, settings, rkey)
        adopting = form.get("grant_type") == "refresh_token"
        refused = self._daily_refusal((app, NEW_USER), settings, self.clock.time())
        if refused is not None:
            return refused
        call = await self.endpoint.post_token(upstream, app, form)
        failed = self._start_failed(call, app, rkey, adopting)
        if failed is not None:
            return failed
        chain = await self._new_chain(upstream, app, secret, call.body, settings)
        self._place(chain, form, self.book.for_user(app, chain.user))
        await self._save_now(chain)
        return self._started(chain, adopting)

    def _start_failed(self, call: Call, app: str, rkey: tuple[str, str], adopting: bool) -> TokenAnswer | None:
        """The answer to a code exchange or an adoption that Exact did not answer with tokens."""
        if call.local:
            return TokenAnswer(call.status, call.body, call.headers, "refused (token endpoint error budget)")
        if call.status != 200 or "access_token" not in call.body:
            self._count((app, NEW_USER))
            self._remember(rkey, call)
            return TokenAnswer(call.status, call.body, call.headers, "unknown refresh token forwarded; Exact "
                               "refused it" if adopting else "code exchange failed upstream", 1)
        return None

    def _started(self, chain: Chain, adopting: bool) -> TokenAnswer:
        return TokenAnswer(200, ok_body(chain, self.clock.time()), {},
                           f"chain {chain.id} {'adopted' if adopting else 'started'}", 1)

    def _place(self, chain: Chain, form: dict[str, str], existing: Chain | None) -> None:
        """A new chain in the book, replacing the app and user's earlier one (whose tools follow it)."""
        adopting = form.get("grant_type") == "refresh_token"
        app = chain.client_id
        if adopting:
            chain.old_refresh[fingerprint(form.get("refresh_token", ""))] = chain.issued_at
        how = "adopted from a refresh token the proxy had not seen" if adopting else "started"
        if existing is not None:
            self.book.replace(existing, chain)
            if self.store is not None:
                self.store.delete(NAMESPACE, existing.id)
            log.info("token chain %s %s for app %s, user %s; it replaces chain %s", chain.id, how, app,
                     chain.user, existing.id)
        else:
            self.book.add(chain)
            log.info("token chain %s %s for app %s, user %s", chain.id, how, app, chain.user or "?")

    async def _new_chain(self, upstream: Upstream, app: str, secret: str, body: dict[str, Any],
                         settings: TokenSettings) -> Chain:
        now = self.clock.time()
        chain = Chain(id=new_chain_id(), client_id=app, upstream=upstream.name,
                      access_token=body["access_token"], access_expires_at=now + seconds(body, 600),
                      refresh_token=body.get("refresh_token", ""), issued_at=now, refresh_issued_at=now,
                      client_secret=secret, secret_fp=fingerprint(secret), last_used_at=now)
        for value in (chain.access_token, chain.refresh_token, secret):
            remember_secret(value)
        if settings.identify_user:
            chain.user = await self.endpoint.identify(upstream, app, chain.access_token)
        self._count(chain.key)  # Exact counts token calls per app and user: the user is known only now
        return chain

    @staticmethod
    def _presented(value: str, client_id: str) -> str:
        """A code or refresh token a tool presents: masked in every later log line. Returns the app."""
        remember_secret(value)
        return normal_client_id(client_id)

    def _refused_before(self, value: str, app: str, secret: str,
                        what: str) -> tuple[tuple[str, str], TokenAnswer | None]:
        """The memory key of a code or refresh token with the credentials presenting it, and Exact's
        earlier refusal of them when there is one."""
        rkey = (fingerprint(value), fingerprint(f"{app}|{secret}"))
        hit = self.refusals.get(rkey, self.clock.time())
        return rkey, (remembered_answer(hit, what) if hit is not None else None)

    def _remember(self, rkey: tuple[str, str], call: Call) -> None:
        if remembered(call.status, call.body):
            self.refusals.put(rkey, Refused(call.status, call.body, call.headers, self.clock.time()))

    # -- the refresh grant -------------------------------------------------------------------------
    async def refresh(self, upstream: Upstream, form: dict[str, str], client_id: str, secret: str | None,
                      settings: TokenSettings) -> TokenAnswer:
        token = form.get("refresh_token", "")
        app = self._presented(token, client_id)
        if not secret:
            return no_client(NO_SECRET)
        now = self.clock.time()
        chain, current = self.book.by_refresh(token, now, settings.old_token_window)
        if chain is None and self.shared is not None:
            chain, current, down = await self.shared.find_refresh(token, app, settings)
            if down is not None:
                return down
        if chain is None:
            rkey, known = self._refused_before(token, app, secret, "refresh token")
            if known is not None:
                return known
            answer, shared = await self.flights.run(("adopt",) + rkey, lambda: self._start_chain(
                upstream, form, app, secret, settings, rkey))
            if not shared:
                return answer
            chain, current = self.book.by_refresh(token, self.clock.time(), settings.old_token_window)
            if chain is None:
                return joined(answer, "adoption")
        if chain.client_id != app:
            return TokenAnswer(401, oauth_error("unauthorized_client", "this refresh token belongs to "
                               "another app (client_id)"), {}, "refused (refresh token of another app)")
        if chain.secret_fp and fingerprint(secret) != chain.secret_fp:
            return no_client("client_secret does not match the one this chain was authorized with")
        if not chain.client_secret:
            chain.client_secret, chain.secret_fp = secret, fingerprint(secret)
        chain.last_used_at = now
        answer = await self.serve(chain, upstream, settings)
        answer.decision += f" ({'current' if current else 'earlier'} refresh token)"
        return answer

    async def fresh_access(self, chain: Chain, upstream: Upstream, settings: TokenSettings) -> TokenAnswer:
        """The chain's answer with a valid access token (status 200), refreshing upstream first when
        the current one expires within a second or Exact refused it."""
        return await self.serve(chain, upstream, settings, margin=1.0)

    async def serve(self, chain: Chain, upstream: Upstream, settings: TokenSettings,
                    margin: float | None = None) -> TokenAnswer:
        margin = settings.refresh_margin if margin is None else margin
        if self.shared is not None:  # the cluster's newest version decides
            chain, down = await self.shared.before_deciding(chain)
            if down is not None:
                return down
        cached = self._cached(chain, settings, margin)
        if cached is not None:
            return cached
        refresh = self._refresh_upstream if self.shared is None else self.shared.refresh
        answer, shared = await self.flights.run(("chain", chain.id), lambda: refresh(chain, upstream, settings))
        if shared:
            return dataclasses.replace(answer, body=dict(answer.body), upstream_calls=0,
                                       decision="answered from chain (refreshed by a concurrent request)")
        return answer

    def _cached(self, chain: Chain, settings: TokenSettings, margin: float) -> TokenAnswer | None:
        now = self.clock.time()
        if chain.needs_reauth:
            if chain.reauth_retry_at and now >= chain.reauth_retry_at:
                return None  # Exact may give the chain a working token now: one more try upstream
            return self._reauth_answer(chain)
        if chain.rejected_at >= chain.issued_at > 0:
            return None  # Exact refused the current access token: only a new one helps
        left = chain.access_expires_at - now
        if left > margin:
            return TokenAnswer(200, ok_body(chain, now), {}, f"answered from chain {chain.id} "
                               f"({int(left)} s left)")
        too_soon = now < chain.issued_at + settings.min_refresh_interval or now < chain.paused_until
        if too_soon and left > 0:
            return TokenAnswer(200, ok_body(chain, now), {}, f"answered from chain {chain.id} "
                               f"({int(left)} s left; Exact allows no new token yet)")
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        now = self.clock.time()
        settings = self.services.policy.tokens
        return [status_row(c.id, c.client_id, c.user, issued_at=c.issued_at, access_expires_at=c.access_expires_at,
                           refresh_issued_at=c.refresh_issued_at, paused_until=c.paused_until,
                           needs_reauth=c.needs_reauth, rejected_at=c.rejected_at,
                           calls_today=self.book.calls_today(c.key, now), settings=settings, now=now)
                for c in self.book.chains.values()]

