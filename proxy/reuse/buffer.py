"""An answer held in memory so that more than one tool can have it.

Contract
- ``await hold(reply, cap)`` reads the reply's body into memory when it is at most ``cap`` bytes and
  returns a ``Held`` copy of status, reason, headers and body (the reply itself stays sendable: its
  body is then ``reply.body``, the upstream connection given back). A body declared larger than
  ``cap``, or that turns out larger, is not held: None, and the reply still streams to its own tool
  every byte (what was read already, then the rest as it comes). A stream that breaks while it is read
  is not held either; its tool gets what came and then the same error, as it would have.
- ``Held.reply()`` is a fresh ``Reply`` for one more tool: its own headers (the writer changes them)
  and the same body, marked local (the proxy answered it without a call of its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from multidict import CIMultiDict

from proxy.context import Reply


@dataclass(frozen=True, slots=True)
class Held:
    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def size(self) -> int:
        return len(self.body) + sum(len(k) + len(v) for k, v in self.headers)

    def reply(self) -> Reply:
        return Reply(self.status, CIMultiDict(self.headers), self.body, length=len(self.body), local=True,
                     reason=self.reason)


async def hold(reply: Reply, cap: int) -> Held | None:
    if reply.stream is not None:
        if reply.length is not None and reply.length > cap:
            return None
        stream = reply.stream.__aiter__()
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in stream:
                chunks.append(chunk)
                size += len(chunk)
                if size > cap:
                    reply.stream = _rest(chunks, stream, None)
                    return None
        except Exception as exc:  # the upstream broke off: its tool sees that, nobody else
            reply.stream = _rest(chunks, None, exc)
            return None
        reply.stream = None
        reply.body = b"".join(chunks)
        reply.length = len(reply.body)
        await reply.discard()
    elif reply.body is not None and len(reply.body) > cap:
        return None
    return Held(reply.status, reply.reason, tuple(reply.headers.items()), reply.body or b"")


async def _rest(chunks: list[bytes], stream: AsyncIterator[bytes] | None, exc: Exception | None
                ) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
    if exc is not None:
        raise exc
    if stream is not None:
        async for chunk in stream:
            yield chunk
