"""The emulator's call limits over HTTP: fixed clock minute, UTC day, exact X-RateLimit headers, 429s."""

from __future__ import annotations

from tests.test_emu_support import START

pytest_plugins = ["tests.test_emu_support"]

ME = "/api/v1/current/Me"
DIV = "/api/v1/7095/system/Divisions"
MINUTE_RESET = str(int((START // 60 + 1) * 60 * 1000))
DAY_RESET = str(int((START // 86400 + 1) * 86400 * 1000))


async def test_headers_exact_format(emu):
    c = await emu()
    r = await c.get(DIV, headers=c.auth)
    assert r.status == 200
    h = r.headers
    assert h["X-RateLimit-Minutely-Limit"] == "60"
    assert h["X-RateLimit-Minutely-Remaining"] == "59"
    assert h["X-RateLimit-Minutely-Reset"] == MINUTE_RESET
    assert h["X-RateLimit-Limit"] == "5000"
    assert h["X-RateLimit-Remaining"] == "4999"
    assert h["X-RateLimit-Reset"] == DAY_RESET == "1795651200000"


async def test_current_me_not_counted_and_no_headers(emu):
    c = await emu()
    r = await c.get(ME, headers=c.auth)
    assert r.status == 200
    body = await r.json()
    assert body["d"]["results"][0]["CurrentDivision"] == 7095
    assert "X-RateLimit-Limit" not in r.headers
    r = await c.get(DIV, headers=c.auth)
    assert r.headers["X-RateLimit-Minutely-Remaining"] == "59"


async def test_minute_rolls_at_clock_minute(emu, emu_clock):
    c = await emu({"minutely_limit": 3})
    await emu_clock.advance(30)  # 10:00:30
    for left in ("2", "1", "0"):
        r = await c.get(DIV, headers=c.auth)
        assert r.headers["X-RateLimit-Minutely-Remaining"] == left
    r = await c.get(DIV, headers=c.auth)
    assert r.status == 429
    assert await r.read() == b""
    assert r.headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert r.headers["X-RateLimit-Minutely-Reset"] == MINUTE_RESET
    assert "X-RateLimit-Limit" not in r.headers and "X-RateLimit-Remaining" not in r.headers
    assert "Retry-After" not in r.headers
    await emu_clock.advance(29.9)  # 10:00:59.9: still the same minute
    assert (await c.get(DIV, headers=c.auth)).status == 429
    await emu_clock.advance(0.1)  # 10:01:00
    r = await c.get(DIV, headers=c.auth)
    assert r.status == 200 and r.headers["X-RateLimit-Minutely-Remaining"] == "2"
    assert r.headers["X-RateLimit-Remaining"] == "4996"  # a refused call is not counted
    assert c.state.count("minutely_429") == 2


async def test_day_resets_at_midnight_utc(emu, emu_clock):
    c = await emu({"daily_limit": 2, "retry_after_on_429": True})
    assert (await c.get(DIV, headers=c.auth)).status == 200
    await emu_clock.advance(60)
    assert (await c.get(DIV, headers=c.auth)).headers["X-RateLimit-Remaining"] == "0"
    await emu_clock.advance(60)
    r = await c.get(DIV, headers=c.auth)
    assert r.status == 429
    assert set(k for k in r.headers if k.startswith("X-RateLimit")) == {
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    }
    assert r.headers["X-RateLimit-Reset"] == DAY_RESET
    assert int(r.headers["Retry-After"]) == 86400 - 36000 - 120
    await emu_clock.set_time(1795651200.0 - 1)  # 23:59:59
    r = await c.get(DIV, headers=c.auth)
    assert r.status == 401 and r.headers["Reason"] == "Unauthorized"  # the 600 s token has expired
    c.auth["Authorization"] = "Bearer " + c.state.issue_tokens()["access_token"]
    assert (await c.get(DIV, headers=c.auth)).status == 429
    await emu_clock.set_time(1795651200.0)
    r = await c.get(DIV, headers=c.auth)
    assert r.status == 200 and r.headers["X-RateLimit-Remaining"] == "1"
    assert r.headers["X-RateLimit-Reset"] == str(1795651200000 + 86400000)
    assert c.state.count("daily_429") == 2


async def test_limits_per_app_and_division(emu, emu_clock):
    c = await emu({"limits": [{"app": "demo-app", "minutely": 1}]})
    c.state.set_limits("test-app", 7096, minutely=1, daily=10)
    demo = c.state.issue_tokens("demo-app")["access_token"]
    dh = {"Authorization": f"Bearer {demo}", "Accept": "application/json"}
    assert (await c.get(DIV, headers=dh)).status == 200
    assert (await c.get(DIV, headers=dh)).status == 429
    r = await c.get(DIV, headers=c.auth)
    assert r.status == 200 and r.headers["X-RateLimit-Minutely-Limit"] == "60"
    r = await c.get("/api/v1/7096/system/Divisions", headers=c.auth)
    assert r.headers["X-RateLimit-Minutely-Limit"] == "1" and r.headers["X-RateLimit-Limit"] == "10"
    assert (await c.get("/api/v1/7096/system/Divisions", headers=c.auth)).status == 429
    c.state.reset_limits()
    assert (await c.get("/api/v1/7096/system/Divisions", headers=c.auth)).status == 200
    assert c.state.count(app="demo-app", outcome="minutely_429") == 1


async def test_errors_and_entities_count_toward_limits(emu):
    c = await emu({"minutely_limit": 2})
    ids = c.state.account_ids(7095)
    r = await c.get(f"/api/v1/7095/crm/Accounts(guid'{ids[0]}')", headers=c.auth)
    assert r.status == 200 and (await r.json())["d"]["ID"] == ids[0]
    r = await c.get("/api/v1/7095/crm/Accounts(guid'00000000-0000-0000-0000-000000000001')", headers=c.auth)
    assert r.status == 404 and r.headers["X-RateLimit-Minutely-Remaining"] == "0"
    assert (await c.get(ME, headers=c.auth)).status == 200
    assert (await c.get(DIV, headers=c.auth)).status == 429
    assert c.state.count(endpoint="crm/accounts") == 2


async def test_unknown_token_401_not_counted(emu):
    c = await emu()
    r = await c.get(DIV, headers={"Authorization": "Bearer nope", "Accept": "application/json"})
    assert r.status == 401 and r.headers["Reason"] == "Unauthorized"
    assert "X-RateLimit-Limit" not in r.headers
    r = await c.get(DIV, headers=c.auth)
    assert r.headers["X-RateLimit-Minutely-Remaining"] == "59"
    assert c.state.count("unauthorized") == 1
