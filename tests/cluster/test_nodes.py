"""Three real ``exact-proxy run`` processes on one real valkey-server behave as one proxy.

Each scenario drives the nodes over real sockets, spread round robin as a balancer would, in front of
the in-process emulator, all on one wall-anchored sped-up clock. What Exact saw is read from the
emulator's request log and counters.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from proxy.clock import ScaledClock
from tests.cluster.nodes import Nodes

pytestmark = pytest.mark.cluster

START = 1_796_119_200.0 + 3  # 2026-12-01T10:00:03Z


def _clock(factor: float) -> ScaledClock:
    return ScaledClock(factor, START, time.time())


async def _emulator(emulator, tmp_path: Path, clock: ScaledClock, **config):
    return await emulator({"request_log": str(tmp_path / "exact.jsonl"), **config}, clock=clock)


def _exact_log(tmp_path: Path) -> list[dict]:
    path = tmp_path / "exact.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _per_minute(rows: list[dict], division: int) -> dict[int, int]:
    return dict(sorted(Counter(int(r["ts"] // 60) for r in rows
                               if r["division"] == division and r["status"] == 200).items()))


async def _get(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, dict]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}",
                                         "Accept": "application/json"}) as r:
        await r.read()
        return r.status, dict(r.headers)


async def test_bursts_over_three_nodes_use_each_minute_and_never_exceed_it(emulator, redis_server, tmp_path):
    clock = _clock(20)
    emu = await _emulator(emulator, tmp_path, clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    nodes = await Nodes(tmp_path, redis_server.url, emu.base, clock,
                        extra_yaml="limits: {max_wait: 900}\n").start()
    await clock.sleep((90 - clock.time() % 60) % 60)  # the burst starts mid-minute: that minute counts too
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(300):
        jobs.put_nowait(i)
    statuses: Counter[int] = Counter()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            async def worker() -> None:
                while not jobs.empty():
                    n = jobs.get_nowait()  # each call its own URL: nothing is coalesced
                    url = f"{nodes.next_url()}/api/v1/{(101, 102)[n % 2]}/crm/Contacts?$top=1&$skip={n}"
                    status, _ = await _get(s, url, token)
                    statuses[status] += 1

            await asyncio.gather(*(worker() for _ in range(40)))
    finally:
        await nodes.stop()
    assert statuses == {200: 300}
    assert emu.state.count(outcome="minutely_429") == 0
    rows = _exact_log(tmp_path)
    for division in (101, 102):
        minutes = _per_minute(rows, division)
        assert sum(minutes.values()) == 150
        assert max(minutes.values()) <= 60, minutes
        backlog = list(minutes.values())[:-1]  # every minute but the last had waiters from start to end
        assert all(n >= math.ceil(0.97 * 60) for n in backlog), minutes


async def test_five_tools_on_three_nodes_share_one_refresh_token(emulator, redis_server, tmp_path):
    clock = _clock(100)
    emu = await _emulator(emulator, tmp_path, clock)
    first = emu.state.issue_tokens("test-app")
    nodes = await Nodes(tmp_path, redis_server.url, emu.base, clock).start()
    await clock.sleep(600)  # the tools' copy of the token is from an earlier run: Exact allows a refresh
    failures: list[str] = []
    done_at = clock.time() + 1300  # a little over two refresh intervals of 570 s

    async def tool(i: int, s: aiohttp.ClientSession) -> int:
        refresh, calls = first["refresh_token"], 0
        url = nodes.url(i % 3)
        while clock.time() < done_at:
            form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "test-app",
                    "client_secret": "test-secret"}
            async with s.post(url + "/api/oauth2/token", data=form) as r:
                body = await r.json(content_type=None)
                if r.status != 200:
                    failures.append(f"tool {i}: {r.status} {body}")
                    return calls
            refresh, calls = body["refresh_token"], calls + 1
            status, _ = await _get(s, f"{url}/api/v1/current/Me", body["access_token"])
            if status != 200:
                failures.append(f"tool {i}: current/Me {status}")
            await clock.sleep(20)  # every few (sped-up) seconds
        return calls

    try:
        async with aiohttp.ClientSession() as s:
            calls = await asyncio.gather(*(tool(i, s) for i in range(5)))
    finally:
        await nodes.stop()
    assert failures == []
    assert min(calls) >= 10
    outcomes = Counter(r["outcome"] for r in _exact_log(tmp_path) if r["endpoint"] == "oauth2/token")
    assert outcomes["too_early"] == 0 and outcomes["old_refresh_token"] == 0, outcomes
    # one adoption of the shared token, then one refresh per 570 s interval for the whole cluster
    assert 2 <= sum(outcomes.values()) <= 3, outcomes


async def test_bad_requests_over_three_nodes_spend_one_error_budget(emulator, redis_server, tmp_path):
    clock = _clock(1)
    emu = await _emulator(emulator, tmp_path, clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    nodes = await Nodes(tmp_path, redis_server.url, emu.base, clock).start()
    missing = "00000000-0000-0000-0000-00000000abcd"
    try:
        async with aiohttp.ClientSession() as s:
            async def bad(n: int) -> int:
                url = f"{nodes.next_url()}/api/v1/55/crm/Accounts(guid'{missing}')?n={n}"
                return (await _get(s, url, token))[0]

            statuses = Counter(await asyncio.gather(*(bad(n) for n in range(30))))
            ok = Counter([(await _get(s, f"{nodes.next_url()}/api/v1/55/crm/Contacts?$top=1", token))[0]
                          for _ in range(6)])
    finally:
        await nodes.stop()
    errors = [r for r in _exact_log(tmp_path) if r["status"] in (400, 401, 403, 404) and r["division"] == 55]
    assert len(errors) <= 8, Counter(r["endpoint"] for r in errors)
    assert statuses[404] >= 1 and sum(statuses.values()) == 30
    assert ok == {200: 6}


async def test_kill_9_of_a_node_during_a_burst(emulator, redis_server, tmp_path):
    clock = _clock(20)
    emu = await _emulator(emulator, tmp_path, clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    nodes = await Nodes(tmp_path, redis_server.url, emu.base, clock,
                        extra_yaml="limits: {max_wait: 900}\n").start()
    left = [150]
    done = [0]
    statuses: Counter[int] = Counter()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            async def worker() -> None:
                while left[0] > 0:
                    left[0] -= 1
                    n = left[0]
                    while True:  # a balancer sends the call to a live node when its node is gone
                        url = nodes.url(nodes.live()[done[0] % len(nodes.live())])
                        try:
                            status, _ = await _get(s, f"{url}/api/v1/101/crm/Contacts?$top=1&$skip={n}", token)
                            break
                        except aiohttp.ClientError:
                            await asyncio.sleep(0.05)
                    statuses[status] += 1
                    done[0] += 1
                    if done[0] == 40:
                        nodes.kill(0)  # mid-burst: it holds reservations and queued tickets

            await asyncio.gather(*(worker() for _ in range(30)))
    finally:
        await nodes.stop()
    assert statuses == {200: 150}
    assert emu.state.count(outcome="minutely_429") == 0
    minutes = _per_minute(_exact_log(tmp_path), 101)
    assert max(minutes.values()) <= 60, minutes


async def test_the_server_stops_and_restarts_mid_run(emulator, redis_server, tmp_path):
    """Fail closed while it is gone (503, Retry-After, health 503, nothing reaches Exact), then resume
    by itself; no write is sent twice and Exact never answers 429."""
    clock = _clock(20)
    emu = await _emulator(emulator, tmp_path, clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    nodes = await Nodes(tmp_path, redis_server.url, emu.base, clock).start()
    seen: list[tuple[float, int, str, str | None]] = []  # (real time, status, method, Retry-After)
    running = [True]
    created = [0]
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            async def tool(i: int) -> None:
                n = 0
                while running[0]:
                    n += 1
                    url = f"{nodes.next_url()}/api/v1/{101 + i % 2}/crm/Accounts"
                    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
                    if n % 4 == 0:
                        async with s.post(url, json={"Name": f"t{i}-{n}"}, headers=headers) as r:
                            await r.read()
                            created[0] += r.status == 201
                            seen.append((time.monotonic(), r.status, "POST", r.headers.get("Retry-After")))
                    else:
                        async with s.get(url + "?$select=ID&$filter=Name%20ne%20'x'&$top=1",
                                         headers=headers) as r:
                            await r.read()
                            seen.append((time.monotonic(), r.status, "GET", r.headers.get("Retry-After")))
                    await asyncio.sleep(0.05)

            tools = [asyncio.ensure_future(tool(i)) for i in range(4)]
            await asyncio.sleep(1.0)
            redis_server.stop()
            down_at = time.monotonic()
            await asyncio.sleep(0.3)
            before = emu.state.requests
            for i in range(3):
                await nodes.wait_healthy(i, status=503)
            await asyncio.sleep(1.0)
            during = emu.state.requests - before
            up_at = time.monotonic()
            redis_server.start()
            for i in range(3):
                await nodes.wait_healthy(i)
            await asyncio.sleep(1.5)
            running[0] = False
            await asyncio.gather(*tools)
    finally:
        await nodes.stop()
    assert during == 0
    outage = [x for x in seen if down_at + 0.3 < x[0] < up_at]
    assert outage and all(status == 503 and retry for _, status, _, retry in outage)
    after = [x for x in seen if x[0] > up_at + 1.0]
    assert after and all(status in (200, 201) for _, status, _, _ in after), Counter(x[1] for x in after)
    assert emu.state.count(outcome="minutely_429") == 0
    posts = [r for r in _exact_log(tmp_path) if r["method"] == "POST"]
    assert len(posts) == created[0]  # every write Exact saw was answered to the tool, once
    logs = nodes.log(1)
    assert logs.count("unreachable (") == 1 and logs.count("reachable again") == 1


async def test_kill_9_of_a_node_during_a_refresh(emulator, redis_server, tmp_path):
    """Node 0 dies while Exact is still answering its refresh. Exact rotates anyway (the answer goes to
    a dead process), so the chain's refresh token is now old: the next node's refresh is refused once,
    and the chain is marked as needing a person, naming node 0. Never two refreshes inside the lease."""
    clock = _clock(200)
    emu = await _emulator(emulator, tmp_path, clock)
    first = emu.state.issue_tokens("test-app")
    nodes = await Nodes(tmp_path, redis_server.url, emu.base, clock).start()
    await clock.sleep(600)
    form = {"grant_type": "refresh_token", "client_id": "test-app", "client_secret": "test-secret"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            async with s.post(nodes.url(0) + "/api/oauth2/token",
                              data={**form, "refresh_token": first["refresh_token"]}) as r:
                assert r.status == 200  # adopted by the cluster
                held = (await r.json())["refresh_token"]
            await clock.sleep(600)  # the access token runs out: the next request refreshes upstream
            emu.state.set_faults([{"path": "/api/oauth2/token", "kind": "late", "delay": 400, "every": 1}])
            seen = emu.state.requests
            dying = asyncio.ensure_future(s.post(nodes.url(0) + "/api/oauth2/token",
                                                 data={**form, "refresh_token": held}))
            while emu.state.requests == seen:  # node 0 holds the lease and Exact has its refresh
                await asyncio.sleep(0.01)
            nodes.kill(0)
            try:
                await dying
            except aiohttp.ClientError:
                pass
            await clock.sleep(450)  # Exact has answered the dead node by now, and rotated
            emu.state.set_faults([])
            async with s.post(nodes.url(1) + "/api/oauth2/token", data={**form, "refresh_token": held}) as r:
                answer = await r.json(content_type=None)
                status1 = r.status
            async with s.post(nodes.url(2) + "/api/oauth2/token", data={**form, "refresh_token": held}) as r:
                status2 = r.status
            async with s.get(nodes.url(2) + "/_proxy/status") as r:
                shared = (await r.json())["cluster"]["token_chains"]
    finally:
        await nodes.stop()
    outcomes = Counter(r["outcome"] for r in _exact_log(tmp_path) if r["endpoint"] == "oauth2/token")
    # the adoption, the dead node's refresh (rotated at Exact), one refused try by the next node
    assert outcomes == {"ok": 2, "old_refresh_token": 1}, (outcomes, status1, answer, status2)
    assert status1 in (400, 401) and status2 in (400, 401), answer
    assert "node0" in str(answer), answer
    assert [c["needs_reauth"] for c in shared] == [True]
    assert "node0" in nodes.log(1)
