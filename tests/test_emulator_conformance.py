"""Emulator conformance: call limits and their headers (exact-online-api.md §2), over HTTP, ManualClock.

The ManualClock starts at 2026-11-25T10:00:00Z, on a minute boundary; the next 00:00 UTC is 14 h later.
"""

from __future__ import annotations

import pytest

from proxy.clock import ManualClock
from proxy.emulator import EMULATOR, EmulatorConfig, create_app

START = 1_795_600_800  # 2026-11-25T10:00:00Z
MIDNIGHT = START + 14 * 3600
MINUTE_HEADERS = ("X-RateLimit-Minutely-Limit", "X-RateLimit-Minutely-Remaining", "X-RateLimit-Minutely-Reset")
DAY_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


async def start(aiohttp_client, config: dict | None = None):
    clock = ManualClock(START)
    app = create_app(EmulatorConfig.from_dict(config or {}), clock)
    client = await aiohttp_client(app)
    emu = app[EMULATOR]
    headers = {"Authorization": "Bearer " + emu.issue_tokens()["access_token"], "Accept": "application/json"}
    return client, emu, clock, headers


def one(emu, division: int = 1) -> str:
    return f"/api/v1/{division}/crm/Accounts(guid'{emu.account_ids(division)[0]}')"


def rate_headers(resp) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.lower().startswith("x-ratelimit")}


async def test_six_headers_exact_values(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    resp = await client.get(one(emu), headers=h)
    assert resp.status == 200
    assert rate_headers(resp) == {
        "X-RateLimit-Minutely-Limit": "60", "X-RateLimit-Minutely-Remaining": "59",
        "X-RateLimit-Minutely-Reset": str((START + 60) * 1000),
        "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999", "X-RateLimit-Reset": str(MIDNIGHT * 1000)}
    await clock.advance(30.5)
    resp = await client.get(one(emu), headers=h)
    assert resp.headers["X-RateLimit-Minutely-Remaining"] == "58"
    assert resp.headers["X-RateLimit-Minutely-Reset"] == str((START + 60) * 1000)
    assert resp.headers["X-RateLimit-Remaining"] == "4998"


async def test_minute_window_rolls_at_the_clock_minute(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    for i in range(60):
        if i == 30:
            await clock.advance(40)  # 60 calls between 10:00:00 and 10:00:40
        assert (await client.get(one(emu), headers=h)).status == 200
    resp = await client.get(one(emu), headers=h)
    assert resp.status == 429
    assert await resp.read() == b""
    assert rate_headers(resp) == {"X-RateLimit-Minutely-Limit": "60", "X-RateLimit-Minutely-Remaining": "0",
                                  "X-RateLimit-Minutely-Reset": str((START + 60) * 1000)}
    assert "Retry-After" not in resp.headers
    await clock.set_time(START + 59.999)
    assert (await client.get(one(emu), headers=h)).status == 429
    await clock.set_time(START + 60)
    resp = await client.get(one(emu), headers=h)
    assert resp.status == 200
    assert resp.headers["X-RateLimit-Minutely-Remaining"] == "59"
    assert resp.headers["X-RateLimit-Minutely-Reset"] == str((START + 120) * 1000)
    assert resp.headers["X-RateLimit-Remaining"] == str(5000 - 61)  # the 429s were not counted
    assert emu.count("minutely_429") == 2 and emu.count("ok") == 61


async def test_day_window_resets_at_midnight_utc(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    emu.set_limits("test-app", 1, daily=5)
    for _ in range(5):
        assert (await client.get(one(emu), headers=h)).status == 200
    resp = await client.get(one(emu), headers=h)
    assert resp.status == 429 and await resp.read() == b""
    assert rate_headers(resp) == {"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0",
                                  "X-RateLimit-Reset": str(MIDNIGHT * 1000)}
    await clock.set_time(MIDNIGHT - 0.001)
    h["Authorization"] = "Bearer " + emu.issue_tokens()["access_token"]
    assert (await client.get(one(emu), headers=h)).status == 429
    await clock.set_time(MIDNIGHT)
    resp = await client.get(one(emu), headers=h)
    assert resp.status == 200
    assert resp.headers["X-RateLimit-Remaining"] == "4"
    assert resp.headers["X-RateLimit-Reset"] == str((MIDNIGHT + 86400) * 1000)
    assert emu.count("daily_429") == 2


@pytest.mark.parametrize("minutely,daily,expect_hit", [(3, 100, "minutely"), (100, 3, "daily"), (3, 3, "daily")])
async def test_which_limit_is_hit(aiohttp_client, minutely, daily, expect_hit):
    client, emu, clock, h = await start(aiohttp_client, {"retry_after_on_429": True})
    emu.set_limits("test-app", 1, minutely=minutely, daily=daily)
    for _ in range(3):
        assert (await client.get(one(emu), headers=h)).status == 200
    await clock.advance(15)
    resp = await client.get(one(emu), headers=h)
    assert resp.status == 429
    names = set(rate_headers(resp))
    assert names == set(DAY_HEADERS if expect_hit == "daily" else MINUTE_HEADERS)
    assert resp.headers["Retry-After"] == str(14 * 3600 - 15 if expect_hit == "daily" else 45)
    assert emu.count(f"{expect_hit}_429") == 1


@pytest.mark.parametrize("rules,app,division,expect", [
    ([], "test-app", 1, ("60", "5000")),
    ([{"app": "demo-app", "minutely": 100, "daily": 9000}], "demo-app", 1, ("100", "9000")),
    ([{"app": "demo-app", "minutely": 100}], "test-app", 1, ("60", "5000")),
    ([{"division": 2, "daily": 30000}], "test-app", 2, ("60", "30000")),
    ([{"division": 2, "daily": 30000}, {"app": "test-app", "division": 2, "minutely": 7}], "test-app", 2,
     ("7", "30000")),
])
async def test_limits_per_app_and_division_from_config(aiohttp_client, rules, app, division, expect):
    client, emu, clock, _ = await start(aiohttp_client, {"limits": rules})
    h = {"Authorization": "Bearer " + emu.issue_tokens(app)["access_token"], "Accept": "application/json"}
    resp = await client.get(one(emu, division), headers=h)
    assert (resp.headers["X-RateLimit-Minutely-Limit"], resp.headers["X-RateLimit-Limit"]) == expect


async def test_counters_are_per_app_and_division(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    emu.set_limits("test-app", 1, minutely=2)
    h2 = {"Authorization": "Bearer " + emu.issue_tokens("demo-app")["access_token"], "Accept": "application/json"}
    for _ in range(2):
        assert (await client.get(one(emu, 1), headers=h)).status == 200
    assert (await client.get(one(emu, 1), headers=h)).status == 429
    assert (await client.get(one(emu, 2), headers=h)).status == 200          # other division
    resp = await client.get(one(emu, 1), headers=h2)                            # other app
    assert resp.status == 200 and resp.headers["X-RateLimit-Minutely-Remaining"] == "59"


@pytest.mark.parametrize("method,path,counts", [
    ("GET", "/api/v1/current/Me", False),
    ("GET", "/docs/XMLDownload.aspx?Topic=Accounts&_Division_=1", True),
    ("POST", "/docs/XMLUpload.aspx?Topic=Accounts&_Division_=1", True),
    ("GET", "/api/v1/1/crm/Accounts?$filter=Name eq 'x'", True),
    ("GET", "/api/v1/1/crm/Accounts(guid'00000000-0000-0000-0000-000000000001')", True),  # a 404 counts too
    ("GET", "/api/v1/1/sync/Deleted", True),
])
async def test_what_counts_toward_the_limits(aiohttp_client, method, path, counts):
    client, emu, clock, h = await start(aiohttp_client)
    resp = await client.request(method, path, headers=h, data=b"<eExact/>" if method == "POST" else None)
    assert resp.status in (200, 404)
    assert ("X-RateLimit-Limit" in resp.headers) is counts
    resp = await client.get(one(emu), headers=h)
    assert resp.headers["X-RateLimit-Minutely-Remaining"] == ("58" if counts else "59")


async def test_token_calls_do_not_count(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client, {"min_refresh_interval": 0})
    pair = emu.issue_tokens()
    resp = await client.post("/api/oauth2/token", data={"grant_type": "refresh_token", "client_id": "test-app",
                                                        "client_secret": "test-secret",
                                                        "refresh_token": pair["refresh_token"]})
    assert resp.status == 200 and "X-RateLimit-Limit" not in resp.headers
    resp = await client.get(one(emu), headers=h)
    assert resp.headers["X-RateLimit-Minutely-Remaining"] == "59"


async def test_reset_endpoint_and_reset_limits(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    emu.set_limits("test-app", 1, minutely=1)
    assert (await client.get(one(emu), headers=h)).status == 200
    assert (await client.get(one(emu), headers=h)).status == 429
    emu.reset_limits()
    assert (await client.get(one(emu), headers=h)).status == 200
    resp = await client.post("/_emulator/reset")
    assert resp.status == 200
    assert emu.count() == 0
    assert (await client.get(one(emu), headers=h)).status == 200
