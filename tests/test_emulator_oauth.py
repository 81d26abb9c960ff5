"""Emulator conformance: OAuth as Exact does it (exact-online-api.md §3), over HTTP with a ManualClock."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pytest

from proxy.clock import ManualClock
from proxy.emulator import EMULATOR, EmulatorConfig, create_app

START = 1_795_600_800  # 2026-11-25T10:00:00Z
CREDS = {"client_id": "test-app", "client_secret": "test-secret"}


async def start(aiohttp_client, config: dict | None = None):
    clock = ManualClock(START)
    app = create_app(EmulatorConfig.from_dict(config or {}), clock)
    return await aiohttp_client(app), app[EMULATOR], clock


async def code(client, user: str | None = None, client_id: str = "test-app") -> str:
    q = f"client_id={client_id}&redirect_uri=http://localhost/cb&response_type=code&state=xyz"
    resp = await client.get("/api/oauth2/auth?" + q + (f"&user={user}" if user else ""), allow_redirects=False)
    assert resp.status == 302
    loc = urlsplit(resp.headers["Location"])
    params = parse_qs(loc.query)
    assert loc.netloc == "localhost" and loc.path == "/cb" and params["state"] == ["xyz"]
    return params["code"][0]


async def token(client, **form):
    resp = await client.post("/api/oauth2/token", data={**CREDS, **form})
    return resp, await resp.json()


async def refresh(client, rt: str):
    return await token(client, grant_type="refresh_token", refresh_token=rt)


async def test_code_flow_answer_shape(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    resp, body = await token(client, grant_type="authorization_code", code=await code(client),
                             redirect_uri="http://localhost/cb")
    assert resp.status == 200
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == "600" and "!" in body["refresh_token"]
    me = await client.get("/api/v1/current/Me", headers={"Authorization": "Bearer " + body["access_token"],
                                                          "Accept": "application/json"})
    d = (await me.json())["d"]["results"][0]
    assert d["CurrentDivision"] == 7095 and d["UserName"] == "user-1"
    assert emu.count("ok", endpoint="oauth2/token") == 1


@pytest.mark.parametrize("delay,reuse", [(0, True), (180, False), (179, False)])
async def test_codes_single_use_and_three_minutes(aiohttp_client, delay, reuse):
    client, emu, clock = await start(aiohttp_client)
    c = await code(client)
    await clock.advance(delay)
    resp, body = await token(client, grant_type="authorization_code", code=c)
    if delay >= 180:
        assert resp.status == 400 and body["error"] == "invalid_grant"
        return
    assert resp.status == 200
    resp, body = await token(client, grant_type="authorization_code", code=c)
    assert resp.status == 400 and body["error"] == "invalid_grant"


@pytest.mark.parametrize("how,secret,status", [("body", "test-secret", 200), ("basic", "test-secret", 200),
                                               ("body", "wrong", 401), ("basic", "wrong", 401)])
async def test_client_credentials_in_body_or_basic(aiohttp_client, how, secret, status):
    client, emu, clock = await start(aiohttp_client)
    form = {"grant_type": "authorization_code", "code": await code(client)}
    headers = {}
    if how == "body":
        form.update(client_id="test-app", client_secret=secret)
    else:
        headers["Authorization"] = "Basic " + base64.b64encode(f"test-app:{secret}".encode()).decode()
    resp = await client.post("/api/oauth2/token", data=form, headers=headers)
    assert resp.status == status
    if status == 401:
        assert (await resp.json())["error"] == "invalid_client"


async def test_too_early_then_allowed_at_570s(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    pair = emu.issue_tokens()
    await clock.advance(100)
    resp, body = await refresh(client, pair["refresh_token"])
    assert resp.status == 400
    assert resp.headers["Reason"] == "TooEarlyToRefreshTokens: Rate limit exceeded: access_token not expired"
    assert resp.headers["Retry-After"] == "470"
    assert body == {"error": "access_denied", "error_description": "Rate limit exceeded: access_token not expired"}
    assert emu.count("too_early") == 1
    await clock.advance(469.9)
    assert (await refresh(client, pair["refresh_token"]))[0].status == 400
    await clock.advance(0.1)
    resp, body = await refresh(client, pair["refresh_token"])
    assert resp.status == 200 and body["refresh_token"] != pair["refresh_token"]


async def test_rotation_old_refresh_token(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    pair = emu.issue_tokens()
    await clock.advance(570)
    resp, new = await refresh(client, pair["refresh_token"])
    assert resp.status == 200
    await clock.advance(600)
    resp, body = await refresh(client, pair["refresh_token"])
    assert resp.status == 401
    assert body == {"error": "unauthorized_client", "error_description": "Old refresh token used."}
    assert emu.count("old_refresh_token") == 1
    assert (await refresh(client, new["refresh_token"]))[0].status == 200


@pytest.mark.parametrize("grace,after,status", [(0, 1, 401), (30, 10, 200), (30, 31, 401)])
async def test_old_refresh_grace(aiohttp_client, grace, after, status):
    client, emu, clock = await start(aiohttp_client, {"old_refresh_grace": grace, "min_refresh_interval": 0})
    pair = emu.issue_tokens()
    assert (await refresh(client, pair["refresh_token"]))[0].status == 200
    await clock.advance(after)
    assert (await refresh(client, pair["refresh_token"]))[0].status == status


@pytest.mark.parametrize("invalidates,status", [(False, 200), (True, 401)])
async def test_too_early_invalidates_setting(aiohttp_client, invalidates, status):
    client, emu, clock = await start(aiohttp_client, {"too_early_invalidates": invalidates})
    pair = emu.issue_tokens()
    assert (await refresh(client, pair["refresh_token"]))[0].status == 400
    await clock.advance(600)
    assert (await refresh(client, pair["refresh_token"]))[0].status == status


async def test_refresh_token_expires(aiohttp_client):
    client, emu, clock = await start(aiohttp_client, {"refresh_token_lifetime": 30 * 86400})
    pair = emu.issue_tokens()
    await clock.advance(30 * 86400 + 5)
    resp, body = await refresh(client, pair["refresh_token"])
    assert resp.status == 400 and body["error"] == "invalid_request"
    assert body["error_description"] == ("The refresh token expired at 12/25/2026 10:00:00 AM and it is now "
                                         "12/25/2026 10:00:05 AM.")
    assert emu.count("refresh_expired") == 1


async def test_daily_token_call_cap_resets_next_utc_day(aiohttp_client):
    client, emu, clock = await start(aiohttp_client, {"daily_token_calls": 3, "min_refresh_interval": 0})
    rt = emu.issue_tokens()["refresh_token"]  # not a token call
    for _ in range(3):
        resp, body = await refresh(client, rt)
        assert resp.status == 200
        rt = body["refresh_token"]
    resp, body = await refresh(client, rt)
    assert resp.status == 429 and body["error"] == "access_denied"
    assert emu.count("token_daily_limit") == 1
    await clock.set_time(START + 14 * 3600)
    assert (await refresh(client, rt))[0].status == 200
    assert emu.stats()["token_calls"] == 5


async def test_users_have_their_own_chains(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    a = (await token(client, grant_type="authorization_code", code=await code(client, "alice")))[1]
    b = (await token(client, grant_type="authorization_code", code=await code(client, "bob")))[1]
    await clock.advance(570)
    assert (await refresh(client, a["refresh_token"]))[0].status == 200
    assert (await refresh(client, b["refresh_token"]))[0].status == 200  # alice's refresh is not bob's


@pytest.mark.parametrize("header,outcome,reason", [
    (None, "unauthorized", "Unauthorized"),
    ("Bearer nope", "unauthorized", "Unauthorized"),
    ("expired", "token_expired", None),
])
async def test_api_calls_check_the_bearer_token(aiohttp_client, header, outcome, reason):
    client, emu, clock = await start(aiohttp_client)
    if header == "expired":
        header = "Bearer " + emu.issue_tokens()["access_token"]
        await clock.advance(600)
    resp = await client.get("/api/v1/1/crm/Accounts?$filter=ID eq guid'00000000-0000-0000-0000-000000000000'",
                            headers={"Authorization": header} if header else {})
    assert resp.status == 401
    assert "Reason" in resp.headers and (reason is None or resp.headers["Reason"] == reason)
    assert (await resp.json())["error"]["message"]["value"]
    assert emu.count(outcome) == 1


async def test_require_auth_false_counts_anonymous(aiohttp_client):
    client, emu, clock = await start(aiohttp_client, {"require_auth": False})
    resp = await client.get("/api/v1/1/logistics/Items?$filter=Code eq 'x'")
    assert resp.status == 200
    assert emu.count("ok", app="anonymous", division=1, endpoint="logistics/items") == 1


async def test_too_early_counts_toward_the_error_limit(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    pair = emu.issue_tokens()
    for _ in range(11):
        assert (await refresh(client, pair["refresh_token"]))[0].status == 400
    resp = await client.post("/api/oauth2/token", data={**CREDS, "grant_type": "refresh_token",
                                                        "refresh_token": pair["refresh_token"]})
    assert resp.status == 429 and await resp.read() == b""
    assert emu.count("error_block", endpoint="oauth2/token") == 1
    await clock.advance(3600)
    assert (await refresh(client, pair["refresh_token"]))[0].status == 200


async def test_too_early_not_counted_when_switched_off(aiohttp_client):
    client, emu, clock = await start(aiohttp_client, {"too_early_counts_as_error": False})
    pair = emu.issue_tokens()
    for _ in range(12):
        assert (await refresh(client, pair["refresh_token"]))[0].status == 400
    assert emu.count("error_block") == 0
