"""The error budget through the real proxy in front of the emulator (Exact's real error block)."""

from __future__ import annotations

import aiohttp

from proxy.clock import ManualClock

START = 1_790_000_000.0


async def setup(emulator, start_proxy, extra=""):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, extra, clock=clock)
    token = emu.state.issue_tokens("test-app")["access_token"]
    return clock, emu, proxy, {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def get(s, url, h):
    async with s.get(url, headers=h) as r:
        await r.read()
        return r.status, r.headers


async def test_looping_over_a_deleted_record(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy)
    gone = emu.state.deleted_account_id(11)
    async with aiohttp.ClientSession() as s:
        for _ in range(30):
            status, _ = await get(s, f"{proxy.url()}/api/v1/11/crm/Accounts(guid'{gone}')", h)
            assert status == 404
            await clock.advance(5)
    assert emu.state.count(outcome="not_found") <= 1 and emu.state.count(outcome="error_block") == 0


async def test_many_missing_records_and_bad_filters_never_get_the_app_blocked(emulator, start_proxy):
    clock, emu, proxy, h = await setup(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        missing = [await get(s, f"{proxy.url()}/api/v1/12/crm/Accounts(guid'{i:08d}-0000-0000-0000-000000000000')", h)
                   for i in range(30)]
        bad = [await get(s, f"{proxy.url()}/api/v1/12/logistics/Items?$filter=Bogus%20eq%20{i}%20and", h)
               for i in range(30)]
        ok = await get(s, f"{proxy.url()}/api/v1/12/crm/Contacts?$top=1", h)
        assert ok[0] == 200  # other endpoints flow on
        assert [m[0] for m in missing][:8] == [404] * 8 and {m[0] for m in missing[8:]} == {429}
        assert [b[0] for b in bad][:8] == [400] * 8 and {b[0] for b in bad[8:]} == {429}
        assert emu.state.count(outcome="error_block") == 0
        assert emu.state.count(division=12, endpoint="crm/accounts") == 8
        await clock.advance(3601)  # after the hour the endpoint works again
        account = emu.state.account_ids(12)[0]
        h["Authorization"] = "Bearer " + emu.state.issue_tokens("test-app")["access_token"]  # an hour later
        status, headers = await get(s, f"{proxy.url()}/api/v1/12/crm/Accounts(guid'{account}')", h)
    assert status == 200 and headers["X-ErrorLimit-Remaining"] == "8"


async def test_thirty_simultaneous_bad_requests_let_at_most_the_budget_reach_exact(emulator, start_proxy):
    """Reserve before forward: 30 different missing records at once, one endpoint. If all went out
    together Exact would count 30 errors and block the app; the proxy lets at most 8 be in flight."""
    import asyncio

    clock, emu, proxy, h = await setup(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*(
            get(s, f"{proxy.url()}/api/v1/13/crm/Accounts(guid'{i:08d}-0000-0000-0000-000000000000')", h)
            for i in range(30)))
        statuses = sorted(r[0] for r in results)
        ok = await get(s, f"{proxy.url()}/api/v1/13/crm/Contacts?$top=1", h)
    assert statuses.count(404) == 8 and statuses.count(429) == 22, statuses
    assert emu.state.count(division=13, endpoint="crm/accounts") == 8
    assert emu.state.count(outcome="error_block") == 0 and ok[0] == 200
