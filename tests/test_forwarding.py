"""Forwarding through the real proxy: bytes, headers, bodies and streaming."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import aiohttp
from yarl import URL

from tests.fake_upstream import SEEN


async def test_method_path_query_and_body_pass_byte_for_byte(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    target = "/api/v1/123/CRM/Accounts(guid%27a1%27)?%24filter=Name%20eq%20%27A%27&$select=ID,Name"
    async with aiohttp.ClientSession() as s:
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            body = b'{"Name":"x!"}' if method in ("POST", "PUT", "PATCH") else None
            async with s.request(method, URL(proxy.url() + target, encoded=True), data=body) as r:
                assert r.status == 200, method
                got = await r.json()
            assert got["method"] == method
            assert got["target"] == target
            assert got["body_len"] == (len(body) if body else 0)
    assert [m for m, *_ in upstream.app[SEEN]] == ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]


async def test_header_hygiene_both_ways(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    headers = {
        "Authorization": "Bearer abc", "Accept": "application/json", "Content-Type": "application/json",
        "Prefer": "return=representation", "X-Custom": "1", "Connection": "keep-alive, X-Drop-Me",
        "X-Drop-Me": "gone", "Proxy-Authorization": "Basic c2VjcmV0", "Keep-Alive": "timeout=1",
        "TE": "trailers",
    }
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url() + "/api/v1/1/crm/Accounts", data=b"{}", headers=headers) as r:
            got = await r.json()
            resp_headers = r.headers
    sent = {k.lower(): v for k, v in got["headers"]}
    up_host = f"{upstream.host}:{upstream.port}"
    assert sent["host"] == up_host
    for name in ("authorization", "accept", "content-type", "prefer", "x-custom"):
        assert sent[name] == headers[{"authorization": "Authorization", "accept": "Accept",
                                      "content-type": "Content-Type", "prefer": "Prefer",
                                      "x-custom": "X-Custom"}[name]]
    for hop in ("x-drop-me", "proxy-authorization", "keep-alive", "te"):
        assert hop not in sent, hop
    assert sent["via"].endswith("1.1 exact-proxy")
    assert sent["content-length"] == "2"
    # and on the way back
    assert resp_headers["X-RateLimit-Minutely-Remaining"] == "59"
    assert resp_headers["Reason"] == "Test"
    assert resp_headers["Retry-After"] == "3"
    assert resp_headers["Location"].startswith("https://start.exactonline.nl/")
    assert resp_headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert "X-Secret-Hop" not in resp_headers
    assert "Keep-Alive" not in resp_headers
    assert "exact-proxy" in resp_headers["Via"]


async def test_client_headers_not_invented(upstream, start_proxy):
    """The proxy must not add Accept, Accept-Encoding or User-Agent the tool did not send."""
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    reader, writer = await _raw(proxy)
    writer.write(b"GET /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    await writer.drain()
    raw = await reader.read()
    writer.close()
    body = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    names = {k.lower() for k, _ in body["headers"]}
    assert not names & {"accept", "accept-encoding", "user-agent", "content-type"}


async def test_gzip_passes_through_undecoded(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(proxy.url() + "/gz", headers={"Accept-Encoding": "gzip"}) as r:
            raw = await r.read()
            assert r.headers["Content-Encoding"] == "gzip"
            assert int(r.headers["Content-Length"]) == len(raw)
    assert json.loads(gzip.decompress(raw))["d"]["results"][199] == {"n": 199}


async def test_204_and_head(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s:
        async with s.delete(proxy.url() + "/nocontent") as r:
            assert r.status == 204
            assert await r.read() == b""
        async with s.head(proxy.url() + "/api/v1/1/crm/Accounts") as r:
            assert r.status == 200
            assert await r.read() == b""


async def test_long_url_and_2mb_post(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    query = "$filter=" + "+or+".join(f"ID+eq+guid'{i:032x}'" for i in range(160))
    assert len(query) > 7000
    body = b"<eExact>" + b"a" * (2 * 1024 * 1024) + b"</eExact>"
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url() + "/api/v1/1/crm/Accounts?" + query) as r:
            assert r.status == 200
            assert (await r.json())["target"].endswith(query)
        async with s.post(proxy.url() + "/upload", data=body, headers={"Content-Type": "application/json"}) as r:
            assert (await r.json())["received"] == len(body)


async def test_50mb_response_streams_with_bounded_memory(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    received = 0
    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(proxy.url() + "/big?mb=50&length=1") as r:
                assert int(r.headers["Content-Length"]) == 50 * 1024 * 1024
                async for chunk in r.content.iter_any():
                    received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert received == 50 * 1024 * 1024
    # proxy, upstream and client all run in this process; together they held far less than 50 MB
    assert peak < 12 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"


async def test_chunked_response_and_streamed_upload(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), extra_yaml="""
        forwarding: {replay_buffer: 1024}
    """)

    async def gen():
        for _ in range(160):
            yield b"z" * 65536

    tracemalloc.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(proxy.url() + "/upload", data=gen()) as r:
                assert (await r.json())["received"] == 160 * 65536
            async with s.get(proxy.url() + "/big?mb=20") as r:
                assert "Content-Length" not in r.headers
                assert len(await r.read()) == 20 * 1024 * 1024
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 45 * 1024 * 1024  # the client's own read() of 20 MB is most of this


async def test_oversize_body_refused_before_forwarding(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), extra_yaml="""
        forwarding: {max_request_body: 1000, replay_buffer: 100}
    """)
    async with aiohttp.ClientSession() as s:
        async with s.post(proxy.url() + "/upload", data=b"a" * 5000) as r:
            assert r.status == 413
            assert "max_request_body" in (await r.json())["error"]["message"]["value"]
    assert upstream.app[SEEN] == []


async def _raw(proxy):
    import asyncio

    host, port = proxy.bound["default"]
    return await asyncio.open_connection(host, port)
