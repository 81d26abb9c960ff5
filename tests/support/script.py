"""A scripted ``call_next``: what the rest of the road answers a filter under test.

``Script(upstream(503), upstream(200, b"ok"))`` answers the first call with an upstream 503 and the
second with an upstream 200; a call past the end fails the test (or repeats the last step with
``repeat_last=True``). Each call is recorded as a ``Seen`` (the context and, copied at the time of the
call, its target, header changes and attempt count).

The steps stand for what follows a filter:
- ``upstream(status, body, headers, stream=...)``: an answer from Exact, as ``forward`` gives it:
  ``ctx.attempt`` grows by one, ``ctx.upstream_failure`` is cleared, and the reply's ``release`` counts
  in ``script.released`` when a filter discards it.
- ``failure("connect" | "timeout" | "reset")``: no answer from Exact, as ``forward`` reports it: a local
  502 (504 for a timeout) with ``reply.failure``, ``ctx.upstream_failure`` and the decision
  ``upstream <kind>`` set, ``ctx.attempt`` grown by one.
- ``local(status, ...)``: an inner filter answered without Exact (``ctx.answered_by`` names it).
- ``raises(exc)``: the rest of the road raised.
- ``gate(event, step)``: waits for ``event``, then answers with ``step`` (calls in flight).
- any callable ``(ctx) -> Reply | Awaitable[Reply]``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

from proxy.context import Context, Reply
from proxy.errors import exact_error


@dataclass
class Seen:
    """One call of the script: the context, and what it held at that moment."""

    ctx: Context
    method: str
    raw_path: str
    raw_query: str
    header_changes: dict[str, str | None]
    attempt: int
    upstream_failure: str | None

    @property
    def target(self) -> str:
        return self.raw_path + ("?" + self.raw_query if self.raw_query else "")


@dataclass
class _Upstream:
    status: int
    body: bytes | None
    headers: dict[str, str] | list[tuple[str, str]]
    stream: list[bytes] | None
    length: int | None
    reason: str | None

    def __call__(self, ctx: Context, script: Script) -> Reply:
        ctx.attempt += 1
        ctx.upstream_failure = None

        async def release() -> None:
            script.released += 1

        headers = CIMultiDict(self.headers)
        if self.stream is not None:
            return Reply(
                self.status,
                headers,
                None,
                _chunks(self.stream),
                self.length,
                release=release,
                reason=self.reason,
            )
        body = self.body or b""
        return Reply(self.status, headers, body, None, len(body), release=release, reason=self.reason)


async def _chunks(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk


def upstream(
    status: int = 200,
    body: bytes | None = b"",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    stream: list[bytes] | None = None,
    length: int | None = None,
    reason: str | None = None,
) -> _Upstream:
    return _Upstream(status, body, headers or {}, stream, length, reason)


_FAILURE_STATUS = {"connect": 502, "timeout": 504, "reset": 502}


def failure(kind: str) -> Callable[[Context, Script], Reply]:
    if kind not in _FAILURE_STATUS:
        raise ValueError(f"failure kind is connect, timeout or reset, not {kind!r}")

    def fail(ctx: Context, script: Script) -> Reply:
        ctx.attempt += 1
        ctx.decide(f"upstream {kind}")
        ctx.upstream_failure = kind
        reply = exact_error(_FAILURE_STATUS[kind], f"scripted upstream {kind}")
        reply.failure = kind
        return ctx.answer("forward", reply)

    return fail


def local(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, by: str = "inner"
) -> Callable[[Context, Script], Reply]:
    def answer(ctx: Context, script: Script) -> Reply:
        return ctx.answer(by, Reply.make_local(status, body, headers))

    return answer


def raises(exc: BaseException) -> Callable[[Context, Script], Reply]:
    def fail(ctx: Context, script: Script) -> Reply:
        raise exc

    return fail


def gate(event: asyncio.Event, step: Callable[[Context, Script], Any]) -> Callable[[Context, Script], Any]:
    async def wait(ctx: Context, script: Script) -> Reply:
        script.waiting += 1
        try:
            await event.wait()
        finally:
            script.waiting -= 1
        return await _resolve(step, ctx, script)

    return wait


async def _resolve(step: Any, ctx: Context, script: Script) -> Reply:
    params = len(inspect.signature(step).parameters)
    got = step(ctx, script) if params >= 2 else step(ctx)
    if inspect.isawaitable(got):
        got = await got
    return got


class Script:
    """``await script(ctx)`` answers with the next step; ``seen``, ``calls``, ``released``, ``waiting``."""

    def __init__(self, *steps: Any, repeat_last: bool = False) -> None:
        self.steps, self.repeat_last = list(steps), repeat_last
        self.seen: list[Seen] = []
        self.released = 0  # upstream replies a filter discarded
        self.waiting = 0  # calls held at a gate right now

    @property
    def calls(self) -> int:
        return len(self.seen)

    async def __call__(self, ctx: Context) -> Reply:
        index = len(self.seen)
        self.seen.append(
            Seen(
                ctx,
                ctx.method,
                ctx.raw_path,
                ctx.raw_query,
                dict(ctx.header_changes),
                ctx.attempt,
                ctx.upstream_failure,
            )
        )
        if index >= len(self.steps):
            if not (self.repeat_last and self.steps):
                raise AssertionError(
                    f"call_next called {index + 1} times; the script has {len(self.steps)} steps"
                )
            index = len(self.steps) - 1
        return await _resolve(self.steps[index], ctx, self)
