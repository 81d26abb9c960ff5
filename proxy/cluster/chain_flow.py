"""Cluster mode of the token broker: every node serves every chain, and the whole cluster calls Exact's
token endpoint at most once per chain and interval.

Contract: ``SharedChains(broker, node)`` is ``ChainBroker.shared`` in cluster mode (None on one node,
where nothing here runs). The shared records, index, lease and counters are ``proxy.cluster.chains``;
the refresh under the lease is ``proxy.cluster.chain_refresh``, the cluster-wide start of a chain
``proxy.cluster.chain_start``, their 503 and 429 answers ``proxy.cluster.chain_answers``.
- ``await start()``: chains of this node's own file that the server lacks are seeded (a newer shared
  version is never overwritten; a shared one is adopted), the ``token_chains`` view is registered, and
  after an outage the chains are seeded and pending writes retried again (annotations, and the commits
  ``chain_refresh`` kept).
- ``await before_deciding(chain) -> (chain, answer)``: before the broker answers from a chain or
  refreshes it, the shared record is read (one round trip) and adopted when newer (a chain another
  node replaced is followed). While the server is unreachable: ``answer`` is the last-read chain while
  its access token is valid, else 503 with ``Retry-After`` (nothing sent to Exact).
- ``await refresh(chain, upstream, settings)`` (inside the node's own single flight) and
  ``await start_chain(...)`` (a code exchange or an unknown refresh token) are ``chain_refresh.refresh``
  and ``chain_start.start_chain`` on this object.
- ``await find_refresh(token, app, settings)``: a refresh token this node does not know, looked up in
  the shared index. ``await find_access(token)``: the same for an API call's Bearer token (misses are
  remembered: a token is indexed before any tool has it).
- ``annotate_soon(chain)``: a pause, needs_reauth or a refused access token written to the shared
  record (no new version: a concurrent rotation wins); ``await flush(chain)`` writes it now.
- What the refresh and the start use: ``seen`` (chain id -> the ``(ver, rev)`` last read), ``sync``
  and ``adopt`` (a newer shared record onto the chain this node holds: the same object), ``_add`` (a
  shared record into this node's book), ``_index`` and ``_ttl`` (what a write stores), ``down`` (the
  answer while the server is unreachable), ``flush``, and ``_pending`` (commits to retry).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from proxy.cluster import chain_refresh, chain_start
from proxy.cluster.chain_answers import DAY, unreachable
from proxy.cluster.chains import ChainStore, Shared
from proxy.cluster.link import StoreDown
from proxy.ops.redact import remember_secret
from proxy.tokens.answers import TokenAnswer, ok_body
from proxy.tokens.chains import Chain, ChainBook, status_row
from proxy.tokens.sealing import fingerprint

if TYPE_CHECKING:
    from proxy.cluster.node import ClusterNode
    from proxy.policy.hosts import Upstream
    from proxy.tokens.broker import ChainBroker
    from proxy.tokens.settings import TokenSettings

log = logging.getLogger("exact_proxy.tokens")


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
                await chain_refresh.commit_pending(self, chain, owner, ver)
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

    # -- the refresh and the start of a chain (proxy.cluster.chain_refresh, chain_start) ----------
    async def refresh(self, chain: Chain, upstream: Upstream, settings: TokenSettings) -> TokenAnswer:
        return await chain_refresh.refresh(self, chain, upstream, settings)

    async def start_chain(self, upstream: Upstream, form: dict[str, str], app: str, secret: str,
                          settings: TokenSettings, rkey: tuple[str, str]) -> TokenAnswer:
        return await chain_start.start_chain(self, upstream, form, app, secret, settings, rkey)

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
            row = status_row(chain_id, app, rec.get("user"), issued_at=float(rec["issued_at"]),
                             access_expires_at=float(rec["access_expires_at"]),
                             refresh_issued_at=float(rec["refresh_issued_at"]),
                             paused_until=float(rec.get("paused_until") or 0),
                             needs_reauth=rec.get("needs_reauth"), rejected_at=float(rec.get("rejected_at") or 0),
                             calls_today=await self.store.calls_today(app, user), settings=settings, now=now)
            out.append({**row, "version": got.ver})
        return out
