"""The book of divisions (proxy/limits/book.py): persistence through the store, restarts clean and after a
crash, token buckets on the injected clock (proxy/limits/buckets.py)."""

from __future__ import annotations

import asyncio

from proxy.clock import ManualClock
from proxy.limits.book import NAMESPACE, Book
from proxy.limits.buckets import ClockLimiter
from proxy.limits.settings import Bucket, LimitSettings
from proxy.store.memory import MemoryStore

MINUTE = 1_790_000_040.0  # a clock-minute boundary
SETTINGS = LimitSettings(pace=0)


async def book_with(store, clock) -> Book:
    book = Book(clock)
    await book.load(store)
    return book


async def spend(book: Book, n: int, app="app", division=7, settings=SETTINGS):
    d = book.division(app, division, settings)
    for _ in range(n):
        got = await d.acquire(0, book.clock.time() + 1)
        assert got == 0.0
        if d.probing:
            d.answered({}, learn=True)
        book.persist(d, settings.lease)
    return d


async def test_a_clean_stop_keeps_the_exact_counts():
    store, clock = MemoryStore(), ManualClock(start=MINUTE + 10)
    book = await book_with(store, clock)
    await spend(book, 12)
    book.close(SETTINGS.lease)
    await clock.advance(5)
    d = (await book_with(store, clock)).division("app", 7, SETTINGS)
    assert (d.minute_used, d.day_used, d.known) == (12, 12, True)


async def test_a_crash_in_the_same_minute_resumes_from_the_ceiling_and_probes_first():
    store, clock = MemoryStore(), ManualClock(start=MINUTE + 10)
    await spend(await book_with(store, clock), 12)  # no close: kill -9
    await clock.advance(20)
    d = (await book_with(store, clock)).division("app", 7, SETTINGS)
    # the ceiling on file covers every call reserved (at most a lease ahead), plus two minutes' padding
    assert 12 <= d.minute_used <= 12 + SETTINGS.lease and not d.known
    assert 12 + 2 * 60 <= d.day_used <= 12 + SETTINGS.lease + 2 * 60
    assert await d.acquire(0, clock.time() + 1) == 0.0 and d.probing  # one call, to hear Exact's count
    second = asyncio.ensure_future(d.acquire(0, clock.time() + 30))
    await asyncio.sleep(0)
    assert not second.done()  # nothing else until Exact said how much of the minute is left
    d.answered({"X-RateLimit-Minutely-Limit": "60", "X-RateLimit-Minutely-Remaining": "40",
                "X-RateLimit-Minutely-Reset": str(int((MINUTE + 60) * 1000))}, learn=True)
    for _ in range(5):
        await asyncio.sleep(0)
    assert second.done() and d.minute_used == max(20, 12 + SETTINGS.lease + 1) + 1


async def test_a_crash_in_the_same_minute_without_probing_spends_that_minute():
    settings = LimitSettings(pace=0, probe=False)
    store, clock = MemoryStore(), ManualClock(start=MINUTE + 10)
    await spend(await book_with(store, clock), 12, settings=settings)
    await clock.advance(20)
    d = (await book_with(store, clock)).division("app", 7, settings)
    assert d.minute_used >= 60 and await d.acquire(0, clock.time() + 1) != 0.0


async def test_a_crash_restored_in_a_later_minute_probes_first():
    store, clock = MemoryStore(), ManualClock(start=MINUTE + 59.5)
    await spend(await book_with(store, clock), 12)
    await clock.advance(1.0)  # the crash came just after the minute turned: calls of this minute were lost
    d = (await book_with(store, clock)).division("app", 7, SETTINGS)
    assert d.minute_used == 0 and not d.known
    assert await d.acquire(0, clock.time() + 1) == 0.0 and d.probing
    second = asyncio.ensure_future(d.acquire(0, clock.time() + 30))
    await asyncio.sleep(0)
    assert not second.done()  # the queue waits for what Exact says about this minute
    d.answered({"X-RateLimit-Minutely-Limit": "60", "X-RateLimit-Minutely-Remaining": "0",
                "X-RateLimit-Minutely-Reset": str(int((MINUTE + 120) * 1000))}, learn=True)
    await asyncio.sleep(0)
    assert d.minute_used == 60 and not second.done()
    second.cancel()


async def test_a_learned_higher_limit_is_restored_before_the_minute_is_spent():
    store, clock = MemoryStore(), ManualClock(start=MINUTE + 10)
    book = await book_with(store, clock)
    d = await spend(book, 1)
    d.answered({"X-RateLimit-Minutely-Limit": "100", "X-RateLimit-Minutely-Remaining": "99",
                "X-RateLimit-Minutely-Reset": str(int((MINUTE + 60) * 1000))}, learn=True)
    book.persist(d, SETTINGS.lease)
    await clock.advance(5)
    d2 = (await book_with(store, clock)).division("app", 7, SETTINGS)
    assert d2.minute_limit == 100 and d2.minute_used >= 1 and not d2.known  # resumes, probing first


async def test_a_restored_daily_limit_never_exceeds_the_policy():
    store, clock = MemoryStore(), ManualClock(start=MINUTE + 10)
    store.put(NAMESPACE, "app|7", {"minute_start": MINUTE, "minute_ceiling": 3, "day_start": MINUTE // 86400 * 86400,
                                   "day_ceiling": 3, "minute_limit": 60, "day_limit": 20000, "known": True,
                                   "clean": True})
    d = (await book_with(store, clock)).division("app", 7, LimitSettings(pace=0, divisions={7: (None, 1000)}))
    assert d.day_limit == 1000 and d.day_used == 3


async def test_an_unreadable_record_is_ignored():
    store, clock = MemoryStore(), ManualClock(start=MINUTE + 10)
    store.put(NAMESPACE, "app|7", {"minute_start": MINUTE, "minute_ceiling": "lots"})
    d = (await book_with(store, clock)).division("app", 7, SETTINGS)
    assert d.minute_limit == 60


def test_clock_limiter_follows_the_injected_clock():
    async def run():
        clock = ManualClock(start=MINUTE)
        b = ClockLimiter(rate=20, per=60, burst=2, clock=clock)
        b.take()
        b.take()
        assert not b.has_capacity() and abs(b.free_in() - 3.0) < 1e-9
        await clock.advance(3)
        assert b.has_capacity()
        b.take()
        b.give_back()
        assert b.has_capacity()
    asyncio.run(run())


async def test_buckets_apply_by_division_endpoint_or_both():
    book = Book(ManualClock(start=MINUTE))
    settings = LimitSettings(pace=0, buckets=(Bucket(None, "bulk/financial/transactionlines", 20, 60, 20),
                                      Bucket(7, None, 100, 60, 10), Bucket(8, "crm/accounts", 1, 1, 1)))
    assert len(book.buckets_for("app", 7, "bulk/financial/transactionlines", settings)) == 2
    assert len(book.buckets_for("app", 7, "crm/accounts", settings)) == 1
    assert len(book.buckets_for("app", 8, "crm/accounts", settings)) == 1
    assert book.buckets_for("app", 9, "crm/accounts", settings) == ()
    one = book.buckets_for("app", 7, "crm/accounts", settings)[0]
    assert book.buckets_for("app", 7, "crm/accounts", settings)[0] is one
    assert book.buckets_for("other", 7, "crm/accounts", settings)[0] is not one


async def test_a_bucket_holds_its_endpoint_while_the_division_flows():
    clock = ManualClock(start=MINUTE)
    book = Book(clock)
    settings = LimitSettings(pace=0, probe=False, buckets=(Bucket(None, "bulk/x", 2, 60, 2),))
    d = book.division("app", 7, settings)
    bulk = book.buckets_for("app", 7, "bulk/x", settings)
    assert await d.acquire(0, clock.time() + 100, bulk) == 0.0
    assert await d.acquire(0, clock.time() + 100, bulk) == 0.0
    third = asyncio.ensure_future(d.acquire(0, clock.time() + 100, bulk))
    await asyncio.sleep(0)
    assert not third.done()
    for _ in range(5):  # other endpoints pass the queued bulk call
        assert await asyncio.wait_for(d.acquire(0, clock.time() + 100), 1) == 0.0
    await clock.advance(30)  # one unit back after 30 s (2 a minute)
    for _ in range(5):
        await asyncio.sleep(0)
    assert third.done() and third.result() == 30.0
