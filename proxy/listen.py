"""The listening socket: a thin guard in front of aiohttp's HTTP handler.

Contract
- ``GuardedSite`` binds like ``aiohttp.web.TCPSite`` but wraps every connection in ``ConnectGuard``.
- ``ConnectGuard`` looks at the first request line of a connection. ``CONNECT`` (a tool configured with
  ``HTTPS_PROXY``) gets ``405`` in Exact's error envelope and the connection is closed: nothing is
  tunnelled. aiohttp's own parser would take a CONNECT as an upgrade and leave the tool hanging. Every
  other connection is handed to aiohttp untouched, byte for byte.
- This is the one place that later terminates TLS for ``CONNECT`` to a configured Exact host.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from .errors import envelope

_REFUSAL = envelope("CONNECT refused: exact-proxy is not a tunnel; point the tool's base URL at this "
                    "proxy instead")
_RESPONSE = (b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json; charset=utf-8\r\n"
             b"Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\nX-Exact-Proxy: local\r\n"
             b"Connection: close\r\nContent-Length: " + str(len(_REFUSAL)).encode() + b"\r\n\r\n" + _REFUSAL)


class ConnectGuard(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._decided = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._decided:
            self.inner.data_received(data)
            return
        self._head += data
        if len(self._head) < 8 and b" " not in self._head:
            return  # not enough to tell the method yet
        self._decided = True
        head, self._head = self._head, b""
        if head[:8].upper() == b"CONNECT ":
            assert self.transport is not None
            self.transport.write(_RESPONSE)
            self.transport.close()
            return
        self.inner.data_received(head)

    def eof_received(self) -> bool | None:
        if self._head and not self._decided:
            self._decided = True
            self.inner.data_received(self._head)
            self._head = b""
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GuardedSite(web.BaseSite):
    __slots__ = ("_host", "_port")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int = 128) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(lambda: ConnectGuard(server()), self._host, self._port,
                                                backlog=self._backlog, reuse_address=True,
                                                family=socket.AF_INET6 if ":" in self._host else socket.AF_INET)
