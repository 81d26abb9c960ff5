"""``read_body``: the body in hand before anything is decided; refusals before a byte is forwarded."""

from __future__ import annotations

import inspect
import time

import pytest

from proxy.filters.read_body import ReadBody
from proxy.http.body import BodyConsumed
from tests.support import Rig

SMALL = "forwarding: {max_request_body: 1000, replay_buffer: 100}\n"


async def _read(rig: Rig, method="POST", target="/api/v1/101/crm/Accounts", **kw):
    ctx = await rig.ctx(method, target, read_body=False, **kw)
    got = ReadBody(rig.services).before(ctx)
    if inspect.isawaitable(got):
        got = await got
    return ctx, got


async def test_a_request_without_a_body_passes_at_once_without_waiting():
    rig = Rig()
    ctx = await rig.ctx("GET", read_body=False)
    assert ReadBody(rig.services).before(ctx) is None  # a plain None: nothing to await
    assert ctx.body.replayable and ctx.body.payload() is None


async def test_a_body_declared_larger_than_the_limit_gets_413_before_a_byte_is_read():
    ctx, reply = await _read(Rig(SMALL), body=b"x" * 1001)
    assert reply.status == 413 and reply.local and reply.headers["Connection"] == "close"
    assert ctx.decisions == ["refused (body too large)"]
    assert ctx.body.size == 0 and ctx.bytes_in == 0


async def test_an_expectation_other_than_100_continue_gets_417():
    ctx, reply = await _read(Rig(), body=b"{}", headers={"Expect": "something-else"})
    assert reply.status == 417 and reply.headers["Connection"] == "close"
    assert ctx.decisions == ["refused (expectation)"]


async def test_a_small_body_is_buffered_and_can_be_sent_again():
    ctx, reply = await _read(Rig(SMALL), body=b'{"Name": "x"}')
    assert reply is None and ctx.body.replayable and ctx.bytes_in == 13
    assert ctx.body.payload() == ctx.body.payload() == b'{"Name": "x"}'


async def test_a_body_past_the_replay_buffer_stays_a_stream_sent_once():
    ctx, reply = await _read(Rig(SMALL), body=b"y" * 500)
    assert reply is None and not ctx.body.replayable and ctx.body.size == 0
    stream = ctx.body.payload()
    assert b"".join([chunk async for chunk in stream]) == b"y" * 500
    with pytest.raises(BodyConsumed):
        ctx.body.payload()


async def test_a_body_shorter_than_declared_gets_400():
    ctx, reply = await _read(Rig(), body=b"abcd", headers={"Content-Length": "10"})
    assert reply.status == 400 and ctx.decisions == ["client sent a short body"]


async def test_a_tool_that_stalls_mid_body_gets_408():
    rig = Rig("clients: {body_timeout: 0.05, body_min_rate: 0}\n")
    t0 = time.monotonic()
    ctx, reply = await _read(rig, body=b"abcd", headers={"Content-Length": "10"}, eof=False)
    assert reply.status == 408 and reply.headers["Connection"] == "close"
    assert ctx.decisions == ["refused (body stalled)"] and ctx.bytes_in == 4
    assert time.monotonic() - t0 < 2
