"""Issue 13, each "what was seen" item as a test: the real proxy in front of the real emulator.

One app spelled two ways, racing first refreshes, a 401 loop, queued calls with expired tokens, token
calls without an error budget, tokens without the secret, redirects, unbrokered tokens, token-less calls
and secrets at rest and in logs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from proxy.clock import ManualClock

GUID = "b81cc4de-d192-400e-bcb4-09254394c52a"
BRACED = "{" + GUID.upper() + "}"
SECRET = "guid-secret"
START = 1_790_000_000.0  # 2026-09-21, mid-day UTC
ACCOUNTS = "/api/v1/101/crm/Accounts?$select=ID&$filter=ID%20ne%20guid'00000000-0000-0000-0000-000000000000'&$top=1"
EMU = {"clients": {GUID: SECRET}}


async def authorize(s, base: str, client_id: str = BRACED, secret: str = SECRET) -> dict:
    async with s.get(f"{base}/api/oauth2/auth?client_id={client_id}&response_type=code"
                     "&redirect_uri=http%3A%2F%2Flocalhost%2Fcb", allow_redirects=False) as r:
        assert r.status in (302, 303), await r.text()
        code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    status, body = await token(s, base, {"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": "http://localhost/cb", "client_id": client_id,
                                         "client_secret": secret})
    assert status == 200, body
    return body


async def token(s, base: str, form: dict, headers: dict | None = None) -> tuple[int, dict]:
    async with s.post(f"{base}/api/oauth2/token", data=form, headers=headers or {}) as r:
        return r.status, await r.json(content_type=None)


async def refresh(s, base, refresh_token, client_id=GUID, secret: str | None = SECRET):
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    if secret is not None:
        form["client_secret"] = secret
    return await token(s, base, form)


async def get(s, base, path, access_token=None) -> int:
    headers = {"Accept": "application/json"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    async with s.get(base + path, headers=headers) as r:
        await r.read()
        return r.status


async def brokered(emulator, start_proxy, extra_yaml: str = ""):
    """The emulator (app GUID) and the proxy in front of it, on one manual clock."""
    clock = ManualClock(start=START)
    emu = await emulator(EMU, clock=clock)
    proxy = await start_proxy(emu.base, extra_yaml, clock=clock)
    return clock, emu, proxy, proxy.url("default")


def token_calls(emu, outcome=None) -> int:
    return emu.state.count(endpoint="oauth2/token", outcome=outcome)


# 1 and 8 ------------------------------------------------------------------------------------------
async def test_one_app_spelled_two_ways_is_one_chain(emulator, start_proxy):
    clock, emu, proxy, base = await brokered(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        first = await authorize(s, base, client_id=BRACED)  # exact-online-sdk's spelling
        for spelling in (GUID, GUID.upper(), f" {BRACED} "):  # ossobv, python-exact-online, a pasted one
            status, body = await refresh(s, base, first["refresh_token"], client_id=spelling)
            assert status == 200, body
            assert body["access_token"] == first["access_token"]
    assert token_calls(emu) == 1
    assert {c["app"] for c in proxy.services.tokens.snapshot()} == {GUID}


async def test_two_spellings_and_an_unbrokered_token_share_one_call_budget(emulator, start_proxy):
    clock, emu, proxy, base = await brokered(emulator, start_proxy, "limits: {max_wait: 0, pace: 0}\n")
    async with aiohttp.ClientSession() as s:
        ours = (await authorize(s, base, client_id=BRACED))["access_token"]
        unbrokered = emu.state.issue_tokens(GUID.upper(), "user-2")["access_token"]  # got elsewhere
        statuses = [await get(s, base, ACCOUNTS, t) for t in [ours, unbrokered] * 40]
    assert emu.state.count(outcome="minutely_429") == 0
    assert statuses.count(200) == 60 and statuses.count(429) == 20
    budget = next(f for f in proxy.services.filters if f.name == "call_budget")
    assert {row["app"] for row in budget.snapshot()} == {GUID}


# 2 ------------------------------------------------------------------------------------------------
async def test_concurrent_first_refreshes_reach_exact_once(emulator, start_proxy):
    clock = ManualClock(start=START)
    emu = await emulator(EMU, clock=clock)
    proxy = await start_proxy(emu.base, clock=clock)
    unknown = emu.state.issue_tokens(GUID, "user-1")["refresh_token"]  # never seen by the proxy
    await clock.advance(600)
    async with aiohttp.ClientSession() as s:
        answers = await asyncio.gather(*(refresh(s, proxy.url("default"), unknown,
                                                 client_id=(GUID if i % 2 else BRACED)) for i in range(5)))
    assert [a[0] for a in answers] == [200] * 5, answers
    assert len({a[1]["access_token"] for a in answers}) == 1
    assert token_calls(emu) == 1 and token_calls(emu, "old_refresh_token") == 0


# 3 ------------------------------------------------------------------------------------------------
async def test_a_rejected_chain_cannot_loop(emulator, start_proxy, log_output):
    """@quantix-ict/exact-online refreshes after every 401; Exact answers 401 to everything."""
    clock, emu, proxy, base = await brokered(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        await clock.advance(600)  # Exact would allow one refresh now
        emu.state.set_unauthorized(True)
        before = emu.state.requests
        requests, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 4:  # the quantix loop, for 4 s
            requests += 1
            if await get(s, base, "/api/v1/current/Me", tok["access_token"]) == 200:
                continue
            requests += 1
            status, body = await refresh(s, base, tok["refresh_token"])
            if status == 200:
                tok = body
        reached = emu.state.requests - before
        assert requests <= 10, requests  # about one a second, not 1,685 in 8 s
        assert reached <= 5, emu.state.stats()  # a Me call, one refresh, a Me call with the new token
        assert emu.state.count(endpoint="current/me", outcome="unauthorized_phase") <= 3
        snap = proxy.services.tokens.snapshot()[0]
        assert snap["needs_reauth"]
        assert "NEEDS A NEW AUTHORIZATION" in log_output.getvalue()
        async with s.get(base + "/_proxy/metrics") as r:
            assert "exact_proxy_token_chain_needs_reauth{" in (metrics := await r.text())
        assert [ln for ln in metrics.splitlines() if ln.startswith("exact_proxy_token_chain_needs_reauth{")
                and ln.endswith(" 1.0")], metrics

        # Exact takes the user back: once Exact allows a new token, the chain recovers by itself
        emu.state.set_unauthorized(False)
        await clock.advance(600)
        status, body = await refresh(s, base, tok["refresh_token"])
        assert status == 200, body
        assert await get(s, base, "/api/v1/current/Me", body["access_token"]) == 200
    assert not proxy.services.tokens.snapshot()[0]["needs_reauth"]


async def test_errors_on_current_me_have_a_budget(emulator, start_proxy):
    clock, emu, proxy, base = await brokered(emulator, start_proxy, "tokens: {substitute_expired: false}\n")
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        emu.state.set_unauthorized(True)
        statuses = [await get(s, base, "/api/v1/current/Me", tok["access_token"]) for _ in range(12)]
    assert statuses.count(429) >= 4, statuses  # answered locally before Exact's 10
    assert emu.state.count(endpoint="current/me", outcome="unauthorized_phase") <= 8
    assert not emu.state.stats()["blocks"]


# 4 ------------------------------------------------------------------------------------------------
async def test_a_queued_call_leaves_with_a_fresh_token(emulator, start_proxy):
    clock = ManualClock(start=START - START % 60 + 60)  # a whole minute
    emu = await emulator(EMU, clock=clock)
    proxy = await start_proxy(emu.base, "limits: {pace: 0}\n", clock=clock)  # 60 at once, then a queue
    base = proxy.url("default")
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        await clock.advance(590)  # 10 s of the access token left
        first = [await get(s, base, ACCOUNTS, tok["access_token"]) for _ in range(60)]
        queued = asyncio.ensure_future(get(s, base, ACCOUNTS, tok["access_token"]))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if clock.sleepers:
                break
        await clock.advance(60)  # the next minute: the call leaves, its token expired 50 s ago
        status = await asyncio.wait_for(queued, 10)
    assert set(first) == {200} and status == 200
    assert emu.state.count(outcome="token_expired") == 0


# 5 ------------------------------------------------------------------------------------------------
async def test_a_stale_refresh_token_in_a_loop_costs_exact_one_call(emulator, start_proxy):
    clock, emu, proxy, base = await brokered(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        answers = [await refresh(s, base, "Gcp7!IAAAstale-token-of-long-ago") for _ in range(12)]
        assert {a[0] for a in answers} == {400}
        assert token_calls(emu) == 1
        assert (await authorize(s, base))["access_token"]  # the next legitimate code exchange works


async def test_token_endpoint_errors_stop_before_exact_blocks(emulator, start_proxy):
    clock, emu, proxy, base = await brokered(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        answers = [await refresh(s, base, f"Gcp7!IAAAinvalid-{i}") for i in range(12)]
    assert [a[0] for a in answers] == [400] * 8 + [429] * 4
    assert "error budget" in answers[-1][1]["error_description"]
    assert token_calls(emu) == 8 and not emu.state.stats()["blocks"]


async def test_daily_token_calls_cover_adoptions(emulator, start_proxy):
    clock = ManualClock(start=START)
    emu = await emulator(EMU, clock=clock)
    proxy = await start_proxy(emu.base, "tokens: {daily_token_calls: 2}\n", clock=clock)
    async with aiohttp.ClientSession() as s:
        answers = [await refresh(s, proxy.url("default"), f"Gcp7!IAAAunknown-{i}") for i in range(3)]
    assert [a[0] for a in answers] == [400, 400, 429]
    assert token_calls(emu) == 2


# 6 ------------------------------------------------------------------------------------------------
async def test_no_token_without_the_client_secret(emulator, start_proxy):
    clock, emu, proxy, base = await brokered(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        first = await authorize(s, base)
        await clock.advance(600)
        status, second = await refresh(s, base, first["refresh_token"])
        assert status == 200 and second["refresh_token"] != first["refresh_token"]
        for rt in (first["refresh_token"], second["refresh_token"]):  # rotated away, and current
            for secret in (None, "wrong"):
                status, body = await refresh(s, base, rt, secret=secret)
                assert status == 401 and body["error"] == "invalid_client", body
                assert "access_token" not in body
        basic = "Basic " + base64.b64encode(f"{GUID}:{SECRET}".encode()).decode()
        status, body = await token(s, base, {"grant_type": "refresh_token",
                                             "refresh_token": second["refresh_token"]}, {"Authorization": basic})
        assert status == 200 and body["access_token"] == second["access_token"]


# 7 ------------------------------------------------------------------------------------------------
async def test_the_broker_never_follows_a_redirect(aiohttp_server, start_proxy, log_output):
    stolen: list[str] = []

    async def thief(request):
        stolen.append(await request.text())
        return web.json_response({"access_token": "x", "refresh_token": "y", "expires_in": "600"})

    other = web.Application()
    other.router.add_route("*", "/{tail:.*}", thief)
    elsewhere = await aiohttp_server(other)

    async def redirect(request):
        raise web.HTTPTemporaryRedirect(str(elsewhere.make_url("/api/oauth2/token")))

    exact = web.Application()
    exact.router.add_route("*", "/{tail:.*}", redirect)
    upstream = await aiohttp_server(exact)
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s:
        status, body = await refresh(s, proxy.url("default"), "Gcp7!IAAAsome-refresh-token")
    assert status == 502 and "redirect" in body["error_description"]
    assert stolen == []
    assert "ERROR" in log_output.getvalue() and "not followed" in log_output.getvalue()


# 9 ------------------------------------------------------------------------------------------------
async def test_token_less_calls_never_spend_an_apps_error_budget(emulator, start_proxy):
    clock, emu, proxy, base = await brokered(emulator, start_proxy)
    unbrokered = emu.state.issue_tokens(GUID, "user-2")["access_token"]  # a tool with its own token
    async with aiohttp.ClientSession() as s:
        anonymous = [await get(s, base, ACCOUNTS) for _ in range(10)]
        assert set(anonymous) <= {401, 429}
        assert await get(s, base, ACCOUNTS, unbrokered) == 200
        tok = await authorize(s, base)
        assert await get(s, base, ACCOUNTS, tok["access_token"]) == 200


# 10 -----------------------------------------------------------------------------------------------
async def test_chains_are_sealed_at_start_once_a_key_is_set(emulator, start_proxy, tmp_path, log_output,
                                                            monkeypatch):
    from proxy.tokens.sealing import ENV, new_key

    clock = ManualClock(start=START)
    emu = await emulator(EMU, clock=clock)
    monkeypatch.delenv(ENV, raising=False)
    proxy = await start_proxy(emu.base, clock=clock)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, proxy.url("default"))
    await proxy.stop()
    monkeypatch.setenv(ENV, new_key())
    proxy = await start_proxy(emu.base, clock=clock)
    assert "1 chain(s) stored in plain text were sealed" in log_output.getvalue()
    await proxy.stop()
    raw = b""
    for name in os.listdir(tmp_path):
        if name.startswith("state.sqlite"):
            raw += (tmp_path / name).read_bytes()
    assert tok["refresh_token"].encode() not in raw and tok["access_token"].encode() not in raw
    rows = sqlite3.connect(tmp_path / "state.sqlite").execute("select count(*) from state where namespace = 'token_chains'").fetchone()
    assert rows[0] >= 1


async def test_a_known_token_is_masked_in_a_path_segment(emulator, start_proxy, log_output):
    clock, emu, proxy, base = await brokered(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        await get(s, base, "/api/v1/current/" + tok["access_token"])
        await get(s, base, "/api/v1/current/" + tok["refresh_token"].replace("!", "%21") + "/x")
    logged = log_output.getvalue()
    assert "/api/v1/current/" in logged
    assert tok["access_token"] not in logged and tok["refresh_token"] not in logged
    assert tok["refresh_token"].split("!", 1)[1] not in logged


async def test_an_outage_that_ends_is_noticed_by_a_test_call(emulator, start_proxy):
    """Exact answered 401 to everything for a while; the chain's token is good again afterwards."""
    clock, emu, proxy, base = await brokered(emulator, start_proxy, "tokens: {loop_delay: 0}\n")
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        emu.state.set_unauthorized(True)
        assert await get(s, base, "/api/v1/current/Me", tok["access_token"]) == 401
        emu.state.set_unauthorized(False)
        assert await get(s, base, "/api/v1/current/Me", tok["access_token"]) == 503  # not yet tested again
        await clock.advance(6)
        assert await get(s, base, "/api/v1/current/Me", tok["access_token"]) == 200  # the test call
        assert await get(s, base, ACCOUNTS, tok["access_token"]) == 200
    assert not proxy.services.tokens.snapshot()[0]["needs_reauth"]
    assert emu.state.count(endpoint="current/me", outcome="unauthorized_phase") == 1
    assert token_calls(emu) == 1  # no refresh was needed
