"""An upstream that is down, slow or resetting gives 502/504 in Exact's envelope; the proxy stays up."""

from __future__ import annotations

import socket

import aiohttp
import pytest

from tests.fake_upstream import SEEN


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def _get(url: str, method: str = "GET"):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, url) as r:
            return r.status, await r.json(content_type=None)


async def _healthy(proxy) -> bool:
    status, body = await _get(proxy.url() + "/_proxy/health")
    return status == 200 and body["status"] == "ok"


async def test_upstream_down_gives_502_naming_the_cause(start_proxy):
    proxy = await start_proxy(f"http://127.0.0.1:{_closed_port()}")
    status, body = await _get(proxy.url() + "/api/v1/1/crm/Accounts")
    assert status == 502
    text = body["error"]["message"]["value"]
    assert "cannot connect" in text and "127.0.0.1" in text
    assert body["error"]["code"] == ""
    assert await _healthy(proxy)


async def test_slow_upstream_gives_504(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), extra_yaml="""
        forwarding: {read_timeout: 0.2, total_timeout: 0.3, connect_timeout: 0.2}
    """)
    status, body = await _get(proxy.url() + "/slow?s=3")
    assert status == 504
    assert "did not answer" in body["error"]["message"]["value"]
    assert await _healthy(proxy)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_resetting_upstream_gives_502_and_a_write_is_never_replayed(upstream, start_proxy, method):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), "retry: {attempts: 3, base: 0.001}\n")
    status, body = await _get(proxy.url() + "/reset", method)
    assert status == 502
    assert "reset" in body["error"]["message"]["value"]
    assert len(upstream.app[SEEN]) == 1  # sent once: it may have reached Exact, so never again
    assert await _healthy(proxy)


async def test_resetting_upstream_get_is_retried_then_502(upstream, start_proxy, log_output):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), "retry: {attempts: 3, base: 0.001}\n")
    status, body = await _get(proxy.url() + "/reset", "GET")
    assert status == 502 and "reset" in body["error"]["message"]["value"]
    assert len(upstream.app[SEEN]) == 4  # the first try and three retries
    assert "retry 3/3 after connection reset" in log_output.getvalue()
    assert await _healthy(proxy)


async def test_upstream_breaking_mid_body_cuts_the_client(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(proxy.url() + "/midbody") as r:
                assert r.status == 200
                await r.read()
    assert await _healthy(proxy)
