"""The JSON the dashboard reads (``/_proxy/glance``, ``/_proxy/events``) and the page's files, from a real
busy proxy in front of the real emulator (``tests.support.scene``: calls that queue, errors until Exact
blocks an endpoint, a chain refreshed upstream), and ``glance`` on status documents edited into the
states a live scene cannot reach quickly (an expiring chain, a spent day, an unreachable cluster)."""

from __future__ import annotations

import asyncio
import copy
import json
import time

import aiohttp
import pytest

from proxy.clock import utc_text
from proxy.ops import events as events_mod
from proxy.ops.events import Events
from proxy.ops.glance import glance, level
from proxy.ops.recent import Recent, kind
from tests.raw_http import open_raw, read_response
from tests.support.scene import START_CLOCK, TOOLS, Scene
from tests.support.scene import division as _division


@pytest.fixture
async def scene(tmp_path):
    s = await Scene(tmp_path).start()
    await s.busy()
    yield s
    await s.stop()


async def _json(s: Scene, path: str) -> dict:
    async with s.session.get(s.proxy_url + path) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def test_glance_shows_what_the_status_has(scene):
    g, status = await _json(scene, "/_proxy/glance"), await _json(scene, "/_proxy/status")
    assert g["version"] == 1 and g["cluster"] is None and g["node"] is None
    for row in status["call_budget"]:  # the bars carry the status figures
        d = _division(g, row["division"])
        assert f"{d['minute']['used']}/{d['minute']['limit']}" == row["minute"]
        assert f"{d['day']['used']}/{d['day']['limit']}" == row["today"]
        assert d["queue"]["waiting"] == row["queue"]
    busy = _division(g, 102)  # Exact's minute of 6 is spent and three calls wait
    assert busy["minute"] == {"used": 6, "limit": 6, "resets_in_s": 60.0, "level": "over"}
    assert busy["queue"]["waiting"] == 3 and busy["exact_left"] == {"minute": 0, "day": 4994}
    assert _division(g, 101)["minute"]["level"] == "ok"
    blocked = next(e for e in g["errors"] if e["endpoint"] == "crm/accounts")
    assert blocked["used"] == 3 and blocked["budget"] == 8 and blocked["level"] == "over"
    assert blocked["blocked_until"] == utc_text(START_CLOCK + 600 + 3600)
    assert blocked["oldest_leaves_in_s"] == 3600.0
    assert [b["kind"] for b in g["banner"]] == ["blocked"]
    assert "Exact blocked crm/accounts for test-app division 101" in g["banner"][0]["text"]


async def test_glance_chains_tools_and_decisions(scene):
    g = await _json(scene, "/_proxy/glance")
    chain = g["chains"][0]
    assert chain["state"] == "ok" and chain["level"] == "ok" and chain["token_calls_today"] == 2
    assert chain["last_refresh_at"] == utc_text(START_CLOCK + 600)  # the refresh the scene made
    assert chain["next_refresh_at"] == utc_text(START_CLOCK + 600 + 570)  # Exact's 570 s rule
    assert chain["days_to_expiry"] == 30.0
    tools = {r["tool"]: r for r in g["tools"]["rows"]}
    assert tools["Power Query"] == {"tool": "Power Query", "requests": 13, "exact_calls": 13, "local": 0}
    assert tools["Microsoft Office Excel"]["requests"] == 4
    assert sum(r["requests"] for r in g["tools"]["rows"]) == g["tools"]["total"]["requests"]
    assert [r["requests"] for r in g["tools"]["rows"]] == sorted((r["requests"] for r in g["tools"]["rows"]),
                                                                 reverse=True)
    texts = [d for row in g["decisions"] for d in row["decisions"]]
    assert texts[0].startswith("refused (Exact blocked crm/accounts")  # newest first
    assert g["decisions"][0]["kind"] == "refusal" and g["decisions"][0]["tool"] == "python-requests"
    assert any(t.startswith("refreshed upstream for chain") for t in texts)
    assert any(t.startswith("counted error 3/8") for t in texts)
    assert not any(t.startswith(("links rewritten", "exact remaining")) for t in texts)  # routine
    await scene.release()
    g = await _json(scene, "/_proxy/glance")
    assert _division(g, 102)["queue"]["waiting"] == 0
    queued = [r for r in g["decisions"] if r["kind"] == "queue"]
    assert len(queued) == 3 and all(r["tool"] == "Microsoft Office Excel" for r in queued)


async def test_nothing_the_dashboard_reads_carries_a_token(scene):
    texts = []
    for path in ("/_proxy/glance", "/_proxy/status", "/_proxy/", "/_proxy/dashboard.js"):
        async with scene.session.get(scene.proxy_url + path) as r:
            texts.append(await r.text())
    async with scene.session.get(scene.proxy_url + "/_proxy/events") as r:
        texts.append((await asyncio.wait_for(_first_message(r), 5))[1])
    assert len(scene.tokens) == 4
    for text in texts:
        for token in scene.tokens + ["test-secret"]:
            assert token not in text


async def _first_message(resp: aiohttp.ClientResponse) -> tuple[dict, str]:
    """The next SSE message of the stream: its fields, and the raw text."""
    lines: list[str] = []
    while True:
        line = (await resp.content.readline()).decode()
        if line in ("\n", ""):
            if any(x.startswith("data:") for x in lines):
                break
            lines = []
            continue
        lines.append(line)
    fields = {}
    for x in lines:
        name, _, value = x.rstrip("\n").partition(": ")
        fields[name] = value
    return fields, "".join(lines)


async def test_events_stream_the_glance_every_second(scene):
    async with scene.session.get(scene.proxy_url + "/_proxy/events") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        assert r.headers["Cache-Control"] == "no-store"
        assert (await r.content.readline()) == b"retry: 2000\n"
        first, _ = await asyncio.wait_for(_first_message(r), 5)
        started = time.monotonic()
        second, _ = await asyncio.wait_for(_first_message(r), 5)
        took = time.monotonic() - started
    assert first["event"] == "glance" and int(second["id"]) == int(first["id"]) + 1
    assert 0.5 < took < 2.5, took
    g = json.loads(second["data"])
    assert _division(g, 102)["queue"]["waiting"] == 3 and g["banner"][0]["kind"] == "blocked"


async def test_one_build_a_second_serves_every_open_page(scene):
    events = scene.proxy.services.events
    async with aiohttp.ClientSession() as other:
        streams = [await other.get(scene.proxy_url + "/_proxy/events") for _ in range(4)]
        try:
            for s in streams:
                await asyncio.wait_for(_first_message(s), 5)
            before = events.builds
            await asyncio.sleep(2.2)
            for s in streams:
                await asyncio.wait_for(_first_message(s), 5)
            assert 1 <= events.builds - before <= 4, events.builds - before  # not 4 pages x 2 builds
            assert len(events.pages) == 4
        finally:
            for s in streams:
                s.close()
    for _ in range(100):
        if not events.pages:
            break
        await asyncio.sleep(0.02)
    assert not events.pages  # closed pages leave, and the producer stops with the last


async def test_an_open_page_does_not_hold_the_stop_up(tmp_path):
    s = await Scene(tmp_path).start()
    await s.authorize()
    resp = await s.session.get(s.proxy_url + "/_proxy/events")
    await asyncio.wait_for(_first_message(resp), 5)
    started = time.monotonic()
    await s.proxy.stop()
    assert time.monotonic() - started < 2.0
    assert await asyncio.wait_for(resp.content.read(), 2) == b""  # the stream ended
    s.proxy = None
    resp.close()
    await s.stop()


async def test_the_page_and_its_files_are_served_under_a_strict_policy(scene):
    async with scene.session.get(scene.proxy_url + "/_proxy/") as r:
        assert r.status == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
        csp = r.headers["Content-Security-Policy"]
        page = await r.text()
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert "/_proxy/dashboard.js" in page and "/_proxy/dashboard.css" in page
    assert "http://" not in page and "https://" not in page  # no external asset
    for path, kind_ in (("/_proxy/dashboard.js", "text/javascript"), ("/_proxy/dashboard.css", "text/css")):
        async with scene.session.get(scene.proxy_url + path) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith(kind_)
            body = await r.text()
            assert "http://" not in body and "https://" not in body
    async with scene.session.get(scene.proxy_url + "/_proxy", allow_redirects=False) as r:
        assert r.status == 301 and r.headers["Location"] == "/_proxy/"


@pytest.mark.parametrize("path", ["/_proxy/", "/_proxy/glance", "/_proxy/events", "/_proxy/dashboard.js"])
async def test_the_dashboard_follows_the_admin_rules(scene, path):
    reader, writer = await open_raw(scene.proxy)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".encode())
    status, _, body = await read_response(reader)
    writer.close()
    assert status == 403 and b"Host names this machine" in body


async def test_a_failing_build_is_logged_and_the_stream_goes_on(aiohttp_server, caplog, monkeypatch):
    from aiohttp import web

    monkeypatch.setattr(events_mod, "IDLE", 60.0)
    feed = Events(interval=0.05)
    calls = {"n": 0}

    async def produce() -> dict:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RuntimeError("broken")
        return {"n": calls["n"]}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await feed.stream(request, produce)

    app = web.Application()
    app.router.add_get("/e", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as s, s.get(server.make_url("/e")) as r:
        fields, _ = await asyncio.wait_for(_first_message(r), 5)
    assert json.loads(fields["data"]) == {"n": 4}
    assert sum("could not be built" in rec.getMessage() for rec in caplog.records) == 1  # once per kind
    await feed.close()


async def test_more_pages_than_allowed_get_a_503(aiohttp_server, monkeypatch):
    from aiohttp import web

    monkeypatch.setattr(events_mod, "MAX_STREAMS", 2)
    feed = Events(interval=0.05)

    async def produce() -> dict:
        return {}

    async def handler(request: web.Request) -> web.StreamResponse:
        return await feed.stream(request, produce)

    app = web.Application()
    app.router.add_get("/e", handler)
    server = await aiohttp_server(app)
    async with aiohttp.ClientSession() as s:
        open_ = [await s.get(server.make_url("/e")) for _ in range(2)]
        async with s.get(server.make_url("/e")) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
        for r in open_:
            r.close()
    await feed.close()


# -- glance on edited status documents ---------------------------------------------------------------

async def test_banner_for_every_state_that_needs_a_person(scene):
    status = await _json(scene, "/_proxy/status")
    data = copy.deepcopy(status)
    chain = data["token_chains"][0]
    near_expiry = dict(chain, chain="c2", refresh_expires_in_s=3 * 86400, expires_soon=True)
    expired = dict(chain, chain="c3", refresh_expires_in_s=-5, expires_soon=True)
    reauth = dict(chain, chain="c4", needs_reauth=True, needs_reauth_why="refresh token rejected")
    data["token_chains"] += [near_expiry, expired, reauth]
    data["call_budget"][0]["today"] = "5000/5000"
    data["state"]["healthy"] = False
    data["cluster"] = {"node": "n1", "server": "redis://10.0.0.5:6379", "reachable": False,
                       "reason": "connection refused"}
    g = glance(data)
    kinds = [b["kind"] for b in g["banner"]]
    assert kinds == ["cluster", "state", "blocked", "reauth", "budget", "expiring", "expiring"]
    by_chain = {c["chain"]: c for c in g["chains"]}
    assert by_chain["c2"]["state"] == "expires soon" and by_chain["c2"]["level"] == "near"
    assert by_chain["c2"]["days_to_expiry"] == 3.0
    assert by_chain["c3"]["state"] == "expired" and by_chain["c3"]["level"] == "over"
    assert by_chain["c4"]["state"] == "needs re-authorization" and by_chain["c4"]["why"] == "refresh token rejected"
    texts = " | ".join(b["text"] for b in g["banner"])
    assert "expires in 3.0 days" in texts and "has expired" in texts and "refresh token rejected" in texts
    assert "has spent its day (5000/5000)" in texts and "redis://10.0.0.5:6379 unreachable" in texts
    assert g["cluster"]["reachable"] is False and g["node"] == "n1"


def test_glance_in_cluster_mode_uses_the_shared_view():
    status = {"now": 1_000_000.0, "state": {"healthy": True}, "call_budget": [
        {"app": "a", "division": 1, "minute": "1/60", "today": "1/5000", "queue": 0}],
        "error_budget": [], "token_chains": [],
        "cluster": {"node": "n2", "server": "redis://127.0.0.1:1", "reachable": True,
                    "nodes": [{"node": "n1", "live": True, "this": False, "last_seen_s": 0.4},
                              {"node": "n2", "live": False, "this": True, "last_seen_s": 31.0}],
                    "windows": [{"app": "a", "division": 1, "minute": "50/60", "today": "90/5000", "queue": 2,
                                 "exact_left": "?/4910", "minute_resets_in_s": 5.0, "paused_until": None}],
                    "errors": [{"app": "a", "division": 1, "endpoint": "crm/accounts", "errors_this_hour": 4,
                                "exact_blocked_until_ms": 1_000_600_000}],
                    "token_chains": [{"chain": "x", "app": "a", "user": "u", "refresh_expires_in_s": 86400 * 20}]}}
    g = glance(status, budget=8)
    d = g["divisions"][0]
    assert d["minute"] == {"used": 50, "limit": 60, "resets_in_s": 5.0, "level": "near"}
    assert d["queue"]["waiting"] == 2 and d["exact_left"] == {"minute": None, "day": 4910}
    assert g["errors"] == [{"app": "a", "division": 1, "endpoint": "crm/accounts", "used": 4, "budget": 8,
                            "level": "over", "oldest_leaves_at": None, "oldest_leaves_in_s": None,
                            "blocked_until": utc_text(1_000_600)}]
    assert [n["node"] for n in g["cluster"]["nodes"]] == ["n1", "n2"] and g["cluster"]["nodes"][1]["live"] is False
    assert g["chains"][0]["days_to_expiry"] == 20.0 and g["chains"][0]["state"] == "ok"


def test_levels_and_shares():
    assert [level(u, 10) for u in (0, 7, 8, 10, 12)] == ["ok", "ok", "near", "over", "over"]
    assert level(0, None) == "ok" and level(1, 0) == "over"
    status = {"now": 0, "call_budget": [{"app": "a", "division": 1, "minute": "60/60", "today": "10/5000",
                                         "paused_for_s": 12.5, "paused_until": "1970-01-01T00:00:12Z",
                                         "shares": [{"share": "sync", "today": 95, "minute": 3, "cap_day": 100},
                                                    {"share": "excel", "today": 1, "minute": 1, "held": "pace",
                                                     "next_call_in_s": 2.0}]}]}
    d = glance(status)["divisions"][0]
    assert d["minute"]["level"] == "over" and d["paused_for_s"] == 12.5
    assert [(s["share"], s["level"]) for s in d["shares"]] == [("sync", "near"), ("excel", "near")]


def test_recent_keeps_the_decisions_that_are_not_routine():
    recent = Recent(size=3)
    base = {"ts": 0.0, "method": "GET", "path": "/api/v1/1/crm/Accounts", "query": "", "status": 200,
            "app": "a", "division": 1, "endpoint": "crm/accounts"}
    recent.note({**base, "id": 1, "decision": ["links rewritten", "exact remaining 5/10"]}, "curl/8.5")
    assert recent.rows() == []
    for i, text in enumerate(["queued 300 ms", "rewritten (+$filter=ID ne null)", "token substituted (chain x)",
                              "refused (daily budget) reset 2026-01-01T00:00:00Z"], start=2):
        recent.note({**base, "id": i, "decision": ["exact remaining 1/2", text]}, "curl/8.5")
    rows = recent.rows()
    assert [r["id"] for r in rows] == [5, 4, 3] and [r["kind"] for r in rows] == ["refusal", "token", "filter"]
    assert rows[0]["decisions"] == ["refused (daily budget) reset 2026-01-01T00:00:00Z"]
    recent.note({**base, "id": 6, "query": "refresh_token=abc&x=1", "decision": ["retry 1/2 after reset in 0.1 s"]},
                "curl/8.5")
    assert kind("something new") == "other" and recent.rows()[0]["kind"] == "retry"


def test_scene_tools_are_named_families():
    from proxy.ops.tool_family import family

    assert {family(ua) for ua in TOOLS.values()} == {"Power Query", "Microsoft Office Excel", "python-requests"}
