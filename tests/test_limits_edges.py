"""Issue 14, call limits at the edges: a restart in the same minute keeps that minute useful, and a
reloaded policy applies to divisions already tracked. The real proxy in front of the emulator, on one
manual clock, with a real SQLite file."""

from __future__ import annotations

import asyncio
import os

import aiohttp

from proxy.clock import ManualClock

START = 1_790_000_040.0  # a clock-minute boundary
URL = "/api/v1/{div}/crm/Contacts?$select=ID&$top=1"


async def _get(s, base, token, div, n):
    statuses = []
    for _ in range(n):
        async with s.get(base + URL.format(div=div), headers={"Authorization": f"Bearer {token}",
                                                              "Accept": "application/json"}) as r:
            await r.read()
            statuses.append(r.status)
    return statuses


async def test_a_crash_keeps_the_rest_of_the_minute_useful(emulator, start_proxy, tmp_path):
    clock = ManualClock(start=START + 5)
    emu = await emulator(clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    state = str(tmp_path / "shared.sqlite")
    extra = "limits: {max_wait: 0, pace: 0}\n"
    first = await start_proxy(emu.base, extra, clock=clock, state_path=state)
    async with aiohttp.ClientSession() as s:
        before = await _get(s, first.url(), token, 7, 40)
        await first.services.store.flush()  # what was on file when the process died (no clean stop)
        await clock.advance(10)  # the same clock minute
        second = await start_proxy(emu.base, extra, clock=clock, state_path=state)
        after = await _get(s, second.url(), token, 7, 40)
    assert before == [200] * 40
    assert after.count(200) >= 17 and set(after) <= {200, 429}  # the minute used at least 57 of 60
    assert emu.state.count(outcome="minutely_429") == 0


async def test_a_reload_applies_to_divisions_already_tracked(emulator, start_proxy, tmp_path):
    clock = ManualClock(start=START + 5)
    emu = await emulator(clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    proxy = await start_proxy(emu.base, "reload_interval: 0.05\nlimits: {max_wait: 0, pace: 0}\n", clock=clock)
    path = tmp_path / "policies.yaml"
    async with aiohttp.ClientSession() as s:
        assert await _get(s, proxy.url(), token, 7, 2) == [200, 200]
        assert await _get(s, proxy.url(), token, 8, 2) == [200, 200]
        text = path.read_text().replace("limits: {max_wait: 0, pace: 0}",
                                        "limits: {max_wait: 0, pace: 0, daily: 3, divisions: {8: {minutely: 3}}}")
        tmp = path.with_suffix(".swp")
        tmp.write_text(text)
        os.replace(tmp, path)
        for _ in range(250):
            if proxy.holder.reloads:
                break
            await asyncio.sleep(0.02)
        assert proxy.holder.reloads == 1
        day = await _get(s, proxy.url(), token, 7, 5)
        await clock.advance(86400)  # a new day: division 8's own minute ceiling still holds
        token = emu.state.issue_tokens("test-app")["access_token"]
        minute = await _get(s, proxy.url(), token, 8, 5)
    assert day == [200, 429, 429, 429, 429]  # 3 a day, 2 already spent
    assert minute == [200, 200, 200, 429, 429]
    assert emu.state.count(outcome="minutely_429") == 0 and emu.state.count(outcome="daily_429") == 0


async def _fill_the_minute(s, base, token, div):
    assert await _get(s, base, token, div, 60) == [200] * 60


async def _one(s, base, token, div, agent):
    async with s.get(base + URL.format(div=div), headers={"Authorization": f"Bearer {token}",
                                                          "User-Agent": agent}) as r:
        return r.status, r.headers.get("Retry-After"), await r.text()


async def test_max_wait_per_tool(emulator, start_proxy):
    clock = ManualClock(start=START + 5)
    emu = await emulator(clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    extra = ("limits:\n  pace: 0\n  tools:\n    - {match: {user_agent: 'excel*'}, max_wait: 10}\n")
    proxy = await start_proxy(emu.base, extra, clock=clock)
    async with aiohttp.ClientSession() as s:
        await _fill_the_minute(s, proxy.url(), token, 9)
        status, retry, text = await _one(s, proxy.url(), token, 9, "Excel/16.0")  # 55 s to wait: too long
        waiting = asyncio.ensure_future(_one(s, proxy.url(), token, 9, "nightly-replication"))  # max_wait 120
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await clock.advance(60)
        assert (await asyncio.wait_for(waiting, 5))[0] == 200
    assert status == 429 and int(retry) >= 50 and "the tool's max_wait" in text


async def test_a_tools_patience_is_learned_from_the_calls_it_abandons(emulator, start_proxy, log_output):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    proxy = await start_proxy(emu.base, "limits: {pace: 0}\n", clock=clock)
    async with aiohttp.ClientSession() as s:
        for minute in (0, 1):  # twice, the tool gives up after 30 s of waiting (its read timeout)
            await clock.set_time(START + 60 * minute + 1)
            await _fill_the_minute(s, proxy.url(), token, 10)
            call = asyncio.ensure_future(_one(s, proxy.url(), token, 10, "impatient/1.0"))
            await asyncio.sleep(0.1)
            await clock.advance(30)
            call.cancel()
            await asyncio.sleep(0.1)
        # 29 s to the next window: longer than the 24 s (0.8 x 30) the tool is known to wait
        status, retry, text = await _one(s, proxy.url(), token, 10, "impatient/1.0")
        other = asyncio.ensure_future(_one(s, proxy.url(), token, 10, "patient/1.0"))
        await asyncio.sleep(0.1)
        assert not other.done()  # another tool still waits its turn
        await clock.advance(29)
        assert (await asyncio.wait_for(other, 5))[0] == 200
    assert status == 429 and 25 <= int(retry) <= 30, (status, retry)
    assert "patience, learned from the calls it abandoned" in text
    assert log_output.getvalue().count("status=499") == 2
