"""Deadlines for the connection between requests: idle keep-alive and the request head.

Contract
- ``TimedRequestHandler`` is aiohttp's per-connection ``RequestHandler`` with the ``clients`` settings of
  the policy in force when the connection was made (``settings()`` of its server):
  - **idle**: a connection with no request under way and no byte of the next one is closed after
    ``idle_timeout`` seconds (aiohttp's own keep-alive timer, which otherwise waits 3,630 s), silently,
    as keep-alive connections are;
  - **head**: once the first byte of a request head has come, the whole head (request line and headers)
    must be there within ``head_timeout`` seconds, however the bytes trickle in; otherwise the tool gets
    ``408`` in Exact's envelope and the connection is closed. Nothing of such a request is forwarded.
    A head that starts late in the idle window gets its full ``head_timeout``: the idle timer gives way.
- Bodies have their own deadline where they are read (``proxy.http.body``): only time spent waiting on the
  client counts, never time the proxy takes (a queue, a slow upstream).
- Cost on the request path: one counter comparison per ``data_received``; the head timer is armed only
  when a read ends inside a head.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from proxy.errors import envelope

log = logging.getLogger("exact_proxy.listen")


def _timeout_answer(head_timeout: float) -> bytes:
    body = envelope(f"the request head (request line and headers) did not arrive within head_timeout "
                    f"({head_timeout:g} s; policies.yaml clients.head_timeout); connection closed")
    return (b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"X-Exact-Proxy: local\r\nConnection: close\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class TimedRequestHandler(RequestHandler):
    __slots__ = ("_head_timeout", "_head_timer", "_payload", "head_started")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = 0.0
        self._head_timer: asyncio.TimerHandle | None = None
        self._payload: StreamReader | None = None  # the newest request head's body, while it comes
        # loop time of the first byte, when a guard in front (listen.ConnectGuard) read it first
        self.head_started: float | None = None

    def connection_made(self, transport) -> None:
        settings = self._manager.settings()  # type: ignore[union-attr]
        self._head_timeout = settings.head_timeout
        # aiohttp's keep-alive timer (armed at connection start and after each answer, closing the
        # connection if no whole request came by then) is the idle deadline
        self._keepalive_timeout = settings.idle_timeout
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        payload = self._payload
        super().data_received(data)
        if self._request_count != count:  # one or more whole heads came
            self.head_started = None
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._messages:
                payload = self._messages[-1][1]
                self._payload = None if payload.is_eof() else payload
            return
        if payload is not None:
            # these bytes began as body bytes (``proxy.http.body`` keeps their deadline). Whether a read that
            # ended the body also began the next head is not known here: the idle timer bounds that one.
            if payload.is_eof():
                self._payload = None
            return
        if self._head_timer is not None or not data or self._force_close or self._close:
            return
        # the read ended inside a request head: from now on the head's deadline counts, not the idle one
        started, self.head_started = self.head_started, None
        if started is None:
            started = self._loop.time()
        self._head_timer = self._loop.call_at(started + self._head_timeout, self._head_expired)
        self.keep_alive(True)  # cancels aiohttp's idle timer; it is armed again after the answer

    def _head_expired(self) -> None:
        self._head_timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            # a request is still being answered (the trickling head is pipelined behind it): look again
            # a head_timeout later; the idle timer is back once that answer is out
            self._head_timer = self._loop.call_later(self._head_timeout, self._head_expired)
            return
        transport = self.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername")
        log.info("closed a connection from %s: its request head did not arrive within head_timeout (%g s)",
                 peer[0] if peer else "?", self._head_timeout)
        transport.write(_timeout_answer(self._head_timeout))
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)
