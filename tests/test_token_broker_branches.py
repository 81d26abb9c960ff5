"""The token broker's riskiest branches, through the real proxy in front of the real emulator.

- Exact says ``TooEarlyToRefreshTokens`` although the proxy's own 570 s have passed (this Exact wants
  900): one such answer, then the chain waits out Exact's ``Retry-After`` without asking again.
- A chain whose refresh token Exact revoked needs a person: the proxy asks Exact once when it allows a
  new token, then answers every tool locally until someone authorizes again, and the tools follow the
  new chain with the tokens they still hold.
- A refresh token the proxy never saw is adopted as a chain; a second tool presenting that (now earlier)
  token is answered from the chain, so Exact never sees an old refresh token.

The clock is a ManualClock shared by proxy and emulator.
"""

from __future__ import annotations

import aiohttp

from proxy.clock import ManualClock
from tests.test_token_broker_e2e import ACCOUNTS, CLIENT, SECRET, START, authorize, token_calls

NO_DELAY = "tokens: {loop_delay: 0}\n"


async def refresh(s: aiohttp.ClientSession, base: str, refresh_token: str) -> tuple[int, dict, dict]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": CLIENT,
        "client_secret": SECRET,
    }
    async with s.post(f"{base}/api/oauth2/token", data=form) as r:
        return r.status, await r.json(content_type=None), dict(r.headers)


async def api_call(s: aiohttp.ClientSession, base: str, access_token: str) -> int:
    async with s.get(
        base + ACCOUNTS, headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    ) as r:
        await r.read()
        return r.status


async def _start(emulator, start_proxy, emulator_config: dict | None = None, extra_yaml: str = NO_DELAY):
    clock = ManualClock(start=START)
    emu = await emulator(emulator_config, clock=clock)
    proxy = await start_proxy(emu.base, extra_yaml, clock=clock)
    return clock, emu, proxy, proxy.url("default")


async def test_too_early_from_exact_pauses_the_chain_for_exacts_retry_after_and_costs_one_call(
    emulator, start_proxy, log_output
):
    clock, emu, proxy, base = await _start(emulator, start_proxy, {"min_refresh_interval": 900})
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        await clock.advance(580)  # the proxy's 570 s are over; this Exact wants 900
        status, body, _ = await refresh(s, base, tok["refresh_token"])
        assert status == 200 and body["access_token"] == tok["access_token"]  # 20 s left: the tool keeps it
        assert token_calls(emu, "too_early") == 1
        assert "TooEarlyToRefreshTokens" in log_output.getvalue()

        during: list[tuple[float, tuple[int, dict, dict]]] = []
        calls: list[int] = []
        for _ in range(10):  # 610 .. 880 s: the token has expired, Exact allows none before 900
            await clock.advance(30)
            during.append((clock.time(), await refresh(s, base, tok["refresh_token"])))
            calls.append(await api_call(s, base, tok["access_token"]))
        assert token_calls(emu, "too_early") == 1  # not asked again during Exact's pause
        for now, (status, body, headers) in during:  # never 400/401: a tool would take its token for dead
            assert status == 429 and body["error"] == "temporarily_unavailable", body
            assert START + 900 <= now + int(headers["Retry-After"]) <= START + 901  # when Exact allows one
        assert set(calls) == {429}  # not sent with an expired token
        assert emu.state.count(outcome="token_expired") == 0

        await clock.advance(30)  # 910 s: Exact allows the next token
        status, body, _ = await refresh(s, base, tok["refresh_token"])
        assert status == 200 and body["access_token"] != tok["access_token"], body
        assert await api_call(s, base, body["access_token"]) == 200
        assert await api_call(s, base, tok["access_token"]) == 200  # an old holder: substituted
    assert token_calls(emu) == 3 and token_calls(emu, "ok") == 2  # the code, one too early, one refresh
    assert emu.state.count(outcome="token_expired") == 0


async def test_a_chain_whose_refresh_token_exact_revoked_needs_a_person_and_tools_follow_the_new_one(
    emulator, start_proxy, log_output
):
    clock, emu, proxy, base = await _start(emulator, start_proxy)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, base)
        assert await api_call(s, base, tok["access_token"]) == 200
        assert emu.state.revoke(refresh=True) == 1
        reached, tokens_before = emu.state.requests, token_calls(emu)

        assert await api_call(s, base, tok["access_token"]) == 401  # Exact's own answer, once
        early = [await refresh(s, base, tok["refresh_token"]) for _ in range(3)]
        for status, body, headers in early:  # Exact allows no new token before 570 s: nothing to ask it
            assert status == 429 and int(headers["Retry-After"]) > 500, body
        assert token_calls(emu) == tokens_before

        await clock.advance(600)  # now the proxy asks Exact once, and Exact refuses the refresh token
        late = [await refresh(s, base, tok["refresh_token"]) for _ in range(5)]
        for status, body, _ in late:
            assert status == 400 and body["error"] == "invalid_grant", body
        assert token_calls(emu) == tokens_before + 1 and token_calls(emu, "invalid_grant") == 1
        statuses = []
        for _ in range(10):
            await clock.advance(60)
            statuses.append(await api_call(s, base, tok["access_token"]))
        assert 401 in statuses and set(statuses) <= {401}
        assert emu.state.requests - reached <= 1 + 1 + 4  # one 401, one refresh, a handful of test calls
        (snap,) = proxy.services.tokens.snapshot()
        assert snap["needs_reauth"] and "NEEDS A NEW AUTHORIZATION" in log_output.getvalue()

        fresh = await authorize(s, base)  # a person authorizes again, through the proxy
        status, body, _ = await refresh(s, base, tok["refresh_token"])  # a tool with the old chain's token
        assert status == 200 and body["access_token"] == fresh["access_token"], body
        assert await api_call(s, base, tok["access_token"]) == 200  # the old access token: substituted
    (snap,) = proxy.services.tokens.snapshot()
    assert not snap["needs_reauth"]
    assert token_calls(emu, "old_refresh_token") == 0


async def test_an_adopted_refresh_token_presented_again_is_answered_from_the_chain(
    emulator, start_proxy, log_output
):
    clock, emu, proxy, base = await _start(emulator, start_proxy)
    unknown = emu.state.issue_tokens(CLIENT, "user-1")["refresh_token"]  # got before the proxy was there
    await clock.advance(600)
    async with aiohttp.ClientSession() as s:
        status, first, _ = await refresh(s, base, unknown)  # tool A: adopted, one call to Exact
        assert status == 200 and first["refresh_token"] != unknown, first
        assert token_calls(emu) == 1

        await clock.advance(60)
        status, second, _ = await refresh(s, base, unknown)  # tool B, configured with the same token
        assert status == 200 and second["access_token"] == first["access_token"], second
        assert second["refresh_token"] == first["refresh_token"] and token_calls(emu) == 1
        assert await api_call(s, base, second["access_token"]) == 200
        assert "(earlier refresh token)" in log_output.getvalue()

        await clock.advance(600)  # both tokens are earlier ones now: one refresh for both tools
        status, b_again, _ = await refresh(s, base, unknown)
        status_a, a_again, _ = await refresh(s, base, first["refresh_token"])
        assert status == status_a == 200 and a_again["access_token"] == b_again["access_token"]
        assert b_again["access_token"] != first["access_token"]
    assert token_calls(emu) == 2
    assert token_calls(emu, "old_refresh_token") == 0 and token_calls(emu, "too_early") == 0
    assert len(proxy.services.tokens.snapshot()) == 1
