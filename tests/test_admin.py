"""Admin endpoints and metrics: health, status, Prometheus text, the per-minute summary line."""

from __future__ import annotations

import asyncio

import aiohttp

from proxy.clock import ManualClock
from tests.fake_upstream import SEEN


async def test_health_status_and_metrics(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    base = proxy.url("default")
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/api/v1/1/crm/Accounts?$filter=ID%20eq%201") as r:
            assert r.status == 200
        async with s.get(base + "/_proxy/health") as r:
            health = await r.json()
            assert r.status == 200 and health["status"] == "ok"
        async with s.get(base + "/_proxy/status") as r:
            status = await r.json()
        assert status["totals"]["calls"] >= 1 and status["totals"]["upstream"] >= 1
        assert "token_chains" in status and status["state"]["healthy"] is True
        async with s.get(base + "/metrics") as r:
            text = await r.text()
            assert r.status == 200 and r.content_type == "text/plain"
        assert 'exact_proxy_requests_total{outcome="upstream",status="2xx"}' in text
        assert 'exact_proxy_upstream_responses_total{status="200"}' in text
        async with s.get(base + "/_proxy/nothing") as r:
            assert r.status == 404
        async with s.post(base + "/_proxy/status") as r:
            assert r.status == 405
    seen = [target for _, target, _, _ in upstream.app[SEEN]]
    assert seen and not any(t.startswith("/_proxy") or t == "/metrics" for t in seen)


async def test_local_answers_are_counted_by_the_filter_that_gave_them(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), "forwarding: {max_request_body: 10}\n")
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url("default") + "/api/v1/1/crm/Accounts", data=b"x" * 100) as r:
            assert r.status == 413
        async with s.get(proxy.url("default") + "/_proxy/status") as r:
            status = await r.json()
        async with s.get(proxy.url("default") + "/_proxy/metrics") as r:
            text = await r.text()
    assert status["answered_locally"] == {"read_body": 1}
    assert 'exact_proxy_requests_total{outcome="local:read_body",status="4xx"} 1.0' in text


async def test_summary_line_once_a_minute(upstream, start_proxy, log_output):
    clock = ManualClock(start=1_700_000_000.0)
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), clock=clock)
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(proxy.url("default") + "/echo") as r:
                assert r.status == 200
    await clock.advance(61)
    for _ in range(20):
        await asyncio.sleep(0)
    text = log_output.getvalue()
    assert "summary (last minute): calls 3, upstream 3" in text
