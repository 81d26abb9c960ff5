"""The retry filter (proxy/filters/retry.py): which faults are retried, for which methods, how often and
how long apart; and end to end through the emulator, every retry counted in the call budget."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import aiohttp
import pytest
from multidict import CIMultiDict

from proxy.clock import ManualClock
from proxy.context import Reply
from proxy.filters.retry import Retry
from proxy.limits.settings import RetrySettings
from tests.test_call_budget import START, URL, fire, setup


class Ctx(SimpleNamespace):
    def decide(self, text: str) -> None:
        self.decisions.append(text)


def ctx_for(method: str, replayable: bool = True, **retry) -> Ctx:
    body = SimpleNamespace(replayable=replayable)
    return Ctx(method=method, raw_path="/api/v1/1/crm/Accounts", upstream_failure=None, decisions=[],
               body=body, policy=SimpleNamespace(retry=RetrySettings(**retry)))


def answer(status: int, body: bytes = b"{}") -> Reply:
    return Reply(status=status, headers=CIMultiDict(), body=body, length=len(body))


def failure(kind: str) -> Reply:
    reply = Reply.make_local(502, b"{}")
    reply.failure = kind
    return reply


class Upstream:
    """``call_next`` answering from a script; a failure entry sets ``ctx.upstream_failure`` like forward."""

    def __init__(self, *script) -> None:
        self.script, self.calls = list(script), 0

    async def __call__(self, ctx):
        self.calls += 1
        item = self.script.pop(0) if self.script else answer(200)
        ctx.upstream_failure = item.failure
        return item


def retry_filter(clock: ManualClock) -> Retry:
    f = Retry(SimpleNamespace(clock=clock))
    f.random.seed(1)
    return f


async def run(f: Retry, ctx, up: Upstream, clock: ManualClock):
    task = asyncio.ensure_future(f.handle(ctx, up))
    slept = []
    while not task.done():
        await asyncio.sleep(0)
        nxt = clock.next_deadline()
        if nxt is not None:
            slept.append(nxt - clock.monotonic())
            await clock.set_monotonic(nxt)
    return task.result(), slept


@pytest.mark.parametrize("fault", [answer(408), answer(503), answer(599, b""), answer(200, b""), failure("reset"),
                                   failure("connect")])
async def test_get_is_retried_after_a_transient_fault(fault):
    clock = ManualClock(start=START)
    up = Upstream(fault)
    ctx = ctx_for("GET")
    reply, slept = await run(retry_filter(clock), ctx, up, clock)
    assert reply.status == 200 and up.calls == 2 and len(slept) == 1
    assert ctx.decisions[0].startswith("retry 1/3 after ")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("fault", [answer(503), answer(408), failure("reset"), failure("timeout")])
async def test_a_write_that_may_have_reached_exact_is_never_replayed(method, fault):
    clock = ManualClock(start=START)
    up = Upstream(fault)
    reply, _ = await run(retry_filter(clock), ctx_for(method), up, clock)
    assert up.calls == 1 and reply is fault


async def test_a_write_whose_connection_failed_before_sending_is_retried():
    clock = ManualClock(start=START)
    up = Upstream(failure("connect"))
    reply, _ = await run(retry_filter(clock), ctx_for("POST"), up, clock)
    assert up.calls == 2 and reply.status == 200


async def test_a_timeout_is_not_retried_even_for_get():
    clock = ManualClock(start=START)
    up = Upstream(failure("timeout"))
    await run(retry_filter(clock), ctx_for("GET"), up, clock)
    assert up.calls == 1


async def test_attempts_are_capped_and_backoff_grows_with_jitter_up_to_the_cap():
    clock = ManualClock(start=START)
    up = Upstream(*[answer(503) for _ in range(10)])
    ctx = ctx_for("HEAD", attempts=5, base=1.0, cap=4.0)
    reply, slept = await run(retry_filter(clock), ctx, up, clock)
    assert reply.status == 503 and up.calls == 6
    for n, s in enumerate(slept):
        full = min(4.0, 2.0 ** n)
        assert full * 0.5 <= s <= full
    assert ctx.decisions[-1] == "gave up after 5 retries (503)"


async def test_a_streamed_body_is_not_sent_again():
    clock = ManualClock(start=START)
    up = Upstream(failure("connect"))
    ctx = ctx_for("POST", replayable=False)
    await run(retry_filter(clock), ctx, up, clock)
    assert up.calls == 1 and "cannot be sent again" in ctx.decisions[0]


async def test_retries_through_the_emulator_count_against_the_budget(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy, "retry: {base: 0.01, attempts: 4}\n")
    emu.state.set_faults([{"path": "/api/v1/1101/*", "kind": "599", "every": 2},
                          {"path": "/api/v1/1101/*", "kind": "empty", "every": 3}])
    async with aiohttp.ClientSession() as s:
        res = await driver.run(fire(s, driver, proxy.url() + URL.format(div=1101), h, 10, 1))
    assert [r[0] for r in res] == [200] * 10
    book = next(f for f in proxy.services.filters if f.name == "call_budget").book
    d = next(d for (app, div), d in book.divisions.items() if div == 1101)  # app: the broker's name or default
    faults = emu.state.count(outcome="fault_599") + emu.state.count(outcome="fault_empty")
    assert faults >= 3 and d.day_used == 10 + faults  # every retry went through the budget


async def test_a_get_answered_by_exact_on_its_retry_counts_as_an_upstream_answer(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy, "retry: {base: 0.01, attempts: 4}\n")
    emu.state.set_faults([{"path": "/api/v1/1102/*", "kind": "reset", "every": 2}])
    async with aiohttp.ClientSession() as s:
        res = await driver.run(fire(s, driver, proxy.url() + URL.format(div=1102), h, 4, 1))
    assert [r[0] for r in res] == [200] * 4 and emu.state.count(outcome="fault_reset") >= 2
    metrics = proxy.services.metrics
    assert metrics.requests[("upstream", "2xx")] == 4 and "forward" not in metrics.local_counts()
