"""The refresh of a token chain in cluster mode: under the cluster's lease one node at a time presents
a chain's refresh token to Exact, and its rotation is stored by the version CAS.

Contract: the functions take this node's ``SharedChains`` (``proxy.cluster.chain_flow``); its
``refresh`` calls ``refresh``, its return after an outage ``commit_pending``.
- ``await refresh(shared, chain, upstream, settings)`` (inside the node's own single flight): the lease
  (``acquire``: lease, fence, the day's token call reserved and the intent written in one script) decides
  who may call Exact; a node that does not get it never presents the token: it polls (``POLL``, 0.2 s
  real time, up to ``token_lease``) until the version moves or the lease is free, and answers from the
  new version. Exact's 200 is committed by the version CAS as the first await after its answer; a lost
  CAS (another node rotated first) adopts the other rotation. A refused refresh token re-reads the
  version before the chain is declared dead, and names the node whose refresh intent was left (it died
  after Exact rotated). Unless the commit dropped it, the lease is released at the end: the intent is
  kept after a 5xx (Exact may have rotated), the reserved call given back when nothing was sent. While
  the server is unreachable the answer is ``SharedChains.down``; the day's budget spent is 429.
- A commit the server could not take is kept (``shared._pending``, the chain saved on this node) and
  ``await commit_pending(shared, chain, owner, ver_read)`` stores it when the server is back (a
  rotation another node stored meanwhile wins, and is adopted).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.clock import utc_text
from proxy.cluster.chain_answers import daily, unreachable
from proxy.cluster.link import StoreDown
from proxy.tokens.answers import TokenAnswer
from proxy.tokens.flight import remembered

if TYPE_CHECKING:
    from proxy.cluster.chain_flow import SharedChains
    from proxy.policy.hosts import Upstream
    from proxy.tokens.chains import Chain
    from proxy.tokens.settings import TokenSettings

log = logging.getLogger("exact_proxy.tokens")

POLL = 0.2          # real seconds between looks at a chain another node is refreshing


async def refresh(shared: SharedChains, chain: Chain, upstream: Upstream, settings: TokenSettings) -> TokenAnswer:
    broker, owner = shared.broker, shared.owner()
    deadline = asyncio.get_running_loop().time() + shared.lease_s
    user, unreadable = chain.user or f"chain:{chain.id}", 0
    start = shared.seen.get(chain.id, (0, 0))
    while True:
        if shared.seen.get(chain.id, (0, 0)) != start:  # a newer version came (here or by another request)
            cached = broker._cached(chain, settings, 1.0)
            if cached is not None:
                cached.decision += " (refreshed by another node)"
                return cached
            start = shared.seen.get(chain.id, (0, 0))
        now = shared.now()
        rejected = broker.is_rejected(chain)
        early = broker._early(chain, settings, now, rejected)
        if early is not None:
            return early
        ver, rev = shared.seen.get(chain.id, (0, 0))
        try:
            got = await shared.store.acquire(chain.client_id, chain.id, owner, ver, rev, int(shared.lease_s * 1000),
                                             settings.daily_token_calls, user)
        except StoreDown:
            return shared.down(chain)
        if got.state == "moved":
            if got.shared.rec is None:  # the server lost the chain: this node's copy seeds it
                await shared.sync(chain)
                continue
            shared.adopt(chain, got.shared)
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
    return await _refresh_held(shared, chain, upstream, settings, owner, ver, rev, rejected, got.prior)


async def _refresh_held(shared: SharedChains, chain: Chain, upstream: Upstream, settings: TokenSettings, owner: str,
                        ver: int, rev: int, rejected: bool, prior: dict[str, str]) -> TokenAnswer:
    broker, user = shared.broker, chain.user or f"chain:{chain.id}"
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
                await _commit(shared, c, owner, ver)
            return await broker._after_refresh(chain, call, settings, rejected, commit)
        keep = call.status >= 500  # Exact may have rotated: the intent stays for the next node
        if remembered(call.status, call.body):
            try:
                moved = await shared.store.read(chain.client_id, chain.id, ver, rev)
            except StoreDown:
                moved = None
            if moved is not None and moved.rec is not None:
                shared.adopt(chain, moved)
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
        return await broker._after_refresh(chain, call, settings, rejected, _no_commit)
    finally:
        await shared.flush(chain)
        try:
            if not committed:
                await shared.store.release(chain.client_id, chain.id, owner, keep, give_back, user)
        except StoreDown:
            pass  # the lease runs out by itself


async def _no_commit(chain: Chain) -> None:  # pragma: no cover - only a 200 rotates
    raise AssertionError("no rotation without Exact's 200")


async def _commit(shared: SharedChains, chain: Chain, owner: str, ver_read: int) -> None:
    try:
        ok, record = await shared.store.commit(chain.client_id, chain.id, owner, ver_read, shared.book.record(chain),
                                               shared._index(chain), shared._ttl())
    except StoreDown:
        shared._pending[chain.id] = (owner, ver_read)
        log.error("token chain %s rotated, but the cluster server is unreachable: kept on this node and "
                  "written to the server when it answers", chain.id)
        shared.book.index(chain)
        await shared.broker.vault.save_now(chain)
        return
    if ok:
        shared.book.index(chain)
        shared.seen[chain.id] = (record.ver, record.rev)
        await shared.broker.vault.save_now(chain)
    else:
        log.error("token chain %s: Exact rotated it for node %s, but another node stored a rotation first; "
                  "the cluster's version is kept", chain.id, shared.node.name)
        shared.adopt(chain, record)


async def commit_pending(shared: SharedChains, chain: Chain, owner: str, ver_read: int) -> None:
    ok, record = await shared.store.commit(chain.client_id, chain.id, owner, ver_read, shared.book.record(chain),
                                           shared._index(chain), shared._ttl())
    shared._pending.pop(chain.id, None)
    if ok:
        shared.seen[chain.id] = (record.ver, record.rev)
        log.info("token chain %s: the rotation kept during the outage is on the cluster server", chain.id)
    else:
        log.error("token chain %s: the rotation kept during the outage lost to another node's", chain.id)
        shared.adopt(chain, record)
