"""The request body on its way to Exact: buffered when small (so a 429 can be replayed), streamed when
large (so a 40 MB upload never sits in memory), and never longer than allowed or slower than allowed.

Contract
- ``RequestBody.prepare()`` reads a body whose declared ``Content-Length`` is at most ``replay_buffer``
  into memory; such a body is ``replayable``. A larger or chunked body is streamed from the client
  exactly once: ``replayable`` is False and a second ``payload()`` raises ``BodyConsumed``.
- More than ``max_size`` bytes raises ``BodyTooLarge``: at once in ``prepare()`` when the declared
  length says so (nothing is read, nothing is started upstream), else from the stream before the chunk
  that crosses the limit is handed on. A stream that raises never ends, so the request upstream is never
  complete (no last chunk, fewer bytes than declared) and ``forward`` drops that connection.
- ``Expect: 100-continue`` (HTTP/1.1) is answered with ``100 Continue`` right before the body is first
  read, so a body that will be refused (too large, or never read) is not sent for nothing. Any other
  expectation raises ``ExpectationFailed`` in ``prepare()`` (417).
- Deadlines (``clients`` settings): while the proxy waits for the next piece of the body, at most
  ``body_timeout`` seconds pass without a byte, and all the time spent waiting on the client stays
  within ``body_timeout`` plus one second per ``body_min_rate`` bytes received; otherwise
  ``BodyStalled``. Only time spent waiting on the client counts, never the proxy's own (a queue, an
  upstream that reads slowly). Data already received is taken without arming a timer.
- The exception that ended the body is kept in ``failure`` (the HTTP client wraps what a stream raises);
  ``refusal(exc)`` is the local answer for it: 413, 408 or 417, ``Connection: close``, Exact's envelope.
- ``size`` counts the bytes read from the client so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, web

from proxy.context import Reply
from proxy.errors import exact_error
from proxy.http.client_settings import ClientSettings

CHUNK = 64 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DEFAULT_CLIENTS = ClientSettings()


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class BodyStalled(Exception):
    """The client stopped sending the body, or sends it slower than ``body_min_rate``."""


class ExpectationFailed(Exception):
    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


class BodyConsumed(Exception):
    """A streamed body was already sent once and cannot be sent again."""


def refusal(exc: Exception) -> tuple[str, Reply]:
    """The decision text and the local answer for a body that ``exc`` ended."""
    close = {"Connection": "close"}
    if isinstance(exc, BodyTooLarge):
        return "refused (body too large)", exact_error(
            413, f"request body is larger than max_request_body ({exc.limit} bytes); Exact refuses such "
            "bodies too", close)
    if isinstance(exc, ExpectationFailed):
        return "refused (expectation)", exact_error(
            417, f"Expect: {exc.value[:80]!r} is not an expectation this proxy can meet (only 100-continue)",
            close)
    return "refused (body stalled)", exact_error(408, str(exc), close)


class RequestBody:
    def __init__(self, request: web.BaseRequest, max_size: int, replay_buffer: int,
                 clients: ClientSettings = _DEFAULT_CLIENTS) -> None:
        self.request = request
        self.max_size = max_size
        self.replay_buffer = replay_buffer
        self.clients = clients
        self.data: bytes | None = None
        self.size = 0
        self.failure: Exception | None = None
        self._streamed = False
        self._continue = False   # the tool waits for "100 Continue" before it sends the body
        self._waited = 0.0       # seconds spent waiting on the client for body bytes
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
            raise self._fail(BodyTooLarge(self.max_size))
        if not self.present:
            self.data = b""
            return
        expect = self.request.headers.get("Expect")
        if expect is not None:
            if expect.strip().lower() != "100-continue":
                raise self._fail(ExpectationFailed(expect))
            self._continue = self.request.version >= HttpVersion11  # HTTP/1.0: ignored (RFC 9110 10.1.1)
        if self.declared is not None and self.declared <= self.replay_buffer:
            self.data = await self._read_declared(self.declared) if self.declared else b""

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

    async def _read_declared(self, n: int) -> bytes:
        content = self.request.content
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = await self._next(content)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            got += len(chunk)
            self.size = got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _stream(self, limit: int) -> AsyncIterator[bytes]:
        self._streamed = True
        content = self.request.content
        while True:
            chunk = await self._next(content)
            if not chunk:
                return
            self.size += len(chunk)
            if self.size > limit:
                raise self._fail(BodyTooLarge(limit))
            yield chunk

    async def _next(self, content) -> bytes:
        """The next bytes of the body (b"" at its end), within the body's deadlines."""
        if self._continue:
            self._continue = False
            transport = self.request.transport
            if transport is not None and not transport.is_closing():
                transport.write(CONTINUE)
        chunk = content.read_nowait()
        if chunk or content.at_eof():
            return chunk
        clients = self.clients
        wait = clients.body_timeout
        by_rate = False
        if clients.body_min_rate:
            left = clients.body_timeout + self.size / clients.body_min_rate - self._waited
            if left < wait:
                wait, by_rate = max(left, 0.0), True
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            async with asyncio.timeout(wait):
                return await content.readany()
        except TimeoutError:
            if by_rate:
                raise self._fail(BodyStalled(
                    f"the request body came slower than body_min_rate ({clients.body_min_rate} bytes a second "
                    f"after body_timeout {clients.body_timeout:g} s of grace; policies.yaml clients): "
                    f"{self.size} bytes in {self._waited + wait:.1f} s of waiting")) from None
            raise self._fail(BodyStalled(
                f"no byte of the request body came for body_timeout ({clients.body_timeout:g} s; "
                f"policies.yaml clients.body_timeout) after {self.size} bytes")) from None
        finally:
            self._waited += loop.time() - t0

    def _fail(self, exc: Exception) -> Exception:
        self.failure = exc
        return exc
