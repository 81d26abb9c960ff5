"""The error book's reserve-before-forward: places, arrival order, one wake-up per freed place."""

from __future__ import annotations

import asyncio

from proxy.errorbudget.book import ErrorBook

KEY = ("app", 1, "crm/accounts")
NOW = 1_790_000_000.0


def now() -> float:
    return NOW


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_places_up_to_the_budget_then_waiters_in_arrival_order():
    book, order = ErrorBook(), []
    for _ in range(3):
        assert await book.reserve(KEY, 3, now) == 0

    async def wait(i):
        waits = await book.reserve(KEY, 3, now)
        order.append((i, waits))

    tasks = [asyncio.create_task(wait(i)) for i in range(4)]
    await settle()
    assert order == [] and book.inflight(KEY) == 3
    book.release(KEY)
    await settle()
    assert order == [(0, 1)] and book.inflight(KEY) == 3  # one place freed: exactly one admitted
    book.release(KEY)
    book.release(KEY)
    await settle()
    assert order == [(0, 1), (1, 1), (2, 1)]
    assert not tasks[3].done()
    book.release(KEY)
    await settle()
    assert order[-1] == (3, 1) and all(t.done() for t in tasks)


async def test_a_newcomer_never_passes_a_waiter():
    book = ErrorBook()
    assert await book.reserve(KEY, 1, now) == 0
    first = asyncio.create_task(book.reserve(KEY, 1, now))
    await settle()
    book.release(KEY)  # the place goes to the waiter, even though a newcomer arrives at once
    late = asyncio.create_task(book.reserve(KEY, 1, now))
    await settle()
    assert first.done() and first.result() == 1 and not late.done()
    book.release(KEY)
    await settle()
    assert late.done() and late.result() == 1


async def test_a_woken_waiter_that_is_cancelled_passes_the_place_on():
    book = ErrorBook()
    assert await book.reserve(KEY, 1, now) == 0
    a = asyncio.create_task(book.reserve(KEY, 1, now))
    b = asyncio.create_task(book.reserve(KEY, 1, now))
    await settle()
    book.release(KEY)  # wakes a ...
    a.cancel()  # ... which goes away before it runs
    await settle()
    assert a.cancelled() and b.done() and b.result() == 1 and book.inflight(KEY) == 1


async def test_counted_errors_at_the_budget_refuse_every_waiter():
    book = ErrorBook()
    for _ in range(2):
        assert await book.reserve(KEY, 2, now) == 0
    waiters = [asyncio.create_task(book.reserve(KEY, 2, now)) for _ in range(5)]
    await settle()
    for _ in range(2):  # both calls in flight come back as errors
        book.release(KEY)
        book.add(KEY, NOW)
    await settle()
    assert [w.result() for w in waiters] == [None] * 5 and book.inflight(KEY) == 0
