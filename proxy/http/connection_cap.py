"""At most ``clients.max_connections`` open connections per listener; the next one gets a 503.

Contract
- ``ConnectionCap(name)`` counts the open connections of one listener. ``admit(transport, limit)`` is
  asked for every new connection: True (and it counts) while fewer than ``limit`` are open;
  ``release(transport)`` when it closes. Connections handed on elsewhere (CONNECT interception, blind
  tunnels) keep counting until their transport closes: at the cap, closed ones are found and dropped
  first, so the count never leaks and the usual path costs one set operation.
- ``Overflow`` answers a connection beyond the cap: it reads the request head (up to 8 KiB, for at most
  ``head_timeout`` seconds), answers ``503`` in Exact's envelope with ``Retry-After: 1`` and
  ``Connection: close``, shuts its side, discards what the tool still sends for up to a second (so the
  answer is not lost to a reset) and closes. Nothing of the request is forwarded; no aiohttp handler
  is made for it.
- A WARNING names the listener when it reaches its cap, at most once a minute, with the number refused.
"""

from __future__ import annotations

import asyncio
import logging

from proxy.errors import envelope

log = logging.getLogger("exact_proxy.listen")

RETRY_AFTER = 1
LINGER = 1.0
MAX_HEAD = 8192
WARN_EVERY = 60.0


def _answer(name: str, limit: int) -> bytes:
    body = envelope(f"listener {name!r} has max_connections ({limit}) open; try again in {RETRY_AFTER} s "
                    "(policies.yaml clients.max_connections)")
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Retry-After: " + str(RETRY_AFTER).encode() + b"\r\nX-Exact-Proxy: local\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class ConnectionCap:
    def __init__(self, name: str) -> None:
        self.name = name
        self.open: set[asyncio.BaseTransport] = set()
        self.refused = 0
        self._warned_at: float | None = None

    def admit(self, transport: asyncio.BaseTransport, limit: int) -> bool:
        if len(self.open) >= limit:
            self.open = {t for t in self.open if not t.is_closing()}
            if len(self.open) >= limit:
                self._note_refusal(limit)
                return False
        self.open.add(transport)
        return True

    def release(self, transport: asyncio.BaseTransport) -> None:
        self.open.discard(transport)

    def _note_refusal(self, limit: int) -> None:
        self.refused += 1
        now = asyncio.get_running_loop().time()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("listener %s has max_connections (%d) open: new connections get 503 (%d refused "
                        "so far)", self.name, limit, self.refused)


class Overflow:
    """The protocol side of one connection beyond the cap (driven by ``listen.ConnectGuard``)."""

    def __init__(self, transport: asyncio.Transport, name: str, limit: int, head_timeout: float) -> None:
        self.transport = transport
        self.response = _answer(name, limit)
        self.head = b""
        self.answered = False
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(head_timeout,
                                                                                        self.answer)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # lingering: what the tool still sends is dropped
        self.head += data
        if b"\r\n\r\n" in self.head or len(self.head) >= MAX_HEAD:
            self.answer()

    def answer(self) -> None:
        if self.answered:
            return
        self.answered = True
        if self.timer is not None:
            self.timer.cancel()
        t = self.transport
        if t.is_closing():
            return
        t.write(self.response)
        if t.can_write_eof():
            t.write_eof()
            self.timer = asyncio.get_running_loop().call_later(LINGER, t.close)
        else:
            t.close()

    def eof_received(self) -> bool:
        self.answer()
        return False  # the transport closes once the answer is out

    def lost(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
