"""The emulator's OAuth2 over HTTP: code flow, rotation, too early, expiry, daily cap, Basic auth, API 401s."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

pytest_plugins = ["tests.test_emu_support"]

TOKEN = "/api/oauth2/token"
CREDS = {"client_id": "test-app", "client_secret": "test-secret"}


async def code_for(c, user: str | None = None, client_id: str = "test-app") -> str:
    q = {
        "client_id": client_id,
        "redirect_uri": "http://localhost/cb",
        "response_type": "code",
        "state": "xyz",
    }
    if user:
        q["user"] = user
    r = await c.get("/api/oauth2/auth", params=q, allow_redirects=False)
    assert r.status == 302
    loc = urlsplit(r.headers["Location"])
    assert loc.netloc == "localhost" and loc.path == "/cb"
    qs = parse_qs(loc.query)
    assert qs["state"] == ["xyz"]
    return qs["code"][0]


async def refresh(c, rt: str, creds=CREDS, **kw):
    return await c.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": rt, **creds}, **kw)


async def test_code_flow_and_api_call(emu, emu_clock):
    c = await emu()
    code = await code_for(c)
    r = await c.post(
        TOKEN,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://localhost/cb",
            **CREDS,
        },
    )
    assert r.status == 200
    body = await r.json()
    assert body["expires_in"] == "600" and body["token_type"] == "Bearer"
    assert "!" in body["refresh_token"]
    h = {"Authorization": f"Bearer {body['access_token']}", "Accept": "application/json"}
    me = await (await c.get("/api/v1/current/Me", headers=h)).json()
    assert me["d"]["results"][0]["UserName"] == "user-1"
    # codes are single use
    r = await c.post(
        TOKEN,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://localhost/cb",
            **CREDS,
        },
    )
    assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
    # the access token lives 600 s
    await emu_clock.advance(599)
    assert (await c.get("/api/v1/7095/system/Divisions", headers=h)).status == 200
    await emu_clock.advance(1)
    r = await c.get("/api/v1/7095/system/Divisions", headers=h)
    assert r.status == 401 and r.headers["Reason"] == "Unauthorized"
    assert c.state.count("token_expired") == 1
    assert c.state.count("ok", endpoint="oauth2/token", app="test-app") == 1
    assert c.state.count("invalid_grant", endpoint="oauth2/token") == 1


async def test_code_expires_after_three_minutes_and_user_param(emu, emu_clock):
    c = await emu()
    code = await code_for(c, user="user-2")
    await emu_clock.advance(180)
    r = await c.post(TOKEN, data={"grant_type": "authorization_code", "code": code, **CREDS})
    assert r.status == 400
    code = await code_for(c, user="user-2")
    r = await c.post(TOKEN, data={"grant_type": "authorization_code", "code": code, **CREDS})
    tok = (await r.json())["access_token"]
    me = await (
        await c.get(
            "/api/v1/current/Me", headers={"Authorization": f"Bearer {tok}", "Accept": "application/json"}
        )
    ).json()
    assert me["d"]["results"][0]["UserName"] == "user-2"


async def test_rotation_old_token_and_too_early(emu, emu_clock):
    c = await emu()
    first = c.state.issue_tokens()["refresh_token"]
    r = await refresh(c, first)
    assert r.status == 400
    assert await r.json() == {
        "error": "access_denied",
        "error_description": "Rate limit exceeded: access_token not expired",
    }
    assert r.headers["Reason"] == "TooEarlyToRefreshTokens: Rate limit exceeded: access_token not expired"
    assert r.headers["Retry-After"] == "570"
    await emu_clock.advance(569)
    r = await refresh(c, first)
    assert r.status == 400 and r.headers["Retry-After"] == "1"
    await emu_clock.advance(1)
    r = await refresh(c, first)
    assert r.status == 200
    second = (await r.json())["refresh_token"]
    assert second != first
    r = await refresh(c, first)
    assert r.status == 401
    assert await r.json() == {"error": "unauthorized_client", "error_description": "Old refresh token used."}
    await emu_clock.advance(570)
    assert (await refresh(c, second)).status == 200
    assert c.state.count("too_early") == 2 and c.state.count("old_refresh_token") == 1


async def test_basic_auth_and_bad_client(emu, emu_clock):
    c = await emu()
    rt = c.state.issue_tokens()["refresh_token"]
    await emu_clock.advance(600)
    basic = base64.b64encode(b"test-app:test-secret").decode()
    r = await c.post(
        TOKEN,
        data={"grant_type": "refresh_token", "refresh_token": rt},
        headers={"Authorization": f"Basic {basic}"},
    )
    assert r.status == 200
    r = await refresh(c, "whatever", creds={"client_id": "test-app", "client_secret": "wrong"})
    assert r.status == 400 and (await r.json())["error"] == "invalid_client"
    assert c.state.count("invalid_client") == 1


async def test_refresh_token_expires_after_30_days(emu, emu_clock):
    c = await emu({"error_limit": 100})
    rt = c.state.issue_tokens()["refresh_token"]
    await emu_clock.advance(30 * 86400)
    r = await refresh(c, rt)
    assert r.status == 400
    body = await r.json()
    assert body["error"] == "invalid_request"
    assert body["error_description"] == (
        "The refresh token expired at 12/25/2026 10:00:00 AM and it is now 12/25/2026 10:00:00 AM."
    )
    assert c.state.count("refresh_expired") == 1


async def test_daily_token_cap(emu, emu_clock):
    c = await emu({"token_daily_limit": 3, "too_early_seconds": 0})
    rt = c.state.issue_tokens()["refresh_token"]
    for _ in range(3):
        r = await refresh(c, rt)
        assert r.status == 200
        rt = (await r.json())["refresh_token"]
    r = await refresh(c, rt)
    assert r.status == 429 and "error" in await r.json()
    assert c.state.count("token_daily_limit", app="test-app") == 1
    await emu_clock.set_time(1795651200.0)  # next UTC day
    assert (await refresh(c, rt)).status == 200


async def test_token_errors_feed_the_error_limit(emu, emu_clock):
    c = await emu({"error_limit": 2})
    rt = c.state.issue_tokens()["refresh_token"]
    for _ in range(3):
        assert (await refresh(c, rt)).status == 400
    r = await refresh(c, rt)
    assert r.status == 429 and await r.read() == b""
    assert c.state.count("error_block", endpoint="oauth2/token") == 1


async def test_auth_rejects_unknown_client(emu):
    c = await emu()
    r = await c.get(
        "/api/oauth2/auth", params={"client_id": "nobody", "redirect_uri": "http://x/"}, allow_redirects=False
    )
    assert r.status == 400
