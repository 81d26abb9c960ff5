"""The listening socket: a thin guard in front of aiohttp's HTTP handler.

Contract
- ``GuardedSite`` binds like ``aiohttp.web.TCPSite`` (with ``ssl_context`` for an HTTPS listener) but
  wraps every connection in ``ConnectGuard``.
- ``ConnectGuard`` looks at the first request line of a connection before aiohttp sees anything (aiohttp's
  own parser would take a CONNECT as an upgrade and leave the tool hanging). A ``CONNECT`` (a tool
  configured with ``HTTPS_PROXY``) is read up to the end of its head and handed, with the raw
  connection, to the listener's ``tls.intercept.Interceptor``, which intercepts configured Exact hosts and
  refuses the rest; without an interceptor it gets ``405`` in Exact's error envelope and the connection
  is closed. Every other connection is handed to aiohttp untouched, byte for byte.
- A connection that sends nothing for ``IDLE_LIMIT`` seconds is closed.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

from aiohttp import web

from .errors import envelope

_REFUSAL = envelope("CONNECT refused: exact-proxy is not a tunnel; point the tool's base URL at this "
                    "proxy instead")
_RESPONSE = (b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json; charset=utf-8\r\n"
             b"Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\nX-Exact-Proxy: local\r\n"
             b"Connection: close\r\nContent-Length: " + str(len(_REFUSAL)).encode() + b"\r\n\r\n" + _REFUSAL)


IDLE_LIMIT = 75.0          # seconds a new connection may stay silent (aiohttp's keep-alive default)
MAX_CONNECT_HEAD = 8192


class ConnectGuard(asyncio.Protocol):
    """aiohttp's protocol (``inner``) only sees the connection once it is known not to be a CONNECT."""

    def __init__(self, inner: asyncio.Protocol, interceptor=None) -> None:
        self.inner = inner
        self.interceptor = interceptor
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._decided = False
        self._attached = False
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._idle = asyncio.get_running_loop().call_later(IDLE_LIMIT, transport.close)

    def _attach(self) -> None:
        self._decided = self._attached = True
        if self._idle is not None:
            self._idle.cancel()
        self.inner.connection_made(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._attached:
            self.inner.data_received(data)
            return
        if self._decided:
            return  # a CONNECT was answered; the connection is closing or taken over
        self._head += data
        if len(self._head) < 8 and b" " not in self._head:
            return  # not enough to tell the method yet
        if self._head[:8].upper() != b"CONNECT ":
            head, self._head = self._head, b""
            self._attach()
            self.inner.data_received(head)
            return
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) < MAX_CONNECT_HEAD:
            return  # the rest of the CONNECT head is still on its way
        self._decided = True
        if self._idle is not None:
            self._idle.cancel()
        assert self.transport is not None
        if self.interceptor is None or end < 0:
            self.transport.write(_RESPONSE)
            self.transport.close()
            return
        head, rest, self._head = self._head[:end + 4], self._head[end + 4:], b""
        self.interceptor.take_over(self.transport, head, rest)

    def eof_received(self) -> bool | None:
        if self._attached:
            return self.inner.eof_received()
        if self._decided:
            return None
        self._attach()
        if self._head:
            self.inner.data_received(self._head)
            self._head = b""
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._attached:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._attached:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._attached:
            self.inner.resume_writing()


class GuardedSite(web.BaseSite):
    __slots__ = ("_host", "_port", "_interceptor")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int = 128,
                 ssl_context: ssl.SSLContext | None = None, interceptor=None) -> None:
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._interceptor = interceptor

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(lambda: ConnectGuard(server(), self._interceptor), self._host,
                                                self._port, ssl=self._ssl_context,
                                                backlog=self._backlog, reuse_address=True,
                                                family=socket.AF_INET6 if ":" in self._host else socket.AF_INET)
