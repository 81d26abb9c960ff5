"""The token broker end to end: tools sharing one app through the real proxy, in front of the emulator.

Exact's rules (emulator): access tokens live 600 s, a new token only 570 s after the last, refresh tokens
rotate, 200 token calls a day. The clock is a ManualClock, so half an hour of refreshing takes a second.
"""

from __future__ import annotations

import asyncio
import base64
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from proxy.clock import ManualClock

CLIENT, SECRET = "test-app", "test-secret"
BASIC = "Basic " + base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode()
START = 1_790_000_000.0  # 2026-09-21, mid-day UTC
ACCOUNTS = "/api/v1/101/crm/Accounts?$select=ID&$filter=ID%20ne%20guid'00000000-0000-0000-0000-000000000000'&$top=1"


async def authorize(session: aiohttp.ClientSession, base: str, basic: bool = False) -> dict:
    """The code flow through ``base``, as a tool would do it."""
    async with session.get(f"{base}/api/oauth2/auth?client_id={CLIENT}&response_type=code"
                           "&redirect_uri=http%3A%2F%2Flocalhost%2Fcb", allow_redirects=False) as r:
        assert r.status in (302, 303), await r.text()
        code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost/cb"}
    headers = {}
    if basic:
        headers["Authorization"] = BASIC
    else:
        form.update(client_id=CLIENT, client_secret=SECRET)
    async with session.post(f"{base}/api/oauth2/token", data=form, headers=headers) as r:
        body = await r.json(content_type=None)
        assert r.status == 200, body
    assert isinstance(body["expires_in"], str)
    return body


async def refresh(session, base, refresh_token, basic=False):
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    headers = {"Authorization": BASIC} if basic else {}
    if not basic:
        form.update(client_id=CLIENT, client_secret=SECRET)
    async with session.post(f"{base}/api/oauth2/token", data=form, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def api_call(session, base, access_token):
    async with session.get(base + ACCOUNTS, headers={"Authorization": f"Bearer {access_token}",
                                                     "Accept": "application/json"}) as r:
        await r.read()
        return r.status


def token_calls(emu, outcome=None) -> int:
    return emu.state.count(endpoint="oauth2/token", outcome=outcome)


async def test_five_tools_share_one_refresh_token(emulator, start_proxy, log_output):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, clock=clock)
    base = proxy.url("default")
    seen_tokens: set[str] = {SECRET}
    async with aiohttp.ClientSession() as s:
        first = await authorize(s, base)
        tools = [dict(first) for _ in range(5)]
        seen_tokens |= {first["access_token"], first["refresh_token"]}
        statuses: list[int] = []

        async def tool(i: int, t: dict) -> None:
            status, body = await refresh(s, base, t["refresh_token"], basic=(i % 2 == 0))
            assert status == 200, body
            seen_tokens.update((body["access_token"], body["refresh_token"]))
            if i != 4:  # tool 4 keeps presenting the refresh token it was configured with
                t.update(body)
            else:
                t["access_token"] = body["access_token"]
            statuses.append(await api_call(s, base, t["access_token"]))

        for _ in range(60):  # 60 x 30 s: three access-token lifetimes, every tool refreshing every time
            await clock.advance(30)
            await asyncio.gather(*(tool(i, t) for i, t in enumerate(tools)))

    assert set(statuses) == {200}
    assert token_calls(emu, "too_early") == 0
    assert token_calls(emu, "old_refresh_token") == 0
    # one code exchange, then exactly one refresh per token lifetime (at 600, 1200 and 1800 s)
    assert token_calls(emu) == 4, emu.state.stats()
    logged = log_output.getvalue()
    assert logged and not [tok for tok in seen_tokens if tok in logged]


async def test_tool_that_refreshes_only_after_a_401_never_sees_one(emulator, start_proxy):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, clock=clock)
    base = proxy.url("default")
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        statuses = []
        for _ in range(40):  # 40 minutes with the first access token
            await clock.advance(60)
            statuses.append(await api_call(s, base, tok["access_token"]))
    assert set(statuses) == {200}
    assert emu.state.count(outcome="token_expired") == 0 and emu.state.count(outcome="unauthorized") == 0
    assert token_calls(emu, "too_early") == 0


async def test_daily_token_cap_is_respected(emulator, start_proxy):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, "tokens: {daily_token_calls: 3}\n", clock=clock)
    base = proxy.url("default")
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base, basic=True)
        answers = []
        for _ in range(4):
            await clock.advance(600)
            status, body = await refresh(s, base, tok["refresh_token"])
            answers.append((status, body))
            if status == 200:
                tok = body
    assert [a[0] for a in answers] == [200, 200, 429, 429]
    assert "daily token-call budget" in answers[2][1]["error_description"]
    assert token_calls(emu) == 3


async def test_chains_survive_a_restart(emulator, start_proxy):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, clock=clock)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, proxy.url("default"))
        await proxy.stop()
        proxy2 = await start_proxy(emu.base, clock=clock)
        await clock.advance(60)
        status, body = await refresh(s, proxy2.url("default"), tok["refresh_token"])
    assert status == 200 and body["refresh_token"] == tok["refresh_token"]
    assert token_calls(emu) == 1  # answered from the restored chain, Exact never asked


async def test_keepalive_refreshes_an_idle_chain(emulator, start_proxy):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, "tokens: {keepalive_after: 3600}\n", clock=clock)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, proxy.url("default"))
        for _ in range(70):  # a little over an hour of idleness, in keep-alive ticks
            await clock.advance(60)
            for _ in range(5):
                await asyncio.sleep(0)
        for _ in range(50):
            if token_calls(emu) >= 2:
                break
            await asyncio.sleep(0.01)
        assert token_calls(emu) == 2 and token_calls(emu, "ok") == 2
        status, body = await refresh(s, proxy.url("default"), tok["refresh_token"])
    assert status == 200 and body["refresh_token"] != tok["refresh_token"]


@pytest.mark.parametrize("basic", [False, True])
async def test_basic_and_body_credentials(emulator, start_proxy, basic):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, clock=clock)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, proxy.url("default"), basic=basic)
        await clock.advance(600)
        status, body = await refresh(s, proxy.url("default"), tok["refresh_token"], basic=basic)
    assert status == 200, body
    assert token_calls(emu) == 2
