"""``forward``: the request goes to Exact byte for byte; the answer comes back whole or as a stream.

A tiny aiohttp server stands in for Exact; the HTTP client is set up as ``Services.start`` sets it up.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket

import aiohttp
import pytest
from aiohttp import web

from proxy.filters.forward import SMALL_BODY, Forward
from tests.support import Rig

BIG = b"z" * (SMALL_BODY + 1)


SEEN = web.AppKey("seen", list)


async def _echo(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    request.app[SEEN].append((request.method, request.raw_path, body))
    return web.json_response(
        {
            "method": request.method,
            "target": request.raw_path,
            "headers": {k: v for k, v in request.headers.items()},
            "body": body.decode("latin-1"),
        }
    )


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=BIG, content_type="application/octet-stream")


async def _gzip(request: web.Request) -> web.Response:
    return web.Response(
        body=gzip.compress(b'{"d": 1}'),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(text="late")


async def _reset(request: web.Request) -> web.Response:
    request.transport.close()
    await asyncio.sleep(0.1)
    return web.Response(text="never")


@pytest.fixture
async def exact(aiohttp_server):
    app = web.Application()
    app[SEEN] = []
    app.router.add_route("*", "/big", _big)
    app.router.add_route("*", "/gzip", _gzip)
    app.router.add_route("*", "/slow", _slow)
    app.router.add_route("*", "/reset", _reset)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return await aiohttp_server(app)


@pytest.fixture
async def rig_for():
    """``rig_for(base_url, extra_yaml)``: a rig whose services have the proxy's kind of HTTP client."""
    sessions: list[aiohttp.ClientSession] = []

    def make(base_url: str, extra_yaml: str = "") -> Rig:
        rig = Rig(extra_yaml, base_url=base_url)
        rig.services.http = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        sessions.append(rig.services.http)
        return rig

    yield make
    for s in sessions:
        await s.close()


def _base(server) -> str:
    return str(server.make_url("")).rstrip("/")


async def _send(rig: Rig, method: str, target: str, **kw):
    ctx = await rig.ctx(method, target, **kw)
    reply = await Forward(rig.services).handle(ctx, None)
    return ctx, reply


async def test_method_path_and_query_go_upstream_byte_for_byte_without_hop_by_hop_headers(exact, rig_for):
    rig = rig_for(_base(exact))
    target = "/api/v1/101/crm/Accounts(guid'a%2Fb')?$filter=Name%20eq%20'A%26B'&$select=ID,Name"
    ctx, reply = await _send(
        rig,
        "GET",
        target,
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "Proxy-Authorization": "Basic x",
            "X-Tool": "legacy",
        },
    )
    seen = json.loads(reply.body)
    assert seen["method"] == "GET" and seen["target"] == target
    assert seen["headers"]["Host"] == exact.make_url("").authority and seen["headers"]["X-Tool"] == "legacy"
    assert not {"X-Hop", "Proxy-Authorization"} & set(seen["headers"])
    assert ctx.attempt == 1 and ctx.upstream_failure is None and not reply.local


async def test_header_changes_of_the_filters_are_applied(exact, rig_for):
    rig = rig_for(_base(exact))
    ctx = await rig.ctx(
        "GET", "/api/v1/101/crm/Accounts", headers={"Authorization": "Bearer old", "X-Drop": "1"}
    )
    ctx.header_changes.update({"Authorization": "Bearer new", "X-Drop": None})
    seen = json.loads((await Forward(rig.services).handle(ctx, None)).body)["headers"]
    assert seen["Authorization"] == "Bearer new" and "X-Drop" not in seen


async def test_a_buffered_body_is_sent_and_a_small_answer_is_read_whole(exact, rig_for):
    rig = rig_for(_base(exact))
    ctx, reply = await _send(
        rig,
        "POST",
        "/api/v1/101/crm/Accounts",
        body=b'{"Name": "A"}',
        headers={"Content-Type": "application/json"},
    )
    assert reply.stream is None and reply.length == len(reply.body)
    assert json.loads(reply.body)["body"] == '{"Name": "A"}'


async def test_a_large_answer_stays_a_stream_and_encoded_bytes_pass_undecoded(exact, rig_for):
    rig = rig_for(_base(exact))
    _, reply = await _send(rig, "GET", "/big")
    assert reply.body is None and reply.length == len(BIG)
    assert b"".join([chunk async for chunk in reply.stream]) == BIG
    _, reply = await _send(rig, "GET", "/gzip")
    assert reply.headers["Content-Encoding"] == "gzip" and gzip.decompress(reply.body) == b'{"d": 1}'


async def test_an_upstream_that_cannot_be_reached_is_a_local_502_marked_connect(rig_for):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    rig = rig_for(f"http://127.0.0.1:{port}")
    ctx, reply = await _send(rig, "GET", "/api/v1/101/crm/Accounts")
    assert reply.status == 502 and reply.local and reply.failure == "connect"
    assert ctx.upstream_failure == "connect" and ctx.decisions == ["upstream connect"]
    assert ctx.answered_by == "forward" and ctx.attempt == 1
    assert rig.services.metrics.upstream_failures["connect"] == 1


async def test_a_slow_upstream_is_a_504_and_a_reset_a_502_both_marked(exact, rig_for):
    rig = rig_for(_base(exact), "forwarding: {read_timeout: 0.2}\n")
    ctx, reply = await _send(rig, "GET", "/slow")
    assert (reply.status, reply.failure, ctx.upstream_failure) == (504, "timeout", "timeout")
    assert "read_timeout 0.2 s" in json.loads(reply.body)["error"]["message"]["value"]
    ctx, reply = await _send(rig, "GET", "/reset")
    assert (reply.status, reply.failure, ctx.decisions) == (502, "reset", ["upstream reset"])


async def test_a_streamed_body_past_the_limit_is_a_413_never_completed_upstream(exact, rig_for):
    rig = rig_for(_base(exact), "forwarding: {max_request_body: 100}\n")
    ctx, reply = await _send(rig, "POST", "/api/v1/101/crm/Accounts", body=b"x" * 500, chunked=True)
    assert reply.status == 413 and reply.failure is None and ctx.upstream_failure is None
    assert ctx.decisions == ["refused (body too large)"]
    await asyncio.sleep(0.05)
    assert exact.app[SEEN] == []  # no complete request reached the upstream
