"""Request bodies at the HTTP edge (issue 14): ``Expect: 100-continue`` is answered; a body over
``forwarding.max_request_body`` gets 413 and Exact never sees it whole (declared: never started; chunked:
stopped before its last chunk); a body the tool stops sending, or trickles slower than
``clients.body_min_rate``, gets 408 (``clients.body_timeout``), and only time spent waiting on the tool
counts.

Raw sockets, so that the bytes on the wire (a 100 before the body, the chunk that never leaves) are what
is checked, against the fake upstream or a raw TCP upstream that records every byte.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web

from tests.fake_upstream import SEEN
from tests.raw_http import base_url as _base
from tests.raw_http import message as _message
from tests.raw_http import open_raw as _open
from tests.raw_http import read_response as _response


class RawUpstream:
    """A TCP server that records every byte of every connection and never answers."""

    def __init__(self) -> None:
        self.connections: list[bytearray] = []
        self.closed: list[bool] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader, writer) -> None:
        data = bytearray()
        self.connections.append(data)
        self.closed.append(False)
        i = len(self.closed) - 1
        try:
            while chunk := await reader.read(65536):
                data.extend(chunk)
        except ConnectionError:
            pass
        self.closed[i] = True
        writer.close()

    async def all_closed(self) -> bool:
        for _ in range(60):
            if all(self.closed):
                return True
            await asyncio.sleep(0.05)
        return False


@pytest.fixture
async def raw_upstream():
    up = RawUpstream()
    yield up
    if up.server is not None:
        up.server.close()


# -- deadlines -------------------------------------------------------------------------------------

async def test_stalled_body_gets_408_and_nothing_reaches_upstream(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "clients: {body_timeout: 0.5}\n")
    reader, writer = await _open(proxy)
    writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                 b"\r\nContent-Length: 100\r\n\r\n" + b"{" * 10)
    t0 = time.monotonic()
    status, headers, body = await _response(reader)
    assert status == 408 and "body_timeout" in _message(body)
    assert 0.3 <= time.monotonic() - t0 < 3.0
    assert headers["connection"].lower() == "close"
    writer.close()
    assert upstream.app[SEEN] == []


async def test_stalled_streamed_body_gets_408_and_upstream_never_sees_a_whole_request(raw_upstream,
                                                                                      start_proxy):
    base = await raw_upstream.start()
    proxy = await start_proxy(base, "forwarding: {replay_buffer: 1024}\nclients: {body_timeout: 0.5}\n")
    reader, writer = await _open(proxy)
    writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n"
                 + b"x" * 5000)
    status, _, body = await _response(reader)
    assert status == 408 and "body_timeout" in _message(body)
    writer.close()
    for _ in range(50):
        if raw_upstream.closed and all(raw_upstream.closed):
            break
        await asyncio.sleep(0.05)
    assert raw_upstream.closed and all(raw_upstream.closed), "the upstream connection was left open"
    for data in raw_upstream.connections:
        head, _, sent = bytes(data).partition(b"\r\n\r\n")
        assert len(sent) < 100000


async def test_trickling_body_below_min_rate_gets_408(upstream, start_proxy):
    """Every byte comes before body_timeout, but far slower than body_min_rate: cut all the same."""
    proxy = await start_proxy(_base(upstream), "clients: {body_timeout: 0.6, body_min_rate: 100}\n")
    reader, writer = await _open(proxy)
    writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200\r\n\r\n")

    async def trickle():
        for _ in range(200):
            try:
                writer.write(b"x")
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.25)

    task = asyncio.create_task(trickle())
    t0 = time.monotonic()
    status, _, body = await _response(reader)
    assert status == 408 and "body_min_rate" in _message(body)
    assert time.monotonic() - t0 < 4.0
    task.cancel()
    writer.close()
    assert upstream.app[SEEN] == []


async def test_a_body_the_proxy_is_slow_to_take_is_not_the_clients_fault(aiohttp_server, start_proxy):
    """Only time spent waiting on the client counts: an upstream that reads late does not trip it."""
    async def slow_reader(request: web.Request) -> web.Response:
        await asyncio.sleep(1.2)
        return web.json_response({"received": len(await request.read())})

    app = web.Application(client_max_size=1 << 24)
    app.router.add_post("/upload", slow_reader)
    server = await aiohttp_server(app)
    proxy = await start_proxy(str(server.make_url("")).rstrip("/"),
                              "forwarding: {replay_buffer: 1024}\nclients: {body_timeout: 0.4}\n")
    reader, writer = await _open(proxy)
    size = 4 * 1024 * 1024
    writer.write(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % size)
    writer.write(b"y" * size)
    status, _, body = await _response(reader, timeout=10)
    assert status == 200 and json.loads(body)["received"] == size
    writer.close()


# -- Expect: 100-continue ----------------------------------------------------------------------------

POST_HEAD = (b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
             b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n")


@pytest.mark.parametrize("size", [17, 5000], ids=["buffered", "streamed"])
async def test_expect_100_continue_is_answered_before_the_body(upstream, start_proxy, size):
    proxy = await start_proxy(_base(upstream), "forwarding: {replay_buffer: 1024}\n")
    reader, writer = await _open(proxy)
    writer.write(POST_HEAD % size)
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"{" * size)
    status, _, body = await _response(reader)
    assert status == 200 and json.loads(body)["body_len"] == size
    writer.close()
    (_, _, headers, got), = upstream.app[SEEN]
    assert len(got) == size and "Expect" not in headers


async def test_expect_with_a_body_over_max_request_body_gets_413_and_no_100(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "forwarding: {max_request_body: 1000}\n")
    reader, writer = await _open(proxy)
    writer.write(POST_HEAD % 5000)
    status, headers, body = await _response(reader)
    assert status == 413 and "max_request_body" in _message(body)
    assert headers["connection"].lower() == "close"
    writer.close()
    assert upstream.app[SEEN] == []


async def test_an_expectation_the_proxy_cannot_meet_gets_417(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream))
    reader, writer = await _open(proxy)
    writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nExpect: teapot\r\n"
                 b"Content-Length: 2\r\n\r\n")
    status, _, body = await _response(reader)
    assert status == 417 and "teapot" in _message(body)
    writer.close()
    assert upstream.app[SEEN] == []


async def test_expect_from_an_http_10_client_is_ignored(upstream, start_proxy):
    """RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored."""
    proxy = await start_proxy(_base(upstream))
    reader, writer = await _open(proxy)
    writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.0\r\nHost: localhost\r\nExpect: 100-continue\r\n"
                 b"Content-Length: 2\r\n\r\n{}")
    raw = await asyncio.wait_for(reader.read(), 5.0)
    assert raw.split(b"\r\n", 1)[0].endswith(b" 200 OK") and b"100 Continue" not in raw
    writer.close()


# -- bodies over max_request_body --------------------------------------------------------------------

def _chunked(chunks: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


async def test_chunked_body_over_max_request_body_gets_413_and_exact_never_sees_a_whole_request(
        raw_upstream, start_proxy):
    base = await raw_upstream.start()
    proxy = await start_proxy(base, "forwarding: {max_request_body: 100 KiB, replay_buffer: 1 KiB}\n")
    reader, writer = await _open(proxy)
    writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunks = _chunked([b"c" * 40960] * 4)
    step = len(chunks) // 8
    for i in range(0, len(chunks), step):  # in pieces, so that the first ones are on their way to Exact
        writer.write(chunks[i:i + step])
        await writer.drain()
        await asyncio.sleep(0.05)
    status, headers, body = await _response(reader)
    assert status == 413 and "max_request_body" in _message(body)
    assert headers["connection"].lower() == "close"
    writer.close()
    assert await raw_upstream.all_closed(), "the upstream connection of the refused body was left open"
    (data,) = raw_upstream.connections
    head, _, sent = bytes(data).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert sent.count(b"c") >= 40960, "nothing was streamed: the test did not test the stream"
    assert sent.count(b"c") <= 100 * 1024
    assert b"\r\n0\r\n\r\n" not in sent, "the upstream got the last chunk: a complete request"


async def test_chunked_body_within_max_request_body_passes(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "forwarding: {max_request_body: 300 KiB, replay_buffer: 1 KiB}\n")
    reader, writer = await _open(proxy)
    writer.write(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(_chunked([b"c" * 65536] * 4))
    status, _, body = await _response(reader)
    assert status == 200 and json.loads(body)["received"] == 4 * 65536
    writer.close()


async def test_declared_body_over_max_request_body_never_opens_an_upstream_connection(raw_upstream,
                                                                                      start_proxy):
    base = await raw_upstream.start()
    proxy = await start_proxy(base, "forwarding: {max_request_body: 1000}\n")
    reader, writer = await _open(proxy)
    writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5000\r\n\r\n"
                 + b"d" * 5000)
    status, headers, _ = await _response(reader)
    assert status == 413 and headers["connection"].lower() == "close"
    writer.close()
    await asyncio.sleep(0.1)
    assert raw_upstream.connections == []
