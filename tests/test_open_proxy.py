"""Never an open proxy: only configured Exact hosts are forwarded to."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fake_upstream import SEEN


async def _raw_request(proxy, data: bytes) -> bytes:
    host, port = proxy.bound["default"]
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return out


async def test_absolute_form_for_other_host_refused(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s:
        async with s.get("http://evil.example/steal?x=1", proxy=proxy.url()) as r:
            assert r.status == 403
            body = await r.json()
    assert "evil.example" in body["error"]["message"]["value"]
    assert upstream.app[SEEN] == []


async def test_absolute_form_for_configured_host_forwarded(upstream, start_proxy):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base)
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/api/v1/1/crm/Contacts?$top=1", proxy=proxy.url()) as r:
            assert r.status == 200
            assert (await r.json())["target"] == "/api/v1/1/crm/Contacts?$top=1"
    assert len(upstream.app[SEEN]) == 1


async def test_connect_refused_and_nothing_tunnelled(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    raw = await _raw_request(proxy, b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
    status_line = raw.split(b"\r\n", 1)[0]
    assert b" 403 " in status_line
    assert b"not a tunnel" in raw
    assert upstream.app[SEEN] == []


async def test_host_header_cannot_redirect_forwarding(upstream, start_proxy):
    """A Host header naming some other host does not change where the request goes."""
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    raw = await _raw_request(proxy, b"GET /x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
    assert b" 200 " in raw.split(b"\r\n", 1)[0]
    assert upstream.app[SEEN][0][2]["Host"] == f"{upstream.host}:{upstream.port}"


async def test_asterisk_target_refused(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    raw = await _raw_request(proxy, b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b" 400 " in raw.split(b"\r\n", 1)[0]
    assert upstream.app[SEEN] == []


async def test_listeners_route_to_their_own_country(aiohttp_server, start_proxy):
    from tests import fake_upstream

    nl = await aiohttp_server(fake_upstream.make_app())
    be = await aiohttp_server(fake_upstream.make_app())
    proxy = await start_proxy(
        str(nl.make_url("")).rstrip("/"),
        upstreams_yaml=f"upstreams:\n  test: {{base_url: '{str(nl.make_url('')).rstrip('/')}'}}\n"
                       f"  be: {{base_url: '{str(be.make_url('')).rstrip('/')}'}}\n",
        listeners_yaml="listeners:\n  - {name: default, port: 0, upstream: test}\n"
                       "  - {name: be, port: 0, upstream: be}\n",
    )
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url("default") + "/api/v1/1/crm/Contacts") as r:
            assert r.status == 200
        async with s.get(proxy.url("be") + "/api/v1/2/crm/Contacts") as r:
            assert r.status == 200
    assert [t for _, t, *_ in nl.app[SEEN]] == ["/api/v1/1/crm/Contacts"]
    assert [t for _, t, *_ in be.app[SEEN]] == ["/api/v1/2/crm/Contacts"]
