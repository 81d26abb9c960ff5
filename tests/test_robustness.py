"""What production throws at the proxy: malformed requests, hostile upstreams, a vanishing policy file.

Every test ends by proving the proxy still serves, and that nothing was forwarded twice.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

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
