"""One division's windows and queue (proxy/limits/division.py) on a ManualClock, without HTTP."""

from __future__ import annotations

import asyncio

import pytest

from proxy.clock import ManualClock
from proxy.limits.division import Division, Refusal, retry_after_seconds
from proxy.limits.settings import LimitSettings

MINUTE = 1_790_000_040.0  # a clock-minute boundary (epoch seconds): 29,833,334 minutes


def make(settings: LimitSettings | None = None, start: float = MINUTE + 10) -> tuple[ManualClock, Division]:
    clock = ManualClock(start=start)
    return clock, Division("app", 7, settings or LimitSettings(pace=0, probe=False), clock)


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_reserve_before_forward_never_admits_more_than_the_window():
    clock, d = make()
    tasks = [asyncio.ensure_future(d.acquire(0, clock.time() + 300)) for _ in range(150)]
    await settle()
    assert sum(t.done() for t in tasks) == 60 and d.minute_used == 60
    await clock.set_time(MINUTE + 60)
    await settle()
    assert sum(t.done() for t in tasks) == 120 and d.minute_used == 60
    await clock.set_time(MINUTE + 120)
    await settle()
    assert all(t.done() for t in tasks) and d.minute_used == 30 and d.day_used == 150
    assert all(not isinstance(t.result(), Refusal) for t in tasks)


async def test_a_waiter_cancelled_while_queued_consumes_nothing():
    clock, d = make()
    for _ in range(60):
        await d.acquire(0, clock.time() + 300)
    gone = asyncio.ensure_future(d.acquire(0, clock.time() + 300))
    stays = asyncio.ensure_future(d.acquire(0, clock.time() + 300))
    await settle()
    assert len(d.waiters) == 2
    gone.cancel()
    await settle()
    assert len(d.waiters) == 1
    await clock.set_time(MINUTE + 60)
    await settle()
    assert stays.done() and d.minute_used == 1 and d.day_used == 61


async def test_priority_goes_ahead_of_earlier_waiters_fifo_otherwise():
    clock, d = make()
    for _ in range(60):
        await d.acquire(0, clock.time() + 300)
    order: list[str] = []

    async def one(name: str, rank: int) -> None:
        await d.acquire(rank, clock.time() + 300)
        order.append(name)

    tasks = [asyncio.ensure_future(one(f"bulk{i}", 0)) for i in range(3)]
    await settle()
    tasks.append(asyncio.ensure_future(one("excel", 1)))
    await settle()
    await clock.set_time(MINUTE + 60)
    await settle()
    assert order == ["excel", "bulk0", "bulk1", "bulk2"]


async def test_max_wait_refuses_at_once_with_window_headers():
    clock, d = make(LimitSettings(pace=0, probe=False, max_wait=5))
    for _ in range(60):
        await d.acquire(0, clock.time() + 5)
    t0 = clock.time()
    got = await d.acquire(0, t0 + 5)  # the window opens in 50 s: more than 5 s away
    assert isinstance(got, Refusal) and got.reason == "max_wait"
    assert got.headers["X-RateLimit-Minutely-Reset"] == str(int((MINUTE + 60) * 1000))
    assert got.headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert got.headers["Retry-After"] == "50"
    assert d.minute_used == 60 and clock.time() == t0


async def test_daily_budget_spent_refuses_with_the_midnight_reset():
    clock, d = make(LimitSettings(pace=0, probe=False, divisions={7: (None, 3)}))
    for _ in range(3):
        assert await d.acquire(0, clock.time() + 60) == 0.0
    got = await d.acquire(0, clock.time() + 60)
    midnight = (MINUTE // 86400 + 1) * 86400
    assert isinstance(got, Refusal) and got.reason == "daily"
    assert got.headers["X-RateLimit-Reset"] == str(int(midnight * 1000))
    assert got.headers["X-RateLimit-Remaining"] == "0" and got.headers["X-RateLimit-Limit"] == "3"
    assert int(got.headers["Retry-After"]) == int(midnight - clock.time())


async def test_probe_one_call_first_then_the_learned_limit():
    clock, d = make(LimitSettings(pace=0, probe=True))
    first = await d.acquire(0, clock.time() + 300)
    assert first == 0.0 and d.probing
    others = [asyncio.ensure_future(d.acquire(0, clock.time() + 300)) for _ in range(40)]
    await settle()
    assert not any(t.done() for t in others)  # nothing goes before the probe's headers are known
    reset = str(int((MINUTE + 60) * 1000))
    d.answered({"X-RateLimit-Minutely-Limit": "30", "X-RateLimit-Minutely-Remaining": "29",
                "X-RateLimit-Minutely-Reset": reset}, learn=True)
    await settle()
    assert d.minute_limit == 30 and sum(t.done() for t in others) == 29 and d.minute_used == 30


async def test_a_probe_without_an_answer_does_not_block_the_division():
    clock, d = make(LimitSettings(pace=0, probe=True))
    assert await d.acquire(0, clock.time() + 300) == 0.0
    waiting = asyncio.ensure_future(d.acquire(0, clock.time() + 300))
    await settle()
    assert not waiting.done()
    d.unanswered(sent=True)  # the probe timed out: it counts, and the next call probes again
    await settle()
    assert waiting.done() and waiting.result() == 0.0 and d.probing and not d.known
    assert d.minute_used == 2


async def test_a_call_that_was_never_sent_is_given_back():
    clock, d = make()
    await d.acquire(0, clock.time() + 60)
    d.unanswered(sent=False)
    assert d.minute_used == 0 and d.day_used == 0


async def test_exact_lower_remaining_is_adopted_higher_limit_too_daily_never_above_policy():
    clock, d = make()
    await d.acquire(0, clock.time() + 60)
    reset = str(int((MINUTE + 60) * 1000))
    d.answered({"X-RateLimit-Minutely-Limit": "100", "X-RateLimit-Minutely-Remaining": "40",
                "X-RateLimit-Minutely-Reset": reset,
                "X-RateLimit-Limit": "20000", "X-RateLimit-Remaining": "19990"}, learn=True)
    assert d.minute_limit == 100 and d.minute_used == 60  # another tool used 59 of them
    assert d.day_limit == 5000 and d.day_used == 1  # the daily header never raises the budget
    d.answered({"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "1000"}, learn=True)
    assert d.day_used == 4000


async def test_upstream_429_pauses_until_reset_else_retry_after_else_growing_backoff():
    clock, d = make()
    now = clock.time()
    until = d.upstream_429({"X-RateLimit-Minutely-Reset": str(int((MINUTE + 60) * 1000)),
                            "X-RateLimit-Minutely-Remaining": "0"}, 1.0, 60.0)
    assert until == MINUTE + 60 and d.minute_used >= d.minute_limit
    clock2, d2 = make()
    assert d2.upstream_429({"Retry-After": "7"}, 1.0, 60.0) == now + 7
    clock3, d3 = make()
    pauses = [d3.upstream_429({}, 1.0, 6.0) - now for _ in range(5)]
    assert pauses == [1.0, 2.0, 4.0, 6.0, 6.0]
    # a repeat lengthens a short Retry-After to the backoff
    clock4, d4 = make()
    d4.upstream_429({"Retry-After": "1"}, 1.0, 60.0)
    d4.paused_until = 0.0
    for _ in range(3):
        last = d4.upstream_429({"Retry-After": "1"}, 1.0, 60.0)
    assert last == now + 8


async def test_a_paused_division_holds_its_queue_until_the_pause_ends():
    clock, d = make()
    d.upstream_429({"Retry-After": "5"}, 1.0, 60.0)
    w = asyncio.ensure_future(d.acquire(0, clock.time() + 60))
    await settle()
    assert not w.done()
    await clock.advance(5)
    await settle()
    assert w.done() and w.result() == pytest.approx(5.0)


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after_seconds("12", 0.0) == 12.0
    assert retry_after_seconds("Wed, 25 Nov 2026 10:00:30 GMT", 1_795_600_800.0) == 30.0
    assert retry_after_seconds("soon", 0.0) is None and retry_after_seconds(None, 0.0) is None


async def test_a_waiter_whose_deadline_passes_in_the_queue_gets_the_real_reset():
    clock, d = make()  # at MINUTE + 10
    d.upstream_429({"Retry-After": "5"}, 1.0, 60.0)
    late = asyncio.ensure_future(d.acquire(0, clock.time() + 30))  # a 5 s pause fits its 30 s
    await settle()
    assert not late.done()
    d.upstream_429({"Retry-After": "100"}, 1.0, 60.0)  # Exact says no again: paused until MINUTE + 110
    await settle()
    await clock.advance(30)
    await settle(10)
    got = late.result()
    assert isinstance(got, Refusal) and got.reason == "max_wait"
    assert got.headers["X-RateLimit-Minutely-Reset"] == str(int((MINUTE + 110) * 1000))
    assert got.headers["Retry-After"] == "70" and d.minute_used == 0


async def test_an_idle_division_holds_no_queue_objects():
    """10,000 tracked divisions must not cost the garbage collector four objects each."""
    clock, d = make()
    assert d.waiters == () and d.changed is None
    for _ in range(60):
        await d.acquire(0, clock.time() + 300)
    w = asyncio.ensure_future(d.acquire(0, clock.time() + 300))
    await settle()
    assert len(d.waiters) == 1 and d.changed is not None
    await clock.set_time(MINUTE + 60)
    await settle()
    assert w.done() and d.waiters == () and d.changed is None and d.pump is None


async def _in_a_row(clock: ManualClock, d: Division, n: int) -> list[float]:
    """A tool reading ``n`` times in a row: the clock time at which each call was admitted."""
    admitted = []
    for _ in range(n):
        task = asyncio.ensure_future(d.acquire(0, clock.time() + 300))
        await settle()
        while not task.done():
            nxt = clock.next_deadline()
            assert nxt is not None
            await clock.set_monotonic(nxt)
            await settle()
        assert not isinstance(task.result(), Refusal)
        admitted.append(clock.time())
    return admitted


async def test_the_end_of_a_minute_is_paced_so_a_tool_in_a_row_never_waits_long():
    clock, d = make(LimitSettings(probe=False), start=MINUTE)  # pace: 0.2 (12 of 60), the default
    times = await _in_a_row(clock, d, 70)
    waits = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert times[48] == MINUTE and times[49] > MINUTE  # 48 at once, and the first of the paced tail
    assert all(MINUTE <= t < MINUTE + 60 for t in times[:60])  # the whole window is used
    assert times[60] == MINUTE + 60  # the next window opens on time
    assert max(waits) <= 60 / 12 + 0.01  # the last 12 of the minute spread: about 5 s apart, never 60


async def test_pacing_starts_where_the_minute_runs_low_and_a_backlog_still_fills_the_window():
    clock, d = make(LimitSettings(probe=False), start=MINUTE + 30)  # half a minute left
    tasks = [asyncio.ensure_future(d.acquire(0, clock.time() + 300)) for _ in range(90)]
    await settle()
    assert sum(t.done() for t in tasks) == 49  # 48, and the first of the paced tail
    while d.minute_used < 60 and clock.time() < MINUTE + 60:
        await clock.set_monotonic(clock.next_deadline())
        await settle()
    assert clock.time() < MINUTE + 60
    # the other 11 of the tail went before the minute ended (30 s / 12 = 2.5 s apart): all 60 used
    assert d.minute_used == 60 and sum(t.done() for t in tasks) == 60
    await clock.set_time(MINUTE + 60)
    await settle()
    assert sum(t.done() for t in tasks) == 90  # the next window opens on time: the other 30 go at once
    for t in tasks:
        t.cancel()


async def test_pacing_can_be_switched_off():
    clock, d = make(LimitSettings(probe=False, pace=0), start=MINUTE)
    times = await _in_a_row(clock, d, 61)
    assert times[59] == MINUTE and times[60] == MINUTE + 60


async def test_a_minute_boundary_releases_queued_calls_a_few_per_loop_iteration():
    """6,000 calls freed at once used to resume in one loop iteration: health waited 2.2 s behind them."""
    from proxy.limits.turns import Turns

    clock = ManualClock(start=MINUTE + 10)
    turns = Turns(per_turn=16)
    divisions = [Division("app", i, LimitSettings(pace=0, probe=False), clock) for i in range(5)]
    for d in divisions:
        d.turns = turns
        for _ in range(60):
            assert await d.acquire(0, clock.time() + 300) == 0.0
    tasks = [asyncio.ensure_future(d.acquire(0, clock.time() + 300)) for d in divisions for _ in range(60)]
    await settle()
    assert not any(t.done() for t in tasks)
    await clock.set_time(MINUTE + 60)  # (this runs a few loop iterations itself)
    done = [sum(t.done() for t in tasks)]
    while done[-1] < len(tasks):
        await asyncio.sleep(0)
        done.append(sum(t.done() for t in tasks))
        assert len(done) < 500
    released = [b - a for a, b in zip(done, done[1:], strict=False)]
    assert done[0] <= 16 * 12 and max(released) <= 16  # all go, 16 at most per iteration
    assert [d.minute_used for d in divisions] == [60] * 5
