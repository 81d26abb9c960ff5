"""Shares of the day (proxy/filters/call_budget.py with proxy/limits/shares.py) end to end: tools through
the real proxy in front of the emulator, on one ManualClock; the status page, the metrics and the log
show each share's use per division; cluster mode refuses shares at start."""

from __future__ import annotations

import asyncio
import types

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.cluster.settings import ClusterError
from proxy.filters.call_budget import CallBudget
from proxy.policy import parse_policy
from tests.test_call_budget import Driver

DAY0 = 1_795_564_800.0  # 2026-11-25T00:00:00Z
URL = "/api/v1/{div}/crm/Contacts?$select=ID&$top=1"


async def setup(emulator, start_proxy, limits: str, start: float):
    clock = ManualClock(start=start)
    emu = await emulator(config={"access_token_lifetime": 10 ** 7}, clock=clock)
    proxy = await start_proxy(emu.base, "limits:\n" + limits, clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    return clock, emu, proxy, {"Authorization": f"Bearer {token}", "Accept": "application/json"}


RESERVE = """  daily: 30
  probe: false
  shares:
    - {name: interactive, match: {user_agent: "*Excel*"}, reserve: {day: 10, minute: 5}}
"""


async def test_a_reserve_keeps_the_days_last_calls_for_the_interactive_tool(emulator, start_proxy, log_output):
    clock, emu, proxy, h = await setup(emulator, start_proxy, RESERVE, DAY0 + 9 * 3600 + 5)
    base = proxy.url("default") + URL.format(div=7)
    excel = {**h, "User-Agent": "Microsoft Office Excel 2016"}
    async with aiohttp.ClientSession() as s:
        for _minute in range(2):  # 20 calls of the batch, 10 a minute (the minute reserve holds 5 back)
            for _ in range(10):
                async with s.get(base, headers={**h, "User-Agent": "etl/1"}) as r:
                    assert r.status == 200
            await clock.advance(60)
        async with s.get(base, headers={**h, "User-Agent": "etl/1"}) as r:
            assert r.status == 429
            body = await r.json()
            assert r.headers["X-RateLimit-Remaining"] == "0"
            assert r.headers["X-RateLimit-Reset"] == str(int((DAY0 + 86400) * 1000))
            assert int(r.headers["Retry-After"]) == pytest.approx(86400 - 9 * 3600 - 125, abs=2)
        assert "reserved for share interactive" in body["error"]["message"]["value"]
        for _ in range(5):
            async with s.get(base, headers=excel) as r:
                assert r.status == 200
        async with s.get(proxy.url("default") + "/_proxy/status") as r:
            status = await r.json()
        async with s.get(proxy.url("default") + "/_proxy/metrics") as r:
            metrics = await r.text()
    row = next(d for d in status["call_budget"] if d["division"] == 7)
    assert row["today"] == "25/30"
    assert row["shares"] == [{"share": "interactive", "today": 5, "minute": 5, "reserve_left": "0/5"}]
    assert 'exact_proxy_share_calls{app="unknown",division="7",share="interactive",window="day"} 5.0' in metrics
    assert "refused (share interactive: reserve) retry after" in log_output.getvalue()
    assert emu.state.count(outcome="ok") == 25


PACE = """  probe: false
  max_wait: 7200
  tools: [{match: {user_agent: "impatient*"}, max_wait: 10}]
  shares:
    - {name: replication, match: {user_agent: "*etl*"}, pace: {calls: 4, from: "00:00", to: "00:04"}}
"""


async def test_a_paced_job_waits_in_the_queue_for_its_turn_or_is_told_when(emulator, start_proxy, log_output):
    clock, emu, proxy, h = await setup(emulator, start_proxy, PACE, DAY0)
    driver = Driver(clock, proxy, emu)
    base = proxy.url("default") + URL.format(div=8)
    times: list[float] = []
    async with aiohttp.ClientSession() as s:
        async def job() -> None:
            for _ in range(4):
                driver.open += 1
                async with s.get(base, headers={**h, "User-Agent": "my-etl/2"}) as r:
                    assert r.status == 200
                driver.open -= 1
                times.append(clock.time() - DAY0)

        await driver.run(job())
        assert times == pytest.approx([0, 60, 120, 180], abs=1)  # evenly over 00:00-00:04
        async with s.get(base, headers={**h, "User-Agent": "impatient etl"}) as r:
            assert r.status == 429
            body = await r.json()
            assert r.headers["X-RateLimit-Minutely-Reset"] == str(int((DAY0 + 240) * 1000))
        assert "share replication is paced" in body["error"]["message"]["value"]
        async with s.get(base, headers=h) as r:  # other tools are not held
            assert r.status == 200
    log = log_output.getvalue()
    assert "share replication: paced, next call at 2026-11-25T00:01:00Z" in log
    assert "refused (share replication: paced) retry after" in log


async def test_without_shares_the_call_budget_makes_no_share_board(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy, "  probe: false\n", DAY0)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url("default") + URL.format(div=9), headers=h) as r:
            assert r.status == 200
    budget = next(f for f in proxy.services.filters if f.name == "call_budget")
    assert budget.book.boards == {} and "shares" not in budget.book.snapshot()[0]


def test_cluster_mode_refuses_to_start_with_shares():
    policy = parse_policy("limits:\n" + RESERVE, "policies.yaml")
    services = types.SimpleNamespace(clock=ManualClock(), cluster=object(), policy=policy)
    with pytest.raises(ClusterError, match="limits.shares is not supported in cluster mode"):
        CallBudget(services)  # type: ignore[arg-type]


async def test_shares_reloaded_in_cluster_mode_are_ignored(caplog):
    """The check on each request: a reload that adds shares in cluster mode leaves the shared windows in
    charge, with one ERROR."""
    policy = parse_policy("limits:\n" + RESERVE, "policies.yaml")
    budget = CallBudget.__new__(CallBudget)
    budget.shared = object()  # type: ignore[assignment]
    budget._ignored_shares = None
    ctx = types.SimpleNamespace(listener=types.SimpleNamespace(name="default"), request=types.SimpleNamespace(
        headers={}))
    for _ in range(2):
        assert budget._gate(ctx, policy.limits, None) is None  # type: ignore[arg-type]
    assert [r.levelname for r in caplog.records if "not supported in cluster mode" in r.getMessage()] == ["ERROR"]
    await asyncio.sleep(0)


CAPPED = """  probe: false
  shares:
    - {name: batch, match: {user_agent: "etl*"}, cap: {day: 6}}
"""


async def test_a_shares_counts_outlive_a_restart_the_same_day(emulator, start_proxy, tmp_path):
    """Every counter is kept in the state file: a capped batch tool does not get its day's cap again
    because the proxy restarted."""
    clock = ManualClock(start=DAY0 + 10 * 3600)
    emu = await emulator(config={"access_token_lifetime": 10 ** 7}, clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    etl = {"Authorization": f"Bearer {token}", "Accept": "application/json", "User-Agent": "etl/1"}
    state = str(tmp_path / "shares.sqlite")
    proxy = await start_proxy(emu.base, "limits:\n" + CAPPED, clock=clock, state_path=state)
    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            async with s.get(proxy.url("default") + URL.format(div=7), headers=etl) as r:
                assert r.status == 200
    await proxy.stop()  # a clean stop writes the exact counts
    await clock.advance(120)
    proxy = await start_proxy(emu.base, "limits:\n" + CAPPED, clock=clock, state_path=state)
    statuses = []
    async with aiohttp.ClientSession() as s:
        for _ in range(4):
            async with s.get(proxy.url("default") + URL.format(div=7), headers=etl) as r:
                statuses.append(r.status)
    assert statuses == [200, 200, 429, 429]  # 4 + 2 = the cap of 6 for the day
    assert emu.state.count(division=7, outcome="ok") == 6
