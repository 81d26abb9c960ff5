"""The start of a token chain in cluster mode: a code exchange, or a refresh token no node knows, is sent
to Exact once for the whole cluster.

Contract: ``await start_chain(shared, upstream, form, app, secret, settings, rkey)`` takes this node's
``SharedChains`` (``proxy.cluster.chain_flow``, whose ``start_chain`` calls it); ``rkey`` is the
token's fingerprint and the credentials' fingerprint.
- A lease keyed by the token's fingerprint (and a reserved token call) is the single flight for the
  cluster; the others poll (``POLL``, up to ``token_lease``) until the index names the new chain (they
  answer from it: a refresh token is served from the chain it belongs to, a client_secret other than
  the chain's is refused) or Exact's refusal is shared (they answer it; a final refusal is remembered
  ``refusals.ttl``, one that retrying may change ``SHARED_FAILURE`` real seconds, for the nodes
  waiting now).
- The holder stores the new chain with its index (the user's earlier chain marked ``moved``) and
  drops the lease in every case. While the server is unreachable: 503 (``unreachable``), nothing sent;
  the day's budget spent is 429.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from proxy.cluster.chain_answers import daily, unreachable
from proxy.cluster.chain_refresh import POLL
from proxy.cluster.chains import NEW_USER
from proxy.cluster.link import StoreDown
from proxy.tokens.answers import TokenAnswer, oauth_error, ok_body
from proxy.tokens.flight import Refused, remembered
from proxy.tokens.sealing import fingerprint

if TYPE_CHECKING:
    from proxy.cluster.chain_flow import SharedChains
    from proxy.policy.hosts import Upstream
    from proxy.tokens.settings import TokenSettings

SHARED_FAILURE = 3.0  # real seconds a failure that retrying may change is shared with the waiting nodes


async def start_chain(shared: SharedChains, upstream: Upstream, form: dict[str, str], app: str, secret: str,
                      settings: TokenSettings, rkey: tuple[str, str]) -> TokenAnswer:
    broker, owner = shared.broker, shared.owner()
    adopting = form.get("grant_type") == "refresh_token"
    kind, (fp, cred) = ("r" if adopting else "c"), rkey
    deadline = asyncio.get_running_loop().time() + shared.lease_s
    while True:
        try:
            state, detail = await shared.store.claim(app, kind, fp, cred, owner, int(shared.lease_s * 1000),
                                                     settings.daily_token_calls)
        except StoreDown:
            return unreachable("this token request")
        if state == "done":
            return await _started_elsewhere(shared, detail, form, app, secret, upstream, settings)
        if state == "refused":
            hit = json.loads(detail)
            if hit.get("final"):
                broker.refusals.put(rkey, Refused(int(hit["status"]), hit["body"], hit["headers"], shared.now()))
            return TokenAnswer(int(hit["status"]), hit["body"], hit["headers"], "answered as another node's "
                               "call with the same token was (Exact refused it)")
        if state == "spent":
            return daily((app, NEW_USER), settings, shared.now())
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
            await shared.store.refuse(app, kind, fp, cred, owner, refusal if sent else None,
                                      broker.refusals.ttl if final else SHARED_FAILURE, not sent)
            return failed
        chain = await broker._new_chain(upstream, app, secret, call.body, settings)
        existing = broker.book.for_user(app, chain.user)
        if existing is None and chain.user is not None:
            found = await shared.store.find(app, "u", chain.user)
            existing = shared._add(found) if found is not None else None
        broker._place(chain, form, existing)
        presented = settings.old_token_window if adopting else 600.0
        await shared.store.create(app, chain.id, chain.user, owner, kind, fp, shared.book.record(chain),
                                  shared._index(chain), shared._ttl(), presented)
        shared.seen[chain.id] = (1, 0)
        await broker._save_now(chain)
        return broker._started(chain, adopting)
    except StoreDown:
        return unreachable("the new chain", "it could not be stored on the cluster server")
    finally:
        try:
            await shared.store.release(app, f"{kind}:{fp}", owner, False, False, NEW_USER)
        except StoreDown:
            pass


async def _started_elsewhere(shared: SharedChains, chain_id: str, form: dict[str, str], app: str, secret: str,
                             upstream: Upstream, settings: TokenSettings) -> TokenAnswer:
    """Another node sent the same code or refresh token: answered from the chain it started."""
    try:
        got = await shared.store.record(app, chain_id)
    except StoreDown:
        return unreachable("this token request")
    chain = shared._add(got) if not got.missing else None
    if chain is None:
        return unreachable("this token request", "the chain another node started cannot be read")
    if chain.secret_fp and fingerprint(secret) != chain.secret_fp:
        from proxy.tokens.answers import no_client

        return no_client("client_secret does not match the one this chain was authorized with")
    if form.get("grant_type") == "refresh_token":
        known, _current = shared.book.by_refresh(form.get("refresh_token", ""), shared.now(),
                                                 settings.old_token_window)
        if known is None:
            return TokenAnswer(401, oauth_error("unauthorized_client", "this refresh token was rotated "
                               "longer ago than tokens.old_token_window"), {}, "refused (an old refresh token)")
        answer = await shared.broker.serve(known, upstream, settings)
    else:
        answer = TokenAnswer(200, ok_body(chain, shared.now()), {}, f"answered from chain {chain.id}")
    answer.decision += " (started by another node for the same token)"
    return answer
