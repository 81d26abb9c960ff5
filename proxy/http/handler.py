"""The request handler of a listener, and the response writer.

Contract
- ``make_handler(services, listener)`` answers ``/_proxy/*`` itself (admin, never forwarded; Exact has no
  such path) and sends everything else down ``pipeline.ORDER``. An exception from a filter becomes a
  500 in Exact's envelope and an ERROR line with the traceback; the proxy keeps running.
- ``write_reply`` streams an upstream body to the client chunk by chunk. When the upstream breaks after
  the status line was sent, the client connection is closed so the tool sees a truncated answer, never
  a silently short one.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from proxy import pipeline
from proxy.errors import exact_error
from proxy.ops import admin
from proxy.policy.hosts import Listener

if TYPE_CHECKING:
    from proxy.services import Services

log = logging.getLogger("exact_proxy.app")


def make_handler(services: Services, listener: Listener):
    """The request handler of one listener (aiohttp's low-level server: no router, no middleware).

    ``/_proxy/*`` is answered by ``admin`` (never forwarded; Exact has no such path); every other
    target, whatever its shape, goes down the filter list, which alone decides what is forwarded."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if admin.is_admin_path(request.raw_path):
            return await admin.dispatch(request, services)
        return await handle(services, listener, request)

    return handler


async def handle(services: Services, listener: Listener, request: web.BaseRequest) -> web.StreamResponse:
    raw = request.raw_path
    path, _, query = raw.partition("?")
    ctx = pipeline.Context(request=request, listener=listener, policy=services.holder.current,
                           started=time.perf_counter(), method=request.method, raw_path=path, raw_query=query)
    status = 499  # client closed the connection before an answer, unless set below
    try:
        try:
            reply = await services.entry(ctx)
        except Exception as exc:  # a filter failed: answer, log, keep serving
            log.exception("request %s %s failed in the proxy: %s", ctx.method, ctx.raw_path, type(exc).__name__)
            ctx.decide(f"proxy error ({type(exc).__name__})")
            reply = ctx.answer("proxy", exact_error(500, f"internal proxy error ({type(exc).__name__}); "
                                                    "see the proxy log"))
        status = reply.status
        return await write_reply(request, ctx, reply)
    finally:
        for finish in ctx.finishers:
            try:
                finish(ctx, status)
            except Exception:
                log.exception("a request finisher failed")


async def write_reply(request: web.BaseRequest, ctx: pipeline.Context, reply: pipeline.Reply) -> web.StreamResponse:
    if reply.stream is None:
        body = reply.body or b""
        close = reply.headers.popone("Connection", "").lower() == "close"
        if request.method != "HEAD":
            reply.headers.popall("Content-Length", None)
        if request.method == "HEAD" or reply.status in (204, 304):
            # no body goes out; a HEAD keeps the Content-Length Exact announced
            resp = web.StreamResponse(status=reply.status, reason=reply.reason, headers=reply.headers)
        else:
            # a whole body: headers and body leave in one write (one system call, one packet)
            resp = web.Response(status=reply.status, reason=reply.reason, headers=reply.headers, body=body)
        if close:
            resp.force_close()
        await resp.prepare(request)
        await resp.write_eof()
        ctx.bytes_out = len(body)
        return resp
    reply.headers.popall("Content-Length", None)  # reply.length is the one truth; None means chunked
    resp = web.StreamResponse(status=reply.status, reason=reply.reason, headers=reply.headers)
    if reply.length is not None:
        resp.content_length = reply.length
    try:
        await resp.prepare(request)
        async for chunk in reply.stream:
            await resp.write(chunk)
            ctx.bytes_out += len(chunk)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        ctx.decide(f"upstream broke mid-body ({type(exc).__name__}); client connection cut")
        log.warning("upstream answer for %s %s broke after %d bytes: %s", ctx.method, ctx.raw_path,
                    ctx.bytes_out, type(exc).__name__)
        if request.transport is not None:
            request.transport.close()
        return resp
    finally:
        await reply.discard()
    await resp.write_eof()
    return resp
