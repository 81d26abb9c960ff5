"""Coalescing (``proxy.filters.coalesce``, its key ``proxy.reuse.key`` and ``proxy.reuse.buffer``): the
real proxy in front of the emulator, whose answers are held on a ManualClock (a ``slow`` fault) so that
calls are in flight at the same time."""

from __future__ import annotations

import asyncio

import aiohttp

from proxy.clock import ManualClock
from proxy.filters.coalesce import Coalesce
from proxy.reuse.buffer import hold
from proxy.reuse.key import answer_key

START = 1_790_000_000.0
SLOW = [{"path": "/api/v1/*", "kind": "slow", "delay": 5, "every": 1}]


async def setup(emulator, start_proxy, extra="", division=None):
    """The proxy has seen the division once (its first call is a probe that others queue behind); from
    then on every API call is held 5 s on the clock at the emulator, whose counts start at 0."""
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, extra, clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if division is not None:
        async with aiohttp.ClientSession() as s:
            assert (await get(s, f"{proxy.url()}/api/v1/{division}/crm/Contacts?$top=1&warm=up", h))[0] == 200
    emu.state.counter.counts.clear()
    emu.state.set_faults(SLOW)
    return clock, emu, proxy, h


def coalescer(proxy) -> Coalesce:
    return next(f for f in proxy.services.filters if isinstance(f, Coalesce))


async def get(s, url, h):
    async with s.get(url, headers=h) as r:
        return r.status, r.headers, await r.read()


async def until(cond, what="the condition"):
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")  # pragma: no cover


def at_exact(emu) -> int:
    """Calls that reached the emulator's slow fault since setup (each one held there 5 s)."""
    return emu.state.faults._seen[0]


def waiting(proxy) -> int:
    return sum(f.waiting for f in coalescer(proxy).flights.values())


async def test_three_identical_gets_in_flight_go_to_exact_once(emulator, start_proxy, log_output):
    clock, emu, proxy, h = await setup(emulator, start_proxy, division=21)
    url = f"{proxy.url()}/api/v1/21/crm/Contacts?$top=2"
    async with aiohttp.ClientSession() as s:
        calls = [asyncio.ensure_future(get(s, url, h)) for _ in range(3)]
        await until(lambda: waiting(proxy) == 2 and at_exact(emu) >= 1, "two waiters and one call at Exact")
        await clock.advance(5)
        answers = await asyncio.gather(*calls)
        async with s.get(f"{proxy.url()}/_proxy/status") as r:
            status = await r.json()
        async with s.get(f"{proxy.url()}/metrics") as r:
            metrics = await r.text()
    assert emu.state.count(division=21, endpoint="crm/contacts") == 1
    assert {a[0] for a in answers} == {200} and len({a[2] for a in answers}) == 1
    assert {a[1]["Content-Type"] for a in answers} == {answers[0][1]["Content-Type"]}
    assert proxy.url().split("//")[1].encode() in answers[0][2]  # the links point at the proxy
    text = log_output.getvalue()
    assert text.count("coalesced with a call in flight (request ") == 2
    assert "answer shared with 2 coalesced calls" in text
    assert status["coalesce"] == [{"in_flight": 0, "shared_calls": 1, "coalesced_answers": 2, "too_large": 0}]
    assert "exact_proxy_coalesced_answers 2" in metrics


async def test_coalesced_errors_count_once_in_the_error_budget(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy, division=22)
    gone = emu.state.deleted_account_id(22)
    url = f"{proxy.url()}/api/v1/22/crm/Accounts(guid'{gone}')"
    async with aiohttp.ClientSession() as s:
        calls = [asyncio.ensure_future(get(s, url, h)) for _ in range(4)]
        await until(lambda: waiting(proxy) == 3 and at_exact(emu) >= 1, "three waiters")
        await clock.advance(5)
        answers = await asyncio.gather(*calls)
    assert [a[0] for a in answers] == [404] * 4
    assert {a[1]["X-ErrorLimit-Remaining"] for a in answers} == {"7"}  # one error counted, not four
    assert emu.state.count(division=22, endpoint="crm/accounts") == 1


async def test_other_users_hosts_and_writes_do_not_coalesce(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy, division=23)
    other = {**h, "Authorization": "Bearer " + emu.state.issue_tokens("test-app", "user-2")["access_token"]}
    port = proxy.url().rsplit(":", 1)[1]
    by_name = {**h, "Host": f"localhost:{port}"}
    url = f"{proxy.url()}/api/v1/23/crm/Contacts?$top=1"
    async with aiohttp.ClientSession() as s:
        calls = [asyncio.ensure_future(get(s, url, x)) for x in (h, other, by_name)]
        posts = [asyncio.ensure_future(s.post(f"{proxy.url()}/api/v1/23/crm/Contacts", headers=h,
                                              json={"FirstName": "A"})) for _ in range(2)]
        await until(lambda: at_exact(emu) >= 5, "five calls at Exact")
        assert waiting(proxy) == 0
        await clock.advance(5)
        answers = await asyncio.gather(*calls)
        for p in await asyncio.gather(*posts):
            p.release()
    assert emu.state.count(division=23, endpoint="crm/contacts") == 5
    assert f"localhost:{port}".encode() in answers[2][2] and f"localhost:{port}".encode() not in answers[0][2]


async def test_a_waiter_or_the_first_caller_going_away_leaves_the_call_for_the_others(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy, division=24)
    url = f"{proxy.url()}/api/v1/24/crm/Contacts?$top=1"
    async with aiohttp.ClientSession() as s1, aiohttp.ClientSession() as s2, aiohttp.ClientSession() as s3:
        first = asyncio.ensure_future(get(s1, url, h))
        await until(lambda: at_exact(emu) >= 1, "the call at Exact")
        second = asyncio.ensure_future(get(s2, url, h))
        third = asyncio.ensure_future(get(s3, url, h))
        await until(lambda: waiting(proxy) == 2, "two waiters")
        first.cancel()
        await s1.close()   # the first caller goes away
        third.cancel()
        await s3.close()   # and one waiter
        await until(lambda: waiting(proxy) == 1, "the waiter to leave")
        await clock.advance(5)
        status, _, body = await second
    assert status == 200 and b'"results"' in body
    assert emu.state.count(division=24, endpoint="crm/contacts") == 1


async def test_nobody_left_waiting_cancels_the_call(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy, division=25)
    url = f"{proxy.url()}/api/v1/25/crm/Contacts?$top=1"
    async with aiohttp.ClientSession() as s1:
        first = asyncio.ensure_future(get(s1, url, h))
        await until(lambda: at_exact(emu) >= 1, "the call at Exact")
        first.cancel()
        await s1.close()
        await until(lambda: not coalescer(proxy).flights, "the call to be dropped")


async def test_an_answer_over_max_body_streams_to_the_first_and_the_others_call_themselves(emulator, start_proxy,
                                                                                            log_output):
    clock, emu, proxy, h = await setup(emulator, start_proxy, "coalesce: {max_body: 200}\n", division=26)
    url = f"{proxy.url()}/api/v1/26/crm/Contacts?$top=5"
    async with aiohttp.ClientSession() as s:
        calls = [asyncio.ensure_future(get(s, url, h)) for _ in range(3)]
        await until(lambda: waiting(proxy) == 2, "two waiters")
        await clock.advance(5)
        await until(lambda: at_exact(emu) >= 3, "the waiters' own calls")
        await clock.advance(5)
        answers = await asyncio.gather(*calls)
    assert {a[0] for a in answers} == {200} and len({a[2] for a in answers}) == 1 and len(answers[0][2]) > 200
    assert emu.state.count(division=26, endpoint="crm/contacts") == 3
    assert log_output.getvalue().count("not coalesced (answer over 200 bytes)") == 2


async def test_switched_off(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy, "coalesce: {enabled: false}\n", division=27)
    url = f"{proxy.url()}/api/v1/27/crm/Contacts?$top=1"
    async with aiohttp.ClientSession() as s:
        calls = [asyncio.ensure_future(get(s, url, h)) for _ in range(2)]
        await until(lambda: at_exact(emu) >= 2, "two calls at Exact")
        await clock.advance(5)
        await asyncio.gather(*calls)
    assert emu.state.count(division=27, endpoint="crm/contacts") == 2


def test_the_key_and_hold_are_importable():
    assert callable(answer_key) and callable(hold)
