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
- Deadlines and the cap come from the policy's ``clients`` settings in force when the connection is made
  (``settings()``): a connection that sends nothing for ``idle_timeout`` seconds is closed; the few
  bytes that tell a CONNECT from other requests count against ``head_timeout`` from the first byte,
  and the request handler (``proxy.http.client_timeouts``) keeps that deadline for the rest of the head. A
  connection beyond ``max_connections`` of its listener is answered by ``connection_cap.Overflow``
  (503) and never reaches aiohttp. An HTTPS listener's TLS handshake must end within ``head_timeout``
  (the value at start), before the connection counts.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

from aiohttp import web

from proxy.errors import envelope
from proxy.http.client_settings import ClientSettings
from proxy.http.connection_cap import ConnectionCap, Overflow

_REFUSAL = envelope("CONNECT refused: exact-proxy is not a tunnel; point the tool's base URL at this "
                    "proxy instead")
_RESPONSE = (b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json; charset=utf-8\r\n"
             b"Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS\r\nX-Exact-Proxy: local\r\n"
             b"Connection: close\r\nContent-Length: " + str(len(_REFUSAL)).encode() + b"\r\n\r\n" + _REFUSAL)


MAX_CONNECT_HEAD = 8192


class ConnectGuard(asyncio.Protocol):
    """aiohttp's protocol (made by ``make_inner``) only sees the connection once it is known not to be a
    CONNECT, and only when the listener has room for it."""

    def __init__(self, make_inner: Callable[[], asyncio.Protocol], interceptor=None,
                 settings: Callable[[], ClientSettings] = ClientSettings, cap: ConnectionCap | None = None
                 ) -> None:
        self.make_inner = make_inner
        self.inner: asyncio.Protocol | None = None
        self.interceptor = interceptor
        self.settings = settings
        self.cap = cap
        self.overflow: Overflow | None = None
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._decided = False
        self._attached = False
        self._timer: asyncio.TimerHandle | None = None
        self._first_byte_at: float | None = None
        self._head_timeout = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        settings = self.settings()
        self._head_timeout = settings.head_timeout
        cap = self.cap
        if cap is not None and not cap.admit(transport, settings.max_connections):
            self._decided = True
            self.overflow = Overflow(transport, cap.name, settings.max_connections,  # type: ignore[arg-type]
                                     settings.head_timeout)
            return
        self.inner = self.make_inner()
        self._timer = asyncio.get_running_loop().call_later(settings.idle_timeout, transport.close)

    def _attach(self) -> None:
        self._decided = self._attached = True
        if self._timer is not None:
            self._timer.cancel()
        inner = self.inner
        assert inner is not None
        if self._first_byte_at is not None and hasattr(inner, "head_started"):
            inner.head_started = self._first_byte_at  # the head's deadline runs from its first byte
        inner.connection_made(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._attached:
            self.inner.data_received(data)  # type: ignore[union-attr]
            return
        if self._decided:
            if self.overflow is not None:
                self.overflow.data_received(data)
            return  # a CONNECT was answered; the connection is closing or taken over
        if self._first_byte_at is None and data:
            loop = asyncio.get_running_loop()
            self._first_byte_at = loop.time()
            if self._timer is not None:
                self._timer.cancel()
            assert self.transport is not None
            self._timer = loop.call_later(self._head_timeout, self.transport.close)
        self._head += data
        if len(self._head) < 8 and b" " not in self._head:
            return  # not enough to tell the method yet
        if self._head[:8].upper() != b"CONNECT ":
            head, self._head = self._head, b""
            self._attach()
            self.inner.data_received(head)  # type: ignore[union-attr]
            return
        end = self._head.find(b"\r\n\r\n")
        if end < 0 and len(self._head) < MAX_CONNECT_HEAD:
            return  # the rest of the CONNECT head is still on its way
        self._decided = True
        if self._timer is not None:
            self._timer.cancel()
        assert self.transport is not None
        if self.interceptor is None or end < 0:
            self.transport.write(_RESPONSE)
            self.transport.close()
            return
        head, rest, self._head = self._head[:end + 4], self._head[end + 4:], b""
        self.interceptor.take_over(self.transport, head, rest)

    def eof_received(self) -> bool | None:
        if self._attached:
            return self.inner.eof_received()  # type: ignore[union-attr]
        if self.overflow is not None:
            return self.overflow.eof_received()
        if self._decided:
            return None
        self._attach()
        if self._head:
            self.inner.data_received(self._head)  # type: ignore[union-attr]
            self._head = b""
        return self.inner.eof_received()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.cap is not None and self.transport is not None:
            self.cap.release(self.transport)
        if self.overflow is not None:
            self.overflow.lost()
        if self._attached:
            self.inner.connection_lost(exc)  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        if self._attached:
            self.inner.pause_writing()  # type: ignore[union-attr]

    def resume_writing(self) -> None:
        if self._attached:
            self.inner.resume_writing()  # type: ignore[union-attr]


class GuardedSite(web.BaseSite):
    __slots__ = ("_host", "_port", "_interceptor", "_settings", "cap")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, backlog: int = 128,
                 ssl_context: ssl.SSLContext | None = None, interceptor=None,
                 settings: Callable[[], ClientSettings] = ClientSettings, name: str = "default") -> None:
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._interceptor = interceptor
        self._settings = settings
        self.cap = ConnectionCap(name)

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            lambda: ConnectGuard(server, self._interceptor, self._settings, self.cap), self._host,
            self._port, ssl=self._ssl_context, backlog=self._backlog, reuse_address=True,
            family=socket.AF_INET6 if ":" in self._host else socket.AF_INET,
            ssl_handshake_timeout=self._settings().head_timeout if self._ssl_context else None)
