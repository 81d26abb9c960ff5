"""Raw HTTP over asyncio streams, for tests that check the bytes on the wire (a 100 before a body, a
408 on a trickled head): open a connection to a listener, read one response whole."""

from __future__ import annotations

import asyncio
import json


def base_url(server) -> str:
    return str(server.make_url("")).rstrip("/")


async def open_raw(proxy, listener: str = "default"):
    host, port = proxy.bound[listener]
    return await asyncio.open_connection(host, port)


async def read_response(reader, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
    return status, headers, body


def message(body: bytes) -> str:
    """The text of a body in Exact's error envelope."""
    return json.loads(body)["error"]["message"]["value"]
