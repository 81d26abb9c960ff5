"""The call budget end to end: tools firing as fast as they can, through the real proxy, in front of the
emulator, on one ManualClock. Three minutes of traffic take a fraction of a second.

``Driver`` moves the clock only when every request still open is waiting in the proxy's queues, so
no call is ever in flight across a window boundary it did not ask for.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

import aiohttp

from proxy.clock import ManualClock

START = 1_790_000_040.0  # 40 s into a clock minute: the first window is short
APP = "test-app"


class Driver:
    """Moves the clock to its next deadline whenever the open requests make no progress on their own
    (all queued, paused or backing off), never while a call is under way."""

    def __init__(self, clock: ManualClock, proxy, emu) -> None:
        self.clock, self.proxy, self.emu = clock, proxy, emu
        self.open = 0
        self.done = 0
        self.book = next(f for f in proxy.services.filters if f.name == "call_budget").book

    def queued(self) -> int:
        return sum(len(d.waiters) for d in self.book.divisions.values())

    async def run(self, work):
        task = asyncio.ensure_future(work)
        still, last = 0, None
        while not task.done():
            await asyncio.sleep(0.002)
            mark = (self.emu.state.requests, self.done, self.queued())
            still = still + 1 if mark == last else 0
            last = mark
            # all open requests queued and nothing moved for one poll (the pump had its turn), or no
            # progress for five polls
            if self.open and ((self.queued() >= self.open and still >= 1) or still >= 5) and not task.done():
                nxt = self.clock.next_deadline()
                if nxt is not None:
                    await self.clock.set_monotonic(max(nxt, self.clock.monotonic()))
                    still = 0
        return task.result()


async def setup(emulator, start_proxy, extra="", emu_config=None):
    clock = ManualClock(start=START)
    emu = await emulator(config=emu_config, clock=clock)
    # identical GETs at once must each reach Exact here: these tests count calls against the windows
    proxy = await start_proxy(emu.base, "coalesce: {enabled: false}\n" + extra, clock=clock)
    token = emu.state.issue_tokens(APP)["access_token"]
    return clock, emu, proxy, Driver(clock, proxy, emu), {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def fire(session, driver, url, headers, n, concurrency, method="GET", done=None):
    """``n`` calls at ``concurrency``; returns (status, clock time at completion) per call."""
    results = []
    sem = asyncio.Semaphore(concurrency)

    async def one(i):
        async with sem:
            driver.open += 1
            try:
                async with session.request(method, url, headers=headers) as r:
                    await r.read()
                    results.append((r.status, driver.clock.time(), dict(r.headers)))
            finally:
                driver.open -= 1
                driver.done += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return results


URL = "/api/v1/{div}/crm/Contacts?$select=ID&$top=1"


async def test_150_calls_at_concurrency_40_all_succeed_across_three_windows(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        res = await driver.run(fire(s, driver, proxy.url() + URL.format(div=101), h, 150, 40))
    assert [r[0] for r in res] == [200] * 150
    assert emu.state.count(outcome="minutely_429") == 0
    minutes = {math.floor(t / 60) for _, t, _ in res}
    assert len(minutes) == 3  # 60 + 60 + 30 calls: three clock minutes


async def test_two_divisions_do_not_slow_each_other(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        busy = fire(s, driver, proxy.url() + URL.format(div=201), h, 150, 40)
        quiet = fire(s, driver, proxy.url() + URL.format(div=202), h, 10, 2)
        busy_res, quiet_res = await driver.run(asyncio.gather(busy, quiet))
    assert all(r[0] == 200 for r in busy_res + quiet_res)
    assert max(t for _, t, _ in quiet_res) == START  # the quiet division never waited for the busy one
    assert emu.state.count(outcome="minutely_429") == 0


async def test_a_30_a_minute_division_is_learned_without_a_429(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy, "limits: {max_wait: 300}\n")
    emu.state.set_limits(APP, 301, minutely=30)
    async with aiohttp.ClientSession() as s:
        res = await driver.run(fire(s, driver, proxy.url() + URL.format(div=301), h, 90, 40))
    assert [r[0] for r in res] == [200] * 90
    assert emu.state.count(outcome="minutely_429") == 0
    per_minute = {}
    for _, t, _ in res:
        per_minute[math.floor(t / 60)] = per_minute.get(math.floor(t / 60), 0) + 1
    assert max(per_minute.values()) <= 30


async def test_spent_daily_budget_gives_fast_local_429s(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy)
    emu.state.set_limits(APP, 401, daily=50)
    async with aiohttp.ClientSession() as s:
        res = await driver.run(fire(s, driver, proxy.url() + URL.format(div=401), h, 70, 10))
        seen = emu.state.count(division=401)
        late = await driver.run(fire(s, driver, proxy.url() + URL.format(div=401), h, 5, 5))
    statuses = [r[0] for r in res]
    assert statuses.count(200) == 50 and statuses.count(429) == 20
    refused = [r for r in res if r[0] == 429][-1][2]
    midnight = (math.floor(clock.time() / 86400) + 1) * 86400
    assert refused["X-RateLimit-Reset"] == str(int(midnight * 1000)) and refused["X-RateLimit-Remaining"] == "0"
    assert 0 < int(refused["Retry-After"]) <= 86400 and refused["X-RateLimit-Limit"] == "50"
    assert [r[0] for r in late] == [429] * 5
    assert emu.state.count(division=401) == seen == 50  # Exact saw nothing more that day
    assert emu.state.count(outcome="daily_429") == 0


async def test_upstream_429_pauses_and_replays(emulator, start_proxy):
    for retry_after in (False, True):
        clock, emu, proxy, driver, h = await setup(emulator, start_proxy,
                                                   emu_config={"retry_after_on_429": retry_after})
        async with aiohttp.ClientSession() as s:
            first = await driver.run(fire(s, driver, proxy.url() + URL.format(div=501), h, 3, 1))
            emu.state.set_limits(APP, 501, minutely=5)  # another tool, elsewhere, spends the division
            res = await driver.run(fire(s, driver, proxy.url() + URL.format(div=501), h, 10, 5))
        assert [r[0] for r in first + res] == [200] * 13
        assert emu.state.count(outcome="minutely_429") >= 1  # Exact said no, the tools never saw it
        await proxy.stop()


async def test_503_is_retried_for_get_and_never_for_post(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy, "retry: {base: 0.01}\n")
    emu.state.set_faults([{"path": "/api/v1/601/*", "kind": "503", "every": 2}])
    async with aiohttp.ClientSession() as s:
        gets = await driver.run(fire(s, driver, proxy.url() + URL.format(div=601), h, 4, 1))
        before = emu.state.count(outcome="fault_503")
        posts = await driver.run(fire(s, driver, proxy.url() + "/api/v1/601/crm/Accounts", h, 4, 1, "POST"))
    assert [r[0] for r in gets] == [200] * 4 and before >= 2
    post_503 = [r for r in posts if r[0] == 503]
    assert post_503 and emu.state.count(outcome="fault_503") - before == len(post_503)  # never replayed


async def test_200_concurrent_requests_never_overrun_a_window(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy, "limits: {max_wait: 300}\n")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=250)) as s:
        res = await driver.run(fire(s, driver, proxy.url() + URL.format(div=701), h, 200, 200))
    assert [r[0] for r in res] == [200] * 200
    assert emu.state.count(outcome="minutely_429") == 0


async def test_priority_overtakes_a_queued_bulk_job(emulator, start_proxy):
    extra = "limits:\n  pace: 0\n  priority:\n    - {header: {X-Priority: high}}\n"  # priority alone, unpaced
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy, extra)
    async with aiohttp.ClientSession() as s:
        bulk = asyncio.ensure_future(fire(s, driver, proxy.url() + URL.format(div=801), h, 150, 150))

        async def excel():
            while driver.queued() < 80:  # the bulk job fills the queue first
                await asyncio.sleep(0.002)
            return await fire(s, driver, proxy.url() + URL.format(div=801), {**h, "X-Priority": "high"}, 1, 1)

        bulk_res, excel_res = await driver.run(asyncio.gather(bulk, excel()))
    assert excel_res[0][0] == 200
    excel_at = excel_res[0][1]
    later_bulk = [t for _, t, _ in bulk_res if t > START]
    # the Excel call went in the first minute with room, before the bulk calls queued ahead of it
    assert excel_at == min(later_bulk)
    assert sum(1 for t in later_bulk if t == excel_at) <= 59


async def test_disconnect_while_queued_consumes_nothing(emulator, start_proxy):
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy)
    url = proxy.url() + URL.format(div=901)
    async with aiohttp.ClientSession() as s:
        await driver.run(fire(s, driver, url, h, 60, 20))  # the minute is full
        gone = asyncio.ensure_future(s.get(url, headers=h))
        while driver.queued() < 1:
            await asyncio.sleep(0.002)
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        for _ in range(100):
            if driver.queued() == 0:
                break
            await asyncio.sleep(0.005)
        assert driver.queued() == 0  # its place was released
        division = next(d for (_, div), d in driver.book.divisions.items() if div == 901)
        assert division.minute_used == 60
        await clock.set_time(math.floor(clock.time() / 60) * 60 + 60)
        await asyncio.sleep(0.05)
        division.roll(clock.time())
        assert emu.state.count(division=901) == 60 and division.minute_used == 0


async def test_a_probe_that_gets_no_answer_does_not_shut_its_division(emulator, start_proxy):
    """The first call of a new division is a POST whose connection Exact resets (never replayed): the
    division's queue must not wait for headers that will never come."""
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy)
    emu.state.set_faults([{"path": "/api/v1/1001/*", "methods": ["POST"], "kind": "reset", "every": 1}])
    async with aiohttp.ClientSession() as s:
        post = await driver.run(fire(s, driver, proxy.url() + "/api/v1/1001/crm/Accounts", h, 1, 1, "POST"))
        gets = await driver.run(fire(s, driver, proxy.url() + URL.format(div=1001), h, 20, 10))
    assert post[0][0] == 502
    assert [r[0] for r in gets] == [200] * 20
    assert max(t for _, t, _ in gets) == START  # nobody waited for the lost probe


async def test_a_bucket_caps_a_bulk_export_while_interactive_calls_flow(emulator, start_proxy, log_output):
    extra = ("limits:\n  max_wait: 600\n  pace: 0\n  buckets:\n"  # the bucket alone, unpaced
             "    - {endpoint: bulk/financial/transactionlines, rate: 20, per: 60, burst: 20}\n")
    clock, emu, proxy, driver, h = await setup(emulator, start_proxy, extra)
    bulk_url = proxy.url() + "/api/v1/1201/bulk/Financial/TransactionLines?$select=ID"
    async with aiohttp.ClientSession() as s:
        await driver.run(fire(s, driver, proxy.url() + URL.format(div=1201), h, 1, 1))  # the probe
        bulk = fire(s, driver, bulk_url, h, 45, 45)
        interactive = fire(s, driver, proxy.url() + URL.format(div=1201), h, 30, 5)
        bulk_res, inter_res = await driver.run(asyncio.gather(bulk, interactive))
    assert [r[0] for r in bulk_res + inter_res] == [200] * 75
    lines = log_output.getvalue().splitlines()
    inter_lines = [ln for ln in lines if "/api/v1/1201/crm/Contacts" in ln]
    bulk_queued = [ln for ln in lines if "TransactionLines" in ln and "queued" in ln]
    assert len(inter_lines) == 31 and not any("queued" in ln for ln in inter_lines)  # never behind the export
    assert len(bulk_queued) == 25  # the burst of 20 went at once, the rest waited for the bucket
    times = sorted(t for _, t, _ in bulk_res)
    assert times[19] - times[0] < 3 and times[-1] - times[0] >= 60  # 20 at once, then 20 a minute
    assert emu.state.count(outcome="minutely_429") == 0
