"""Cluster mode of the token broker: every node serves every chain, and the whole cluster calls Exact's
token endpoint at most once per chain and interval.

Contract: ``SharedChains(broker, node)`` is ``ChainBroker.shared`` in cluster mode (None on one node,
where nothing here runs). The shared records, index, lease and counters are ``proxy.cluster.chains``.
- ``await start()``: chains of this node's own file that the server lacks are seeded (a newer shared
  version is never overwritten; a shared one is adopted), the ``token_chains`` view is registered, and
  after an outage the chains are seeded and pending writes retried again.
- ``await before_deciding(chain, margin) -> (chain, answer)``: before the broker answers from a chain or
  refreshes it, the shared record is read (one round trip) and adopted when newer (a chain another
  node replaced is followed). While the server is unreachable: ``answer`` is the last-read chain while
  its access token is valid, else 503 with ``Retry-After`` (nothing sent to Exact).
- ``await refresh(chain, upstream, settings)`` (inside the node's own single flight): the lease
  (``acquire``: lease, fence, the day's token call reserved and the intent written in one script) decides
  who may call Exact; a node that does not get it never presents the token: it polls (0.2 s real time,
  up to ``token_lease``) until the version moves or the lease is free, and answers from the new
  version. Exact's 200 is committed by the version CAS as the first await after its answer; a lost
  CAS (another node rotated first) adopts the other rotation. A refused refresh token re-reads the
  version before the chain is declared dead, and names the node whose refresh intent was left (it died
  after Exact rotated). A commit the server could not take is kept and retried when it is back.
- ``await find_refresh(token, app, settings)``: a refresh token this node does not know, looked up in
  the shared index. ``await find_access(token)``: the same for an API call's Bearer token (misses are
  remembered: a token is indexed before any tool has it).
- ``await start_chain(...)``: a code exchange or an unknown refresh token, single flight for the
  cluster: a lease keyed by the token's fingerprint (and a reserved call); the others wait until the
  index names the new chain (or Exact's refusal is shared) and answer from it.
- ``annotate_soon(chain)``: a pause, needs_reauth or a refused access token written to the shared
  record (no new version: a concurrent rotation wins); ``await flush(chain)`` writes it now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import OrderedDict
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from proxy.clock import utc_text
from proxy.cluster.chains import NEW_USER, ChainStore, Shared
from proxy.cluster.link import RETRY_AFTER, StoreDown
from proxy.ops.redact import remember_secret
from proxy.tokens.answers import TokenAnswer, oauth_error, ok_body
from proxy.tokens.chains import Chain, ChainBook
from proxy.tokens.flight import Refused, remembered
from proxy.tokens.sealing import fingerprint

if TYPE_CHECKING:
    from proxy.cluster.node import ClusterNode
    from proxy.policy.hosts import Upstream
    from proxy.tokens.broker import ChainBroker
    from proxy.tokens.settings import TokenSettings

log = logging.getLogger("exact_proxy.tokens")

SHARED_FAILURE = 3.0  # real seconds a failure that retrying may change is shared with the waiting nodes
POLL = 0.2          # real seconds between looks at a chain another node is refreshing
DAY = 86400.0


class SharedChains:
    def __init__(self, broker: ChainBroker, node: ClusterNode) -> None:
        self.broker, self.node = broker, node
        self.store = ChainStore(node.link)
        self.lease_s = node.settings.token_lease
        self.seen: dict[str, tuple[int, int]] = {}        # chain id -> (ver, rev) last read
        self._dirty: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[str, tuple[str, int]] = {}    # chain id -> (owner, ver read): commits to retry
        self._misses: OrderedDict[str, None] = OrderedDict()  # access fingerprints no chain has

    @property
    def book(self) -> ChainBook:
        return self.broker.book

    @property
    def settings(self) -> TokenSettings:
        return self.broker.services.policy.tokens

    def now(self) -> float:
        return self.broker.clock.time()

    def owner(self) -> str:
        return f"{self.node.name}:{secrets.token_hex(4)}"

    # -- life ------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.node.views["token_chains"] = self.view
        self.node.link.on_up.append(self._back)
        try:
            await self.seed_all()
        except StoreDown:
            log.warning("token chains: the cluster server is unreachable at start; this node's chains are "
                        "seeded when it answers")

    async def _back(self, lost: bool) -> None:
        for chain_id, (owner, ver) in list(self._pending.items()):
            chain = self.book.chains.get(chain_id)
            if chain is not None:
                await self._commit_pending(chain, owner, ver)
        await self.seed_all(force=lost)
        for chain_id in list(self._dirty):
            chain = self.book.chains.get(chain_id)
            if chain is not None:
                await self.flush(chain)

    async def seed_all(self, force: bool = False) -> None:
        seeded = 0
        for chain in list(self.book.chains.values()):
            if force:
                self.seen.pop(chain.id, None)
            if await self.store.seed(chain.client_id, chain.id, self.book.record(chain), self._index(chain),
                                     self._ttl()):
                self.seen[chain.id] = (1, 0)
                seeded += 1
            else:
                await self.sync(chain)
        if seeded:
            log.info("token chains: %d chain(s) of this node's file seeded on the cluster server", seeded)

    # -- reading and adopting --------------------------------------------------------------------
    def _ttl(self) -> float:
        return self.settings.refresh_token_lifetime + DAY

    def _index(self, chain: Chain) -> dict[str, float]:
        now, window = self.now(), self.settings.old_token_window
        index = {f"r:{fingerprint(chain.refresh_token)}": self._ttl(),
                 f"a:{fingerprint(chain.access_token)}": max(1.0, chain.access_expires_at - now) + window}
        for fp, at in chain.old_refresh.items():
            index.setdefault(f"r:{fp}", max(1.0, at + window - now))
        for fp, at in chain.old_access.items():
            index.setdefault(f"a:{fp}", max(1.0, at + window - now))
        return index

    def _open(self, shared: Shared) -> Chain | None:
        assert shared.rec is not None
        try:
            return self.book.load_record(shared.rec)
        except Exception as exc:  # a record sealed with another key must not stop this node
            log.error("the cluster's record of token chain %s cannot be opened (is EXACT_PROXY_TOKEN_KEY the "
                      "same on every node?): %s", shared.id, exc)
            return None

    def adopt(self, chain: Chain, shared: Shared) -> Chain:
        """The shared record's state on the chain this node holds (same object: filters keep it)."""
        if shared.rec is None:
            return chain
        new = self._open(shared)
        if new is None:
            return chain
        for f in fields(Chain):
            if f.name not in ("probes", "next_probe_at"):
                setattr(chain, f.name, getattr(new, f.name))
        self._known(chain, shared)
        return chain

    def _known(self, chain: Chain, shared: Shared) -> None:
        for secret in (chain.access_token, chain.refresh_token, chain.client_secret):
            remember_secret(secret)
        self.book.index(chain)
        self.seen[chain.id] = (shared.ver, shared.rev)
        self.broker.vault.save(chain)  # this node's own copy: the backup

    def _add(self, shared: Shared) -> Chain | None:
        chain = self._open(shared)
        if chain is None:
            return None
        known = self.book.chains.get(chain.id)
        if known is not None:
            return self.adopt(known, shared)
        self.book.add(chain)
        self._known(chain, shared)
        return chain

    async def sync(self, chain: Chain) -> Chain:
        ver, rev = self.seen.get(chain.id, (0, 0))
        got = await self.store.read(chain.client_id, chain.id, ver, rev)
        if got is None:
            return chain
        if got.missing:  # the server lost it (or never had it): this node's copy seeds it
            await self.store.seed(chain.client_id, chain.id, self.book.record(chain), self._index(chain),
                                  self._ttl())
            self.seen[chain.id] = (1, 0)
            return chain
        chain = self.adopt(chain, got)
        if got.moved:
            newer = await self.store.record(chain.client_id, got.moved)
            replacement = self._add(newer) if not newer.missing else None
            if replacement is not None:
                self.book.replace(chain, replacement)
                self.book.index(replacement)
                return replacement
        return chain

    async def before_deciding(self, chain: Chain) -> tuple[Chain, TokenAnswer | None]:
        try:
            return await self.sync(chain), None
        except StoreDown:
            return chain, self.down(chain)

    def down(self, chain: Chain) -> TokenAnswer:
        """The server is unreachable: no node can rotate now, so the last-read chain is good while its
        access token is; after that, 503."""
        now = self.now()
        left = chain.access_expires_at - now
        if not chain.needs_reauth and not self.broker.is_rejected(chain) and left > 1:
            return TokenAnswer(200, ok_body(chain, now), {}, f"answered from chain {chain.id} ({int(left)} s "
                               "left; the cluster server is unreachable)")
        return unreachable("a new token for this chain")

    async def find_refresh(self, token: str, app: str, settings: TokenSettings
                           ) -> tuple[Chain | None, bool, TokenAnswer | None]:
        try:
            got = await self.store.find(app, "r", fingerprint(token))
        except StoreDown:
            return None, False, unreachable("this refresh token")
        if got is None or self._add(got) is None:
            return None, False, None
        chain, current = self.book.by_refresh(token, self.now(), settings.old_token_window)
        return chain, current, None

    async def find_access(self, token: str, app: str | None) -> Chain | None:
        fp = fingerprint(token)
        if fp in self._misses:
            return None
        try:
            apps = {c.client_id for c in self.book.chains.values()} | {a for a, _id in await self.store.chain_ids()}
            for name in sorted(apps, key=lambda a: a != app):  # the request's app first
                got = await self.store.find(name, "a", fp)
                if got is not None:
                    self._add(got)
                    chain = self.book.by_access(token)
                    if chain is not None:
                        return chain
        except StoreDown:
            return None
        self._misses[fp] = None
        while len(self._misses) > 10000:
            self._misses.popitem(last=False)
        return None

    # -- annotations -----------------------------------------------------------------------------
    def annotate_soon(self, chain: Chain) -> None:
        self._dirty.add(chain.id)
        task = asyncio.get_running_loop().create_task(self.flush(chain))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, chain: Chain) -> None:
        if chain.id not in self._dirty:
            return
        self._dirty.discard(chain.id)
        ver, _rev = self.seen.get(chain.id, (0, 0))
        try:
            ok, shared = await self.store.annotate(chain.client_id, chain.id, ver, self.book.record(chain),
                                                   self._ttl())
        except StoreDown:
            self._dirty.add(chain.id)  # written when the server is back
            return
        if ok:
            self.seen[chain.id] = (ver, shared.rev)
        elif shared.rec is not None:
            log.info("token chain %s was rotated by another node: its annotation is dropped", chain.id)
            self.adopt(chain, shared)

    # -- the refresh -----------------------------------------------------------------------------
    async def refresh(self, chain: Chain, upstream: Upstream, settings: TokenSettings) -> TokenAnswer:
        broker, owner = self.broker, self.owner()
        deadline = asyncio.get_running_loop().time() + self.lease_s
        user, unreadable = chain.user or f"chain:{chain.id}", 0
        start = self.seen.get(chain.id, (0, 0))
        while True:
            if self.seen.get(chain.id, (0, 0)) != start:  # a newer version came (here or by another request)
                cached = broker._cached(chain, settings, 1.0)
                if cached is not None:
                    cached.decision += " (refreshed by another node)"
                    return cached
                start = self.seen.get(chain.id, (0, 0))
            now = self.now()
            rejected = broker.is_rejected(chain)
            early = broker._early(chain, settings, now, rejected)
            if early is not None:
                return early
            ver, rev = self.seen.get(chain.id, (0, 0))
            try:
                got = await self.store.acquire(chain.client_id, chain.id, owner, ver, rev, int(self.lease_s * 1000),
                                               settings.daily_token_calls, user)
            except StoreDown:
                return self.down(chain)
            if got.state == "moved":
                if got.shared.rec is None:  # the server lost the chain: this node's copy seeds it
                    await self.sync(chain)
                    continue
                self.adopt(chain, got.shared)
                unreadable += 1
                if unreadable > 3:  # adopt() could not open it (logged): a key that differs between nodes
                    return unreachable("a new token for this chain", "the cluster's record of it cannot be opened")
                continue
            if got.state == "held":
                if asyncio.get_running_loop().time() >= deadline:
                    return unreachable("a new token for this chain", f"node {got.holder} is refreshing it and "
                                       "has not finished within the lease")
                await asyncio.sleep(POLL)
                continue
            if got.state == "spent":
                return broker._spent(chain, daily(chain.key, settings, now), rejected, now)
            break
        return await self._refresh_held(chain, upstream, settings, owner, ver, rev, rejected, got.prior)

    async def _refresh_held(self, chain: Chain, upstream: Upstream, settings: TokenSettings, owner: str,
                            ver: int, rev: int, rejected: bool, prior: dict[str, str]) -> TokenAnswer:
        broker, user = self.broker, chain.user or f"chain:{chain.id}"
        keep, give_back, committed = False, False, False
        try:
            call = await broker.endpoint.post_token(upstream, chain.client_id, broker._refresh_form(chain))
            if call.local:
                give_back = True
                return TokenAnswer(call.status, call.body, call.headers, "refused (token endpoint error budget)")
            broker._count(chain.key)
            if call.status == 200 and "access_token" in call.body:
                async def commit(c: Chain) -> None:
                    nonlocal committed
                    committed = True  # the commit drops the lease and the intent
                    await self._commit(c, owner, ver)
                return await broker._after_refresh(chain, call, settings, rejected, commit)
            keep = call.status >= 500  # Exact may have rotated: the intent stays for the next node
            if remembered(call.status, call.body):
                try:
                    moved = await self.store.read(chain.client_id, chain.id, ver, rev)
                except StoreDown:
                    moved = None
                if moved is not None and moved.rec is not None:
                    self.adopt(chain, moved)
                    cached = broker._cached(chain, settings, 1.0)
                    if cached is not None:
                        cached.decision += " (another node rotated it meanwhile)"
                        cached.upstream_calls = 1
                        return cached
                why = f"Exact refused its refresh token: {call.body.get('error_description') or call.body.get('error')}"
                if prior.get("node") and prior.get("ver") == str(ver):
                    at = utc_text(float(prior.get("at", "0")) / 1000)
                    why += (f". Node {prior['node']} started a refresh of this chain at {at} and never stored "
                            "its result: it probably stopped (killed?) after Exact had rotated the token")
                answer = broker._needs_reauth(chain, why)
                answer.upstream_calls = 1
                return answer
            return await broker._after_refresh(chain, call, settings, rejected, self._no_commit)
        finally:
            await self.flush(chain)
            try:
                if not committed:
                    await self.store.release(chain.client_id, chain.id, owner, keep, give_back, user)
            except StoreDown:
                pass  # the lease runs out by itself

    async def _no_commit(self, chain: Chain) -> None:  # pragma: no cover - only a 200 rotates
        raise AssertionError("no rotation without Exact's 200")

    async def _commit(self, chain: Chain, owner: str, ver_read: int) -> None:
        try:
            ok, shared = await self.store.commit(chain.client_id, chain.id, owner, ver_read, self.book.record(chain),
                                                 self._index(chain), self._ttl())
        except StoreDown:
            self._pending[chain.id] = (owner, ver_read)
            log.error("token chain %s rotated, but the cluster server is unreachable: kept on this node and "
                      "written to the server when it answers", chain.id)
            self.book.index(chain)
            await self.broker.vault.save_now(chain)
            return
        if ok:
            self.book.index(chain)
            self.seen[chain.id] = (shared.ver, shared.rev)
            await self.broker.vault.save_now(chain)
        else:
            log.error("token chain %s: Exact rotated it for node %s, but another node stored a rotation first; "
                      "the cluster's version is kept", chain.id, self.node.name)
            self.adopt(chain, shared)

    async def _commit_pending(self, chain: Chain, owner: str, ver_read: int) -> None:
        ok, shared = await self.store.commit(chain.client_id, chain.id, owner, ver_read, self.book.record(chain),
                                             self._index(chain), self._ttl())
        self._pending.pop(chain.id, None)
        if ok:
            self.seen[chain.id] = (shared.ver, shared.rev)
            log.info("token chain %s: the rotation kept during the outage is on the cluster server", chain.id)
        else:
            log.error("token chain %s: the rotation kept during the outage lost to another node's", chain.id)
            self.adopt(chain, shared)

    # -- codes and refresh tokens the cluster has not seen ---------------------------------------
    async def start_chain(self, upstream: Upstream, form: dict[str, str], app: str, secret: str,
                          settings: TokenSettings, rkey: tuple[str, str]) -> TokenAnswer:
        broker, owner = self.broker, self.owner()
        adopting = form.get("grant_type") == "refresh_token"
        kind, (fp, cred) = ("r" if adopting else "c"), rkey
        deadline = asyncio.get_running_loop().time() + self.lease_s
        while True:
            try:
                state, detail = await self.store.claim(app, kind, fp, cred, owner, int(self.lease_s * 1000),
                                                       settings.daily_token_calls)
            except StoreDown:
                return unreachable("this token request")
            if state == "done":
                return await self._started_elsewhere(detail, form, app, secret, upstream, settings)
            if state == "refused":
                hit = json.loads(detail)
                if hit.get("final"):
                    broker.refusals.put(rkey, Refused(int(hit["status"]), hit["body"], hit["headers"], self.now()))
                return TokenAnswer(int(hit["status"]), hit["body"], hit["headers"], "answered as another node's "
                                   "call with the same token was (Exact refused it)")
            if state == "spent":
                return daily((app, NEW_USER), settings, self.now())
            if state == "got":
                break
            if asyncio.get_running_loop().time() >= deadline:
                return unreachable("this token request", "another node is sending it and has not finished")
            await asyncio.sleep(POLL)
        sent = False
        try:
            call = await broker.endpoint.post_token(upstream, app, form)
            sent = not call.local
            failed = broker._start_failed(call, app, rkey, adopting)
            if failed is not None:
                final = remembered(call.status, call.body)  # else shared only with the nodes waiting now
                refusal = {"status": failed.status, "body": failed.body, "headers": failed.headers, "final": final}
                await self.store.refuse(app, kind, fp, cred, owner, refusal if sent else None,
                                        broker.refusals.ttl if final else SHARED_FAILURE, not sent)
                return failed
            chain = await broker._new_chain(upstream, app, secret, call.body, settings)
            existing = broker.book.for_user(app, chain.user)
            if existing is None and chain.user is not None:
                found = await self.store.find(app, "u", chain.user)
                existing = self._add(found) if found is not None else None
            broker._place(chain, form, existing)
            presented = settings.old_token_window if adopting else 600.0
            await self.store.create(app, chain.id, chain.user, owner, kind, fp, self.book.record(chain),
                                    self._index(chain), self._ttl(), presented)
            self.seen[chain.id] = (1, 0)
            await broker._save_now(chain)
            return broker._started(chain, adopting)
        except StoreDown:
            return unreachable("the new chain", "it could not be stored on the cluster server")
        finally:
            try:
                await self.store.release(app, f"{kind}:{fp}", owner, False, False, NEW_USER)
            except StoreDown:
                pass

    async def _started_elsewhere(self, chain_id: str, form: dict[str, str], app: str, secret: str,
                                 upstream: Upstream, settings: TokenSettings) -> TokenAnswer:
        """Another node sent the same code or refresh token: answered from the chain it started."""
        try:
            got = await self.store.record(app, chain_id)
        except StoreDown:
            return unreachable("this token request")
        chain = self._add(got) if not got.missing else None
        if chain is None:
            return unreachable("this token request", "the chain another node started cannot be read")
        if chain.secret_fp and fingerprint(secret) != chain.secret_fp:
            from proxy.tokens.answers import no_client

            return no_client("client_secret does not match the one this chain was authorized with")
        if form.get("grant_type") == "refresh_token":
            known, _current = self.book.by_refresh(form.get("refresh_token", ""), self.now(),
                                                   settings.old_token_window)
            if known is None:
                return TokenAnswer(401, oauth_error("unauthorized_client", "this refresh token was rotated "
                                   "longer ago than tokens.old_token_window"), {}, "refused (an old refresh token)")
            answer = await self.broker.serve(known, upstream, settings)
        else:
            answer = TokenAnswer(200, ok_body(chain, self.now()), {}, f"answered from chain {chain.id}")
        answer.decision += " (started by another node for the same token)"
        return answer

    # -- the shared view -------------------------------------------------------------------------
    async def view(self) -> list[dict[str, Any]]:
        now, settings = self.now(), self.settings
        out = []
        for app, chain_id in await self.store.chain_ids():
            got = await self.store.record(app, chain_id)
            rec = got.rec
            if rec is None or got.moved:
                continue
            user = rec.get("user") or f"chain:{chain_id}"
            out.append({"chain": chain_id, "app": app, "user": rec.get("user"),
                        "version": got.ver, "access_expires_in_s": int(float(rec["access_expires_at"]) - now),
                        "refresh_expires_at": utc_text(float(rec["refresh_issued_at"]) + settings.refresh_token_lifetime),
                        "needs_reauth": bool(rec.get("needs_reauth")), "needs_reauth_why": rec.get("needs_reauth"),
                        "access_rejected": float(rec.get("rejected_at") or 0) >= float(rec["issued_at"]) > 0,
                        "token_calls_today": await self.store.calls_today(app, user)})
        return out


def unreachable(what: str, why: str = "") -> TokenAnswer:
    reason = why or "the cluster's shared state server is unreachable"
    return TokenAnswer(503, oauth_error("temporarily_unavailable", f"{what} cannot be had now: {reason}; "
                       f"nothing was sent to Exact. Retry after {RETRY_AFTER} s"),
                       {"Retry-After": str(RETRY_AFTER)}, f"refused ({reason})")


def daily(key: tuple[str, str], settings: TokenSettings, now: float) -> TokenAnswer:
    reset = (int(now // DAY) + 1) * DAY
    return TokenAnswer(429, oauth_error("temporarily_unavailable", f"the daily token-call budget "
                       f"({settings.daily_token_calls} of Exact's 200) for app {key[0]} is spent across the "
                       f"cluster; it resets at {utc_text(reset)}"), {"Retry-After": str(int(reset - now) + 1)},
                       "refused (daily token budget, cluster)")
