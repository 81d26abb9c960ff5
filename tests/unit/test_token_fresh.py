"""``token_fresh``: the token a call of a known chain carries is decided right before it leaves.

The real broker's chains (``tests.support.add_chain``); nothing here needs Exact's token endpoint.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import ClientSession, DummyCookieJar, web

from proxy.filters.token_broker import TokenBroker
from proxy.filters.token_fresh import TokenFresh
from proxy.tokens.sealing import fingerprint
from tests.support import Rig, Script, add_chain, local, upstream

NO_DELAY = "tokens: {loop_delay: 0}\n"


async def _call(rig: Rig, token: str):
    """An API call with ``token``, through the real classify and token_broker steps."""
    ctx = await rig.ctx(headers={"Authorization": f"Bearer {token}"})
    assert TokenBroker(rig.services).before(ctx) is None
    return ctx


def _message(reply) -> str:
    return json.loads(reply.body)["error"]["message"]["value"]


async def test_only_calls_of_a_known_chain_enter_it():
    rig = Rig()
    chain = add_chain(rig.services)
    f = TokenFresh(rig.services)
    assert f.wants(await _call(rig, chain.access_token))
    assert not f.wants(await _call(rig, "a-token-the-proxy-never-saw"))
    assert not f.wants(await rig.ctx())


async def test_a_valid_current_token_leaves_untouched():
    rig = Rig()
    chain = add_chain(rig.services, age=100)
    ctx, script = await _call(rig, chain.access_token), Script(upstream(200))
    assert (await TokenFresh(rig.services).handle(ctx, script)).status == 200
    assert script.seen[0].header_changes == {} and ctx.decisions == []


async def test_a_rotated_away_token_is_replaced_by_the_chains_current_one():
    rig = Rig()
    chain = add_chain(rig.services, access_token="acc-new", age=100)
    chain.old_access[fingerprint("acc-old")] = rig.clock.time() - 100
    rig.services.tokens.book.index(chain)
    ctx, script = await _call(rig, "acc-old"), Script(upstream(200))
    assert ctx.chain is chain
    await TokenFresh(rig.services).handle(ctx, script)
    assert script.seen[0].header_changes == {"Authorization": "Bearer acc-new"}
    assert ctx.decisions == [f"token substituted (chain {chain.id})"]

    off = Rig("tokens: {substitute_expired: false}\n")
    chain = add_chain(off.services, access_token="acc-new", age=100)
    chain.old_access[fingerprint("acc-old")] = off.clock.time() - 100
    off.services.tokens.book.index(chain)
    ctx, script = await _call(off, "acc-old"), Script(upstream(200))
    await TokenFresh(off.services).handle(ctx, script)
    assert script.seen[0].header_changes == {}  # switched off: the tool's own token goes


async def test_exacts_401_to_the_current_token_tells_the_broker_and_the_next_call_is_not_sent():
    rig = Rig(NO_DELAY)
    chain = add_chain(rig.services, age=100)
    f = TokenFresh(rig.services)
    ctx = await _call(rig, chain.access_token)
    assert (await f.handle(ctx, Script(upstream(401)))).status == 401
    assert ctx.decisions == [f"Exact refused the current token of chain {chain.id}"]
    assert chain.rejected_at == rig.clock.time()
    ctx, script = await _call(rig, chain.access_token), Script()
    reply = await f.handle(ctx, script)  # Exact allows a new token only 570 s after the last one
    assert script.calls == 0 and reply.status == 503 and reply.local and ctx.answered_by == "token_fresh"
    assert reply.headers["Retry-After"] == "471"
    assert "the call was not sent" in _message(reply)


async def test_a_chain_that_needs_a_person_gets_a_local_401_after_the_loop_delay():
    rig = Rig("tokens: {loop_delay: 0.2}\n")
    chain = add_chain(rig.services, needs_reauth="Exact refused its refresh token")
    ctx, script = await _call(rig, chain.access_token), Script()
    t0 = time.monotonic()
    reply = await TokenFresh(rig.services).handle(ctx, script)
    assert time.monotonic() - t0 >= 0.19
    assert reply.status == 401 and script.calls == 0
    assert "needs a new authorization by a person" in _message(reply)
    assert ctx.decisions == [f"refused (chain {chain.id} needs a new authorization)"]


async def test_an_expired_token_that_exact_will_not_replace_yet_gets_429_with_retry_after():
    rig = Rig(NO_DELAY)
    chain = add_chain(rig.services, age=700, expires_in=600)  # expired 100 s ago
    chain.paused_until = rig.clock.time() + 30  # Exact said TooEarlyToRefreshTokens
    ctx, script = await _call(rig, chain.access_token), Script()
    reply = await TokenFresh(rig.services).handle(ctx, script)
    assert reply.status == 429 and script.calls == 0 and reply.headers["Retry-After"] == "31"
    assert ctx.decisions == [f"refused (no valid token for chain {chain.id}: refused (too early to refresh))"]


async def test_a_test_call_with_a_refused_token_that_exact_takes_again_clears_the_refusal():
    rig = Rig(NO_DELAY)
    chain = add_chain(rig.services, age=100)
    f = TokenFresh(rig.services)
    await f.handle(await _call(rig, chain.access_token), Script(upstream(401)))
    await rig.clock.advance(5)  # the first test call is due 5 s after the 401
    ctx, script = await _call(rig, chain.access_token), Script(upstream(200))
    assert (await f.handle(ctx, script)).status == 200 and script.calls == 1
    assert ctx.decisions == [f"sent to test chain {chain.id}'s refused token"]
    assert chain.rejected_at == 0 and not chain.needs_reauth


async def test_a_local_answer_from_further_on_tells_the_broker_nothing():
    rig = Rig(NO_DELAY)
    chain = add_chain(rig.services, age=100)
    await TokenFresh(rig.services).handle(await _call(rig, chain.access_token), Script(local(401)))
    assert chain.rejected_at == 0


async def test_a_token_about_to_expire_is_refreshed_first_once_for_all_waiting_calls(aiohttp_server):
    forms: list[dict] = []

    async def token(request: web.Request) -> web.Response:
        forms.append(dict(await request.post()))
        await asyncio.sleep(0.05)  # long enough for the second call to arrive meanwhile
        return web.json_response(
            {
                "access_token": "acc-2",
                "token_type": "bearer",
                "expires_in": "600",
                "refresh_token": "Gcp7!IAAArefresh-2",
            }
        )

    app = web.Application()
    app.router.add_post("/api/oauth2/token", token)
    server = await aiohttp_server(app)
    rig = Rig(NO_DELAY, base_url=str(server.make_url("")).rstrip("/"))
    rig.services.http = ClientSession(auto_decompress=False, cookie_jar=DummyCookieJar())
    try:
        chain = add_chain(rig.services, age=599.5)  # half a second left: too little to send it with
        f = TokenFresh(rig.services)
        calls = [(await _call(rig, chain.access_token), Script(upstream(200))) for _ in range(2)]
        replies = await asyncio.gather(*(f.handle(ctx, script) for ctx, script in calls))
    finally:
        await rig.services.http.close()
    assert [r.status for r in replies] == [200, 200]
    assert len(forms) == 1 and forms[0]["refresh_token"] == "Gcp7!IAAArefresh-1"
    assert [s.seen[0].header_changes for _, s in calls] == [{"Authorization": "Bearer acc-2"}] * 2
    assert chain.access_token == "acc-2" and chain.refresh_token == "Gcp7!IAAArefresh-2"
