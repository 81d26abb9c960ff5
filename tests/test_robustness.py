"""What production throws at the proxy: malformed requests, hostile upstreams, a vanishing policy file.

Every test ends by proving the proxy still serves, and that nothing was forwarded twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import time

import aiohttp
import pytest
from aiohttp import web

from tests.fake_upstream import SEEN

SMUGGLING = [
    (b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n", "Transfer-Encoding"),
    (b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
     b"hello!", "Content-Length"),
    (b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
     b"0\r\n\r\n", "Transfer-Encoding"),
    (b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\nhello\r\n0\r\n\r\n", "chunk"),
]


async def _raw(url: str, payload: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


@pytest.mark.parametrize("payload,cause", SMUGGLING)
async def test_request_smuggling_shapes_get_a_clear_400(upstream, start_proxy, log_output, payload, cause):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    answer = await _raw(proxy.url("default"), payload)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0]
    assert b"application/json" in head
    message = json.loads(body)["error"]["message"]["value"]
    assert message.startswith("exact-proxy: malformed HTTP request") and cause.lower() in message.lower()
    assert upstream.app[SEEN] == []  # nothing of it reached Exact
    assert "Traceback" not in log_output.getvalue()
    async with aiohttp.ClientSession() as s, s.get(proxy.url("default") + "/echo") as r:
        assert r.status == 200  # still serving


# --- hostile upstreams ------------------------------------------------------------------------------

HOSTILE = web.AppKey("hostile", dict)


def hostile_app() -> web.Application:
    """An upstream that answers with malformed rate-limit headers, 429s with a date Retry-After, and 503
    storms, counting what reached it."""
    state = {"calls": 0, "posts": 0, "throttled": 0}

    async def handler(request: web.Request) -> web.Response:
        state["calls"] += 1
        if request.method == "POST":
            state["posts"] += 1
        if "storm" in request.path:
            return web.json_response({"error": {"code": "", "message": {"lang": "", "value": "busy"}}}, status=503)
        if "throttle" in request.path and state["throttled"] == 0:
            state["throttled"] += 1
            when = email.utils.formatdate(time.time() + 1, usegmt=True)
            return web.Response(status=429, headers={"Retry-After": when})
        return web.json_response({"d": {"results": []}}, headers={
            "X-RateLimit-Minutely-Limit": "sixty", "X-RateLimit-Minutely-Remaining": "",
            "X-RateLimit-Minutely-Reset": "soon", "X-RateLimit-Limit": "-5", "X-RateLimit-Remaining": "1e3",
            "X-RateLimit-Reset": "2026-11-24T00:00:00Z"})

    app = web.Application()
    app[HOSTILE] = state
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def test_malformed_rate_limit_headers_and_a_date_retry_after(aiohttp_server, start_proxy, log_output):
    up = await aiohttp_server(hostile_app())
    proxy = await start_proxy(str(up.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s:
        for _ in range(5):
            async with s.get(proxy.url() + "/api/v1/3/crm/Contacts") as r:
                assert r.status == 200
        async with s.get(proxy.url() + "/api/v1/4/crm/throttle") as r:
            assert r.status == 200  # paused until the date, then replayed
    assert "upstream 429: paused until" in log_output.getvalue() and "replayed" in log_output.getvalue()
    assert "Traceback" not in log_output.getvalue()
    assert await _still_serving(proxy)


async def test_5xx_storm_gets_and_posts(aiohttp_server, start_proxy):
    up = await aiohttp_server(hostile_app())
    proxy = await start_proxy(str(up.make_url("")).rstrip("/"), "retry: {attempts: 2, base: 0.001}\n")
    state = up.app[HOSTILE]
    async with aiohttp.ClientSession() as s:
        for _ in range(10):
            async with s.get(proxy.url() + "/api/v1/5/crm/storm") as r:
                assert r.status == 503
        gets = state["calls"]
        for _ in range(10):
            async with s.post(proxy.url() + "/api/v1/5/crm/storm", json={"Name": "x"}) as r:
                assert r.status == 503
    assert gets == 30  # each GET tried three times
    assert state["posts"] == 10  # each POST exactly once: a write is never duplicated
    assert await _still_serving(proxy)


async def _still_serving(proxy) -> bool:
    async with aiohttp.ClientSession() as s, s.get(proxy.url() + "/_proxy/health") as r:
        return r.status in (200, 503)


async def test_1000_concurrent_clients_across_100_divisions(emulator, start_proxy):
    emu = await emulator()
    proxy = await start_proxy(emu.base)
    token = emu.state.issue_tokens("test-app")["access_token"]
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000)) as s:
        async def one(i):
            async with s.get(f"{proxy.url()}/api/v1/{1000 + i % 100}/crm/Contacts?$top=1", headers=h) as r:
                await r.read()
                return r.status

        statuses = await asyncio.gather(*(one(i) for i in range(1000)))
    assert statuses.count(200) == 1000
    assert emu.state.count(outcome="minutely_429") == 0
    book = next(f for f in proxy.services.filters if f.name == "call_budget").book
    assert len(book.divisions) == 100 and sum(len(d.waiters) for d in book.divisions.values()) == 0


async def test_unwritable_state_keeps_serving_and_says_so(upstream, start_proxy, tmp_path, log_output):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), state_path=f"{blocker}/s.sqlite")
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url() + "/api/v1/1/crm/Accounts?$filter=ID%20eq%201") as r:
            assert r.status == 200
        async with s.get(proxy.url() + "/_proxy/health") as r:
            health = await r.json()
            assert r.status == 503 and health["status"] == "degraded"
    assert "cannot be written" in log_output.getvalue() and "ERROR" in log_output.getvalue()
