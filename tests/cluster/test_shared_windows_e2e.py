"""Three real proxies (``call_budget`` in cluster mode) on one valkey-server, in front of the real
emulator, on one ManualClock: a burst at twice the minute spread over the three nodes reaches Exact
as exactly the minute's calls, with no 429; a stopped server turns counted calls into local 503s
with nothing sent to Exact; the status view reads the windows from the server. Also measured: what
one forwarded call costs in round trips and time.
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.cluster.queue import SharedDivision
from proxy.cluster.windows import SharedWindows

START = 1_790_000_080.0  # 40 s into a clock minute
APP = "test-app"
URL = "/api/v1/{div}/crm/Contacts?$select=ID&$top=1"


@pytest.fixture
def token_key(monkeypatch):
    from cryptography.fernet import Fernet

    monkeypatch.setenv("EXACT_PROXY_TOKEN_KEY", Fernet.generate_key().decode())


async def nodes(emulator, start_proxy, redis_server, tmp_path, n=3, extra=""):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxies = []
    for i in range(n):
        # identical GETs at once must each reach Exact here: these tests count calls against the windows
        yaml = f"cluster: {{redis_url: '{redis_server.url}', node: n{i}}}\ncoalesce: {{enabled: false}}\n" + extra
        proxies.append(await start_proxy(emu.base, yaml, clock=clock, state_path=str(tmp_path / f"s{i}.sqlite")))
    token = emu.state.issue_tokens(APP)["access_token"]
    return clock, emu, proxies, {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def budget(proxy):
    return next(f for f in proxy.services.filters if f.name == "call_budget")


def queued(proxies) -> int:
    return sum(len(d.waiters) for p in proxies for d in budget(p).book.divisions.values())


async def until(cond, timeout=5.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


async def test_a_burst_at_twice_the_minute_over_three_nodes(emulator, start_proxy, redis_server, tmp_path, token_key):
    clock, emu, proxies, h = await nodes(emulator, start_proxy, redis_server, tmp_path,
                                         extra="limits: {pace: 0, max_wait: 300}\n")
    assert isinstance(budget(proxies[0]).shared, SharedWindows)
    done: list[tuple[int, float]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=300)) as s:
        async def one(i):
            async with s.get(proxies[i % 3].url() + URL.format(div=11), headers=h) as r:
                await r.read()
                done.append((r.status, clock.time()))

        calls = [asyncio.ensure_future(one(i)) for i in range(120)]
        await until(lambda: len(done) == 60 and queued(proxies) == 60)  # the probe, then the minute
        assert emu.state.count(division=11) == 60
        await clock.advance(20)
        await asyncio.wait_for(asyncio.gather(*calls), 10)
    assert [st for st, _ in done] == [200] * 120
    assert emu.state.count(outcome="minutely_429") == 0
    minutes = {}
    for _, t in done:
        minutes[math.floor(t / 60)] = minutes.get(math.floor(t / 60), 0) + 1
    assert sorted(minutes.values()) == [60, 60]  # both minutes used fully, none overrun
    view = await proxies[2].services.cluster.view()
    assert view["windows"][0]["minute"] == "60/60" and view["windows"][0]["queue"] == 0


async def test_server_down_gives_503_and_nothing_reaches_exact(emulator, start_proxy, redis_server, tmp_path,
                                                               token_key):
    clock, emu, proxies, h = await nodes(emulator, start_proxy, redis_server, tmp_path, n=2)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxies[0].url() + URL.format(div=12), headers=h) as r:
            assert r.status == 200
        seen = emu.state.count(division=12)
        redis_server.stop()
        for p in proxies:
            async with s.get(p.url() + URL.format(div=12), headers=h) as r:
                body = await r.json()
                assert r.status == 503 and r.headers["Retry-After"] == "5"
                assert "nothing was sent to Exact" in body["error"]["message"]["value"]
        assert emu.state.count(division=12) == seen
        redis_server.start()
        await until(lambda: all(p.services.cluster.link.up for p in proxies))
        await clock.advance(20)  # the server forgot: the minute on file counts as spent
        async with s.get(proxies[1].url() + URL.format(div=12), headers=h) as r:
            assert r.status == 200
    assert emu.state.count(outcome="minutely_429") == 0


async def test_one_forwarded_call_costs_one_round_trip(emulator, start_proxy, redis_server, tmp_path, token_key,
                                                      capsys):
    clock, emu, proxies, h = await nodes(emulator, start_proxy, redis_server, tmp_path, n=1,
                                         extra="limits: {pace: 0}\n")
    shared = budget(proxies[0]).shared
    link = shared.link
    runs = []
    real_run = link.run

    async def counting(script, keys, args=()):
        runs.append(script)
        return await real_run(script, keys, args)

    link.run = counting
    async with aiohttp.ClientSession() as s:
        url = proxies[0].url() + URL.format(div=13)
        for _ in range(3):  # the probe, learning, warm connections
            async with s.get(url, headers=h) as r:
                assert r.status == 200
        await asyncio.sleep(0.05)
        runs.clear()
        async with s.get(url, headers=h) as r:
            assert r.status == 200
        await asyncio.sleep(0.05)
        mine = [r for r in runs if r in shared._scripts.values()]
        assert len(mine) == 1  # the reservation; Exact's figures told the server nothing new
        d = next(d for (_, div), d in budget(proxies[0]).book.divisions.items() if div == 13)
        assert isinstance(d, SharedDivision)
        n, times = 200, []
        for _ in range(n):
            t0 = time.perf_counter()
            await shared.run(d, "RESERVE")
            times.append(time.perf_counter() - t0)
            await shared.run(d, "RELEASE", int(d.minute_start * 1000), 1, 0)
    times.sort()
    with capsys.disabled():
        print(f"\nshared windows: reserve p50 {times[n // 2] * 1000:.3f} ms, p90 {times[int(n * 0.9)] * 1000:.3f} ms")
    assert times[n // 2] < 0.005
