"""``retry``: transient faults retried with backoff and jitter on the proxy's clock; never a write."""

from __future__ import annotations

import asyncio
import re

import pytest

from proxy.filters.retry import Retry
from tests.support import Rig, Script, failure, local, upstream

NO_WAIT = "retry: {base: 0}\n"


async def test_a_get_after_a_503_is_retried_and_the_dropped_answer_released():
    rig = Rig(NO_WAIT)
    ctx = await rig.ctx()
    script = Script(upstream(503), upstream(200, b"{}"))
    reply = await Retry(rig.services).handle(ctx, script)
    assert reply.status == 200 and script.calls == 2 and script.released == 1
    assert ctx.decisions == ["retry 1/3 after 503 in 0.0 s"]


@pytest.mark.parametrize("step", [upstream(408), upstream(599), failure("reset"), upstream(200, b"")])
async def test_transient_answers_to_a_get_are_retried(step):
    rig = Rig(NO_WAIT)
    ctx = await rig.ctx()
    script = Script(step, upstream(200, b"{}"))
    reply = await Retry(rig.services).handle(ctx, script)
    assert reply.status == 200 and script.calls == 2
    assert ctx.upstream_failure is None and ctx.answered_by is None  # the failed attempt's answer is gone


@pytest.mark.parametrize("step", [upstream(503), failure("reset"), failure("timeout")])
async def test_a_write_that_may_have_reached_exact_is_never_sent_again(step):
    rig = Rig(NO_WAIT)
    ctx = await rig.ctx("POST", "/api/v1/101/crm/Accounts", body=b"{}")
    script = Script(step)
    await Retry(rig.services).handle(ctx, script)
    assert script.calls == 1 and not [d for d in ctx.decisions if d.startswith("retry")]


async def test_any_method_is_retried_when_the_connection_failed_before_anything_was_sent():
    rig = Rig(NO_WAIT)
    ctx = await rig.ctx("POST", "/api/v1/101/crm/Accounts", body=b"{}")
    script = Script(failure("connect"), upstream(201, b"{}"))
    reply = await Retry(rig.services).handle(ctx, script)
    assert reply.status == 201 and script.calls == 2
    assert "retry 1/3 after connection failure in 0.0 s" in ctx.decisions


async def test_a_streamed_body_is_not_sent_again():
    rig = Rig(NO_WAIT + "forwarding: {replay_buffer: 10}\n")
    ctx = await rig.ctx(
        "PUT", "/api/v1/101/crm/Accounts(guid'00000000-0000-0000-0000-000000000001')", body=b"x" * 100
    )
    script = Script(failure("connect"))
    reply = await Retry(rig.services).handle(ctx, script)
    assert reply.status == 502 and script.calls == 1
    assert ctx.decisions[-1] == (
        "not retried (connection failure): the body was streamed and cannot be sent again"
    )


async def test_it_gives_up_after_the_configured_retries_and_leaves_local_answers_alone():
    rig = Rig("retry: {attempts: 2, base: 0}\n")
    ctx = await rig.ctx()
    script = Script(upstream(503), repeat_last=True)
    reply = await Retry(rig.services).handle(ctx, script)
    assert reply.status == 503 and script.calls == 3
    assert ctx.decisions[-1] == "gave up after 2 retries (503)"
    script = Script(local(503))  # an inner filter's own answer is not a fault of Exact's
    await Retry(rig.services).handle(await rig.ctx(), script)
    assert script.calls == 1


async def test_backoff_doubles_with_jitter_up_to_the_cap_on_the_proxys_clock():
    rig = Rig("retry: {attempts: 3, base: 1, cap: 3}\n")
    ctx = await rig.ctx()
    script = Script(upstream(503), upstream(503), upstream(503), upstream(200, b"{}"))
    task = asyncio.ensure_future(Retry(rig.services).handle(ctx, script))
    await asyncio.sleep(0)
    while not task.done():
        assert rig.clock.sleepers == 1  # waiting on the clock, not in real time
        await rig.clock.advance(0.25)
    assert (await task).status == 200
    delays = [float(re.search(r"in ([0-9.]+) s", d).group(1)) for d in ctx.decisions]
    assert len(delays) == 3
    for delay, (low, high) in zip(delays, [(0.5, 1.0), (1.0, 2.0), (1.5, 3.0)], strict=True):
        assert low - 0.05 <= delay <= high + 0.05
