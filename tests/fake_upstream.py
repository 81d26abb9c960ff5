"""A small aiohttp app standing in for Exact in the foundation tests (the emulator covers the API).

Every request is recorded in ``app[SEEN]`` as (method, raw target, headers, body) so tests can prove
what reached "Exact" and what did not.
"""

from __future__ import annotations

import asyncio
import gzip
import json

from aiohttp import web

SEEN = web.AppKey("seen", list)
BIG_CHUNK = b"x" * (64 * 1024)


MANDATORY = {  # endpoint (lower case) -> allowed fields, as Exact lists them
    "crm/addresses": "Account,AddressLine1,Created,ID,Modified",
    "hrm/schedules": "Created,Employee,Modified",
    "weird/things": "Colour,Shape",
}
MANDATORY_TEXT = ("This endpoint has mandatory filtering applied. A GET request for this endpoint must have a "
                  "$filter parameter with one of the following fields in the url:{}.")


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), body))
    endpoint = "/".join(request.path.lower().split("/")[4:])
    if request.method == "GET" and endpoint in MANDATORY and "$filter" not in request.query:
        return web.json_response({"error": {"code": "", "message": {"lang": "", "value": MANDATORY_TEXT.format(
            MANDATORY[endpoint])}}}, status=400)
    payload = {
        "method": request.method,
        "target": request.raw_path,
        "headers": [[k, v] for k, v in request.headers.items()],
        "body_len": len(body),
        "body_head": body[:64].decode("latin-1"),
    }
    resp = web.json_response(payload, headers={
        "X-RateLimit-Minutely-Limit": "60", "X-RateLimit-Minutely-Remaining": "59",
        "X-RateLimit-Minutely-Reset": "1683879540000", "Reason": "Test", "Retry-After": "3",
        "Location": "https://start.exactonline.nl/api/v1/1/crm/Accounts(guid'1')",
        "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "must-not-pass",
        "Keep-Alive": "timeout=5",
    })
    resp.headers.add("Set-Cookie", "a=1; Path=/")
    resp.headers.add("Set-Cookie", "b=2; Path=/")
    return resp


async def big(request: web.Request) -> web.StreamResponse:
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    size = int(request.query.get("mb", "50")) * 1024 * 1024
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("length") == "1":
        resp.content_length = size
    await resp.prepare(request)
    sent = 0
    while sent < size:
        chunk = BIG_CHUNK[: size - sent]
        await resp.write(chunk)
        sent += len(chunk)
    await resp.write_eof()
    return resp


async def upload(request: web.Request) -> web.Response:
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    return web.json_response({"received": total})


async def gz(request: web.Request) -> web.Response:
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    data = gzip.compress(json.dumps({"d": {"results": [{"n": i} for i in range(200)]}}).encode())
    return web.Response(body=data, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


async def slow(request: web.Request) -> web.Response:
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    await asyncio.sleep(float(request.query.get("s", "5")))
    return web.json_response({"slow": True})


async def reset(request: web.Request) -> web.Response:
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    request.transport.close()
    await asyncio.sleep(1)
    return web.Response()


async def midbody(request: web.Request) -> web.StreamResponse:
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    resp = web.StreamResponse()
    resp.content_length = 1_000_000
    await resp.prepare(request)
    await resp.write(b"y" * 1000)
    await asyncio.sleep(0.05)
    request.transport.close()
    return resp


async def nocontent(request: web.Request) -> web.Response:
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    return web.Response(status=204)


async def links(request: web.Request) -> web.StreamResponse:
    """An Exact-like page whose links point at this server's own base URL (as Exact's do)."""
    request.app[SEEN].append((request.method, request.raw_path, request.headers.copy(), b""))
    base = f"http://{request.host}"
    rows = int(request.query.get("rows", "3"))
    if request.query.get("atom"):
        entries = "".join(f'<entry><id>{base}/api/v1/1/crm/Accounts(guid\'{i}\')</id></entry>' for i in range(rows))
        body = (f'<feed xml:base="{base}/api/v1/1/"><link rel="next" href="{base}/api/v1/1/crm/Accounts?'
                f"$skiptoken=guid'9'\"/>{entries}</feed>").encode()
        ctype = "application/atom+xml;type=feed;charset=utf-8"
    else:
        results = [{"__metadata": {"uri": f"{base}/api/v1/1/crm/Accounts(guid'{i}')"}, "Name": "x" * 50}
                   for i in range(rows)]
        body = json.dumps({"d": {"results": results, "__next": f"{base}/api/v1/1/crm/Accounts?$skiptoken=x"}}).encode()
        ctype = "application/json; charset=utf-8"
    headers = {"Content-Type": ctype, "Location": f"{base}/api/v1/1/crm/Accounts(guid'1')"}
    if request.query.get("gzip"):
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    resp = web.StreamResponse(status=201 if request.method == "POST" else 200, headers=headers)
    if not request.query.get("chunked"):
        resp.content_length = len(body)
    await resp.prepare(request)
    step = int(request.query.get("step", "0")) or len(body)
    for i in range(0, len(body), step):
        await resp.write(body[i:i + step])
    await resp.write_eof()
    return resp


def make_app() -> web.Application:
    app = web.Application(client_max_size=100 * 1024 * 1024)
    app[SEEN] = []
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/upload", upload)
    app.router.add_route("*", "/gz", gz)
    app.router.add_route("*", "/slow", slow)
    app.router.add_route("*", "/reset", reset)
    app.router.add_route("*", "/midbody", midbody)
    app.router.add_route("*", "/nocontent", nocontent)
    app.router.add_route("*", "/links", links)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
