"""``error_budget`` and ``error_headroom``: a tool's bad requests never get the app blocked.

Both filters share the real ``ErrorBook`` of the real ``Services``; time is a ``ManualClock``.
"""

from __future__ import annotations

import asyncio
import json

from proxy.filters.error_budget import NO_TOKEN, ErrorBudget, ErrorHeadroom
from tests.support import Rig, Script, failure, gate, local, upstream

BEARER = {"Authorization": "Bearer some-token", "Accept": "application/json"}
ACCOUNTS = "/api/v1/101/crm/Accounts?$select=ID"
KEY = ("unknown", 101, "crm/accounts")
NOT_FOUND = b'{"error": {"message": {"value": "Not found"}}}'


def _message(reply) -> str:
    return json.loads(reply.body)["error"]["message"]["value"]


async def _spend(rig: Rig, n: int, key=KEY) -> None:
    for _ in range(n):
        rig.services.error_book.add(key, rig.clock.time())


# -- error_budget ------------------------------------------------------------------------------------
async def test_every_answer_carries_the_error_limit_headers():
    rig = Rig()
    f = ErrorBudget(rig.services)
    reply = await f.handle(await rig.ctx(headers=BEARER), Script(upstream(200)))
    now = rig.clock.time()
    assert reply.headers["X-ErrorLimit-Limit"] == "8" and reply.headers["X-ErrorLimit-Remaining"] == "8"
    assert reply.headers["X-ErrorLimit-Reset"] == str(
        int((now + 3600) * 1000)
    )  # none counted: a window ahead
    await _spend(rig, 3)
    await rig.clock.advance(600)
    reply = await f.handle(await rig.ctx(headers=BEARER), Script(upstream(200)))
    assert reply.headers["X-ErrorLimit-Remaining"] == "5"
    assert reply.headers["X-ErrorLimit-Reset"] == str(
        int((now + 3600) * 1000)
    )  # the oldest error leaves then


async def test_a_spent_budget_is_answered_locally_with_429_and_retry_after_and_other_endpoints_flow_on():
    rig = Rig()
    f = ErrorBudget(rig.services)
    await _spend(rig, 8)
    await rig.clock.advance(600)
    ctx, script = await rig.ctx(headers=BEARER), Script()
    reply = await f.handle(ctx, script)
    assert reply.status == 429 and reply.local and script.calls == 0
    assert reply.headers["Retry-After"] == "3000" and reply.headers["X-ErrorLimit-Remaining"] == "0"
    assert "error budget spent" in _message(reply) and ctx.answered_by == "error_budget"
    assert ctx.decisions == ["refused (error budget 8/8, retry in 3000 s)"]
    other = Script(upstream(200), repeat_last=True)
    assert (
        await f.handle(await rig.ctx(headers=BEARER, target="/api/v1/102/crm/Accounts"), other)
    ).status == 200
    assert (
        await f.handle(await rig.ctx(headers=BEARER, target="/api/v1/101/crm/Contacts"), other)
    ).status == 200


async def test_while_exacts_block_lasts_the_key_is_answered_locally():
    rig = Rig()
    f = ErrorBudget(rig.services)
    rig.services.error_book.block(KEY, rig.clock.time() + 100)
    ctx, script = await rig.ctx(headers=BEARER), Script()
    reply = await f.handle(ctx, script)
    assert reply.status == 429 and script.calls == 0 and reply.headers["Retry-After"] == "100"
    assert _message(reply).startswith("exact-proxy: Exact blocked crm/accounts in division 101")
    await rig.clock.advance(101)
    assert (await f.handle(await rig.ctx(headers=BEARER), Script(upstream(200)))).status == 200


async def test_an_identical_get_after_a_404_is_answered_from_the_negative_cache_until_its_ttl():
    rig = Rig("error_budget: {negative_cache: {ttl: 60}}\n")
    f = ErrorBudget(rig.services)
    target = "/api/v1/101/crm/Accounts(guid'00000000-0000-0000-0000-000000000009')"
    script = Script(upstream(404, NOT_FOUND, {"Content-Type": "application/json"}), repeat_last=True)
    first = await f.handle(await rig.ctx(target=target, headers=BEARER), script)
    assert first.status == 404 and script.calls == 1
    ctx = await rig.ctx(target=target, headers=BEARER)
    again = await f.handle(ctx, script)
    assert script.calls == 1 and again.local and again.status == 404 and again.body == NOT_FOUND
    assert again.headers["Content-Type"] == "application/json"
    assert again.headers["X-Exact-Proxy"] == "negative-cache" and ctx.answered_by == "error_budget"
    assert ctx.decisions == ["answered from negative cache (404, 0 s old)"]
    await rig.clock.advance(61)
    await f.handle(await rig.ctx(target=target, headers=BEARER), script)
    assert script.calls == 2


async def test_writes_are_never_cached_and_a_successful_write_forgets_the_endpoints_refusals():
    rig = Rig()
    f = ErrorBudget(rig.services)
    script = Script(
        upstream(404, NOT_FOUND),
        upstream(404, NOT_FOUND),
        upstream(404, NOT_FOUND),
        upstream(201, b"{}"),
        upstream(200, b"{}"),
    )
    await f.handle(await rig.ctx("GET", ACCOUNTS, headers=BEARER), script)
    for _ in range(2):
        await f.handle(await rig.ctx("POST", "/api/v1/101/crm/Accounts", headers=BEARER, body=b"{}"), script)
    assert script.calls == 3  # the writes both went to Exact
    await f.handle(await rig.ctx("GET", ACCOUNTS, headers=BEARER), script)
    assert script.calls == 3  # the GET is still answered from the cache
    await f.handle(await rig.ctx("POST", "/api/v1/101/crm/Accounts", headers=BEARER, body=b"{}"), script)
    reply = await f.handle(await rig.ctx("GET", ACCOUNTS, headers=BEARER), script)
    assert script.calls == 5 and reply.status == 200  # the record may exist now: asked again


async def test_calls_without_credentials_never_spend_an_apps_budget():
    rig = Rig()
    f = ErrorBudget(rig.services)
    await _spend(rig, 8)  # the app "unknown" is spent
    tokenless = await rig.ctx()  # no Authorization at all
    assert tokenless.tokenless
    script = Script(upstream(401))
    reply = await f.handle(tokenless, script)
    assert script.calls == 1 and reply.headers["X-ErrorLimit-Remaining"] == "8"
    assert rig.services.error_book.clean((NO_TOKEN, 101, "crm/accounts"))


async def test_a_large_chunked_refusal_reaches_the_tool_whole():
    rig = Rig()
    chunks = [b"x" * 600_000] * 4
    ctx = await rig.ctx(target="/api/v1/101/crm/Accounts?$filter=ID%20eq%201", headers=BEARER)
    reply = await ErrorBudget(rig.services).handle(ctx, Script(upstream(404, None, stream=chunks)))
    body = reply.body if reply.stream is None else b"".join([c async for c in reply.stream])
    assert len(body) == 2_400_000


# -- error_headroom ----------------------------------------------------------------------------------
async def test_upstream_errors_are_counted_per_key():
    rig = Rig()
    f = ErrorHeadroom(rig.services)
    for status in (404, 401, 200, 500):
        await f.handle(await rig.ctx(headers=BEARER), Script(upstream(status)))
    ctx = await rig.ctx(headers=BEARER)
    await f.handle(ctx, Script(upstream(400)))
    assert ctx.decisions == ["counted error 3/8 crm/accounts"]
    assert rig.services.error_book.count(KEY, rig.clock.time()) == 3
    assert rig.services.error_book.inflight(KEY) == 0  # every place given back


async def test_local_answers_and_upstream_failures_are_not_counted():
    rig = Rig()
    f = ErrorHeadroom(rig.services)
    await f.handle(await rig.ctx(headers=BEARER), Script(local(404)))
    await f.handle(await rig.ctx(headers=BEARER), Script(failure("reset")))
    assert rig.services.error_book.clean(KEY)


async def test_a_429_without_rate_limit_headers_after_errors_is_exacts_block():
    rig = Rig("error_budget: {block_pause: 900}\n")
    f = ErrorHeadroom(rig.services)
    await f.handle(await rig.ctx(headers=BEARER), Script(upstream(429)))  # no error counted: not a block
    await f.handle(
        await rig.ctx(headers=BEARER), Script(upstream(429, headers={"X-RateLimit-Remaining": "0"}))
    )
    assert rig.services.error_book.blocked_until(KEY, rig.clock.time()) is None
    await _spend(rig, 1)
    ctx, script = await rig.ctx(headers=BEARER), Script(upstream(429))
    reply = await f.handle(ctx, script)
    assert rig.services.error_book.blocked_until(KEY, rig.clock.time()) == rig.clock.time() + 900
    assert reply.local and reply.status == 429 and script.released == 1
    assert ctx.answered_by == "error_budget" and ctx.decisions[-1].startswith(
        "refused (Exact blocked crm/accounts"
    )


async def test_a_spent_budget_sends_nothing():
    rig = Rig()
    await _spend(rig, 8)
    ctx, script = await rig.ctx(headers=BEARER), Script()
    reply = await ErrorHeadroom(rig.services).handle(ctx, script)
    assert reply.status == 429 and script.calls == 0 and ctx.answered_by == "error_budget"


async def test_calls_in_flight_hold_the_last_places_so_concurrent_errors_cannot_pass_the_budget():
    rig = Rig("error_budget: {budget: 2}\n")
    f = ErrorHeadroom(rig.services)
    await _spend(rig, 1)  # one place left
    release = asyncio.Event()
    first_script = Script(gate(release, upstream(404)))
    first = asyncio.ensure_future(f.handle(await rig.ctx(headers=BEARER), first_script))
    await asyncio.sleep(0)
    assert first_script.waiting == 1
    second_ctx, second_script = await rig.ctx(headers=BEARER), Script(upstream(200))
    second = asyncio.ensure_future(f.handle(second_ctx, second_script))
    for _ in range(3):
        await asyncio.sleep(0)
    assert second_script.calls == 0  # waits for the call in flight
    release.set()
    assert (await first).status == 404
    reply = await second
    assert reply.status == 429 and second_script.calls == 0  # that error spent the budget


async def test_a_waiting_call_goes_once_the_call_in_flight_succeeded():
    rig = Rig("error_budget: {budget: 2}\n")
    f = ErrorHeadroom(rig.services)
    await _spend(rig, 1)
    release = asyncio.Event()
    first = asyncio.ensure_future(
        f.handle(await rig.ctx(headers=BEARER), Script(gate(release, upstream(200))))
    )
    await asyncio.sleep(0)
    ctx, script = await rig.ctx(headers=BEARER), Script(upstream(200))
    second = asyncio.ensure_future(f.handle(ctx, script))
    await asyncio.sleep(0)
    release.set()
    await first
    assert (await second).status == 200 and script.calls == 1
    assert ctx.decisions[0].startswith("waited for error headroom")
