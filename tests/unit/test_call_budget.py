"""``call_budget``: never more calls than Exact's minute and day windows allow; queue, refuse, replay.

The real ``limits.Book`` on a ``ManualClock`` (which starts on a whole minute).
"""

from __future__ import annotations

import asyncio
import json

from proxy.filters.call_budget import CallBudget
from tests.support import Rig, Script, failure, upstream

BEARER = {"Authorization": "Bearer some-token"}
TIGHT = "limits: {minutely: 2, max_wait: 0, pace: 0}\n"
EXACT_FIGURES = {
    "X-RateLimit-Minutely-Limit": "60",
    "X-RateLimit-Minutely-Remaining": "57",
    "X-RateLimit-Minutely-Reset": "0",
    "X-RateLimit-Limit": "5000",
    "X-RateLimit-Remaining": "4990",
}


def _row(f: CallBudget) -> dict:
    (row,) = f.snapshot()
    return row


async def _settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_calls_without_a_division_and_token_calls_pass_untouched():
    rig = Rig(TIGHT)
    f = CallBudget(rig.services)
    script = Script(upstream(200), repeat_last=True)
    for method, target in [("GET", "/api/v1/current/Me")] * 5 + [("POST", "/api/oauth2/token")]:
        await f.handle(await rig.ctx(method, target, headers=BEARER), script)
    assert script.calls == 6 and f.snapshot() == []


async def test_an_answered_call_is_counted_and_teaches_the_division_exacts_figures():
    rig = Rig()
    f = CallBudget(rig.services)
    reset = str(int((rig.clock.time() + 60) * 1000))
    ctx = await rig.ctx(headers=BEARER)
    reply = await f.handle(
        ctx, Script(upstream(200, b"{}", {**EXACT_FIGURES, "X-RateLimit-Minutely-Reset": reset}))
    )
    assert reply.status == 200
    assert ctx.decisions == ["exact remaining 57/4990"]
    row = _row(f)
    assert row["minute"] == "3/60" and row["exact_left"] == "57/4990"  # Exact's count is higher: adopted


async def test_no_room_within_max_wait_is_a_local_429_with_retry_after_and_rate_limit_headers():
    rig = Rig(TIGHT)
    f = CallBudget(rig.services)
    script = Script(upstream(200), repeat_last=True)
    for _ in range(2):
        await f.handle(await rig.ctx(headers=BEARER), script)
    await rig.clock.advance(15)
    ctx = await rig.ctx(headers=BEARER)
    reply = await f.handle(ctx, script)
    assert script.calls == 2 and reply.status == 429 and reply.local and ctx.answered_by == "call_budget"
    assert reply.headers["Retry-After"] == "45"
    assert reply.headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert reply.headers["X-RateLimit-Minutely-Reset"] == str(int((rig.clock.time() + 45) * 1000))
    assert "cannot be served within 0 s" in json.loads(reply.body)["error"]["message"]["value"]
    assert ctx.decisions == ["refused (max_wait 0 s) retry after 45 s"]


async def test_a_spent_daily_budget_is_refused_at_once():
    rig = Rig("limits: {daily: 2, pace: 0}\n")
    f = CallBudget(rig.services)
    script = Script(upstream(200), repeat_last=True)
    for _ in range(2):
        await f.handle(await rig.ctx(headers=BEARER), script)
    ctx = await rig.ctx(headers=BEARER)
    reply = await f.handle(ctx, script)
    assert reply.status == 429 and script.calls == 2 and reply.headers["X-RateLimit-Remaining"] == "0"
    assert ctx.decisions[0].startswith("refused (daily budget) reset 2026-11-26T00:00:00Z")


async def test_a_call_without_room_waits_in_the_queue_for_the_next_minute():
    rig = Rig("limits: {minutely: 1, pace: 0}\n")
    f = CallBudget(rig.services)
    await f.handle(await rig.ctx(headers=BEARER), Script(upstream(200)))
    ctx, script = await rig.ctx(headers=BEARER), Script(upstream(200))
    task = asyncio.ensure_future(f.handle(ctx, script))
    await _settle()
    assert script.calls == 0 and _row(f)["queue"] == 1
    await rig.clock.advance(60)
    await _settle()
    assert (await asyncio.wait_for(task, 1)).status == 200
    assert ctx.decisions == ["queued 60000 ms"] and ctx.queued_ms == 60000


async def test_a_tool_that_gives_up_while_queued_leaves_the_queue_and_consumes_nothing():
    rig = Rig("limits: {minutely: 1, pace: 0}\n")
    f = CallBudget(rig.services)
    await f.handle(await rig.ctx(headers=BEARER), Script(upstream(200)))
    script = Script(upstream(200))
    task = asyncio.ensure_future(f.handle(await rig.ctx(headers=BEARER), script))
    await _settle()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert _row(f)["queue"] == 0 and _row(f)["minute"] == "1/1"
    await rig.clock.advance(60)
    assert _row(f)["minute"] == "0/1" and script.calls == 0


async def test_an_upstream_429_pauses_the_division_and_replays_the_call():
    rig = Rig("limits: {pace: 0}\n")
    f = CallBudget(rig.services)
    ctx = await rig.ctx(headers=BEARER)
    script = Script(upstream(429, headers={"Retry-After": "5"}), upstream(200, b"{}"))
    task = asyncio.ensure_future(f.handle(ctx, script))
    await _settle()
    assert script.calls == 1 and script.released == 1 and _row(f)["paused_until"] is not None
    await rig.clock.advance(5)
    await _settle()
    assert (await asyncio.wait_for(task, 1)).status == 200 and script.calls == 2
    assert ctx.decisions[0] == "upstream 429: paused until 2026-11-25T10:00:05Z, replayed"


async def test_an_upstream_429_goes_to_the_tool_when_the_body_cannot_be_sent_again():
    rig = Rig("limits: {pace: 0}\nforwarding: {replay_buffer: 10}\n")
    f = CallBudget(rig.services)
    ctx = await rig.ctx("POST", "/api/v1/101/crm/Accounts", headers=BEARER, body=b"x" * 100)
    script = Script(upstream(429, headers={"Retry-After": "5"}))
    reply = await f.handle(ctx, script)
    assert reply.status == 429 and not reply.local and script.calls == 1
    assert ctx.decisions == [
        "upstream 429: paused until 2026-11-25T10:00:05Z; not replayed (body already streamed)"
    ]


async def test_a_call_that_never_reached_exact_is_given_back():
    rig = Rig(TIGHT)
    f = CallBudget(rig.services)
    await f.handle(await rig.ctx(headers=BEARER), Script(failure("connect")))
    assert _row(f)["minute"] == "0/2"
    await f.handle(await rig.ctx(headers=BEARER), Script(failure("timeout")))  # it may have reached Exact
    assert _row(f)["minute"] == "1/2"
