"""The request body on its way to Exact: buffered when small (so a 429 can be replayed), streamed when
large (so a 40 MB upload never sits in memory).

Contract
- ``RequestBody.prepare()`` reads a body whose declared ``Content-Length`` is at most ``replay_buffer``
  into memory; such a body is ``replayable``. A larger or chunked body is streamed from the client
  exactly once: ``replayable`` is False and a second ``payload()`` raises ``BodyConsumed``.
- More than ``max_size`` bytes, declared or counted while streaming, raises ``BodyTooLarge``; nothing
  beyond that is read.
- ``size`` counts the bytes read from the client so far.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

CHUNK = 64 * 1024


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class BodyConsumed(Exception):
    """A streamed body was already sent once and cannot be sent again."""


class RequestBody:
    def __init__(self, request: web.BaseRequest, max_size: int, replay_buffer: int) -> None:
        self.request = request
        self.max_size = max_size
        self.replay_buffer = replay_buffer
        self.data: bytes | None = None
        self.size = 0
        self._streamed = False
        self.declared = request.content_length

    @property
    def present(self) -> bool:
        return self.request.body_exists

    @property
    def replayable(self) -> bool:
        return self.data is not None

    def absent(self) -> bool:
        """True (and the body is the empty, replayable ``b""``) when the request has no body at all:
        ``prepare()`` is then not needed."""
        if self.declared is None and not self.request.body_exists:
            self.data = b""
            return True
        return False

    async def prepare(self) -> None:
        if self.declared is not None and self.declared > self.max_size:
            raise BodyTooLarge(self.max_size)
        if not self.present:
            self.data = b""
            return
        if self.declared is not None and self.declared <= self.replay_buffer:
            self.data = await self.request.content.readexactly(self.declared) if self.declared else b""
            self.size = len(self.data)

    async def read_all(self, limit: int) -> bytes:
        """Read the whole body into memory (for filters that must parse it, e.g. token requests)."""
        if self.data is not None:
            return self.data
        if self._streamed:
            raise BodyConsumed()
        chunks = []
        async for chunk in self._stream(min(limit, self.max_size)):
            chunks.append(chunk)
        self.data = b"".join(chunks)
        return self.data

    def payload(self) -> bytes | AsyncIterator[bytes] | None:
        if self.data is not None:
            return self.data if self.data or self.present else None
        if self._streamed:
            raise BodyConsumed()
        self._streamed = True
        return self._stream(self.max_size)

    async def _stream(self, limit: int) -> AsyncIterator[bytes]:
        self._streamed = True
        content = self.request.content
        while True:
            chunk = await content.readany()
            if not chunk:
                return
            self.size += len(chunk)
            if self.size > limit:
                raise BodyTooLarge(limit)
            yield chunk
