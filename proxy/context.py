"""The per-request objects: ``Context`` (what a request carries through the filters) and ``Reply``
(what comes back up), and ``Next``, the rest of the road a wrapper calls. See ``proxy.pipeline`` for
the order of the filters and ``proxy.filters.types`` for the hooks a filter has.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from multidict import CIMultiDict

if TYPE_CHECKING:
    from aiohttp import web

    from proxy.exact.classify import Classification
    from proxy.http.body import RequestBody
    from proxy.policy import Policy
    from proxy.policy.hosts import Listener, Upstream
    from proxy.tokens.chains import Chain


@dataclass(slots=True)
class Reply:
    """What travels back up the filter list: status, headers, and a body.

    The body is either ``body`` (bytes, a local answer or a small buffered one) or ``stream`` (an async
    iterator of chunks from upstream, read once by the response writer). ``length`` is the body length
    when known; a filter that changes the body sets it to None. ``release`` gives the upstream connection
    back; ``discard()`` must be awaited by a filter that drops an upstream reply (e.g. to replay).
    """

    status: int
    headers: CIMultiDict
    body: bytes | None = b""
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None
    local: bool = False
    release: Callable[[], Awaitable[None]] | None = None
    reason: str | None = None             # the status line's reason phrase, as Exact sent it
    failure: str | None = None            # connect | timeout | reset: why there is no upstream answer

    @classmethod
    def make_local(cls, status: int, body: bytes, headers: dict[str, str] | None = None,
                   content_type: str = "application/json; charset=utf-8") -> Reply:
        h = CIMultiDict(headers or {})
        if body and "Content-Type" not in h:
            h["Content-Type"] = content_type
        return cls(status=status, headers=h, body=body, length=len(body), local=True)

    async def read_body(self, limit: int = 1024 * 1024) -> bytes:
        """Read a streamed body into ``body`` (at most ``limit`` bytes kept) so a filter can look at it;
        the reply stays sendable afterwards."""
        if self.stream is not None:
            chunks, size = [], 0
            async for chunk in self.stream:
                if size < limit:
                    chunks.append(chunk)
                size += len(chunk)
            self.stream = None
            self.body = b"".join(chunks)[:limit]
            self.length = len(self.body)
            await self.discard()
        return self.body or b""

    async def discard(self) -> None:
        if self.release is not None:
            release, self.release = self.release, None
            await release()


Next = Callable[["Context"], Awaitable[Reply]]

_ids = itertools.count(1)


@dataclass(slots=True)
class Context:
    """Everything one request carries through the filters."""

    request: web.BaseRequest
    listener: Listener
    policy: Policy
    started: float                        # time.perf_counter() at arrival (real time, for the log)
    method: str
    raw_path: str                         # as the client sent it, percent-encoding intact
    raw_query: str                        # as the client sent it, without the '?'
    id: int = field(default_factory=_ids.__next__)
    client_path: str = ""                 # the target as the tool sent it, for the log
    client_query: str = ""
    upstream: Upstream | None = None
    cls: Classification | None = None
    body: RequestBody | None = None
    deadline: float | None = None         # clock.monotonic() by which an answer must be under way
    attempt: int = 0                      # upstream attempts made (replays included)
    decisions: list[str] = field(default_factory=list)
    upstream_ms: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    header_changes: dict[str, str | None] = field(default_factory=dict)  # for the upstream; None drops
    absolute_form: bool = False           # the tool addressed Exact's own host (HTTP_PROXY style)
    answered_by: str | None = None        # the filter that answered without Exact (set by the pipeline)
    queued_ms: float = 0.0                # time spent waiting for call budget (set by call_budget)
    max_wait: tuple[float, str] | None = None  # how long it may queue, and why (call_budget, when it waits)
    upstream_failure: str | None = None   # connect | timeout | reset of the last upstream attempt
    finishers: list[Callable[[Context, int], None]] = field(default_factory=list)
    tokenless: bool = False               # no Authorization at all (set by classify)
    chain: Chain | None = None            # the token chain the Bearer token belongs to (token_broker)
    bearer: str | None = None             # the Bearer token as the tool sent it, when ``chain`` is set

    @property
    def target(self) -> str:
        return self.raw_path + ("?" + self.raw_query if self.raw_query else "")

    def __post_init__(self) -> None:
        self.client_path, self.client_query = self.raw_path, self.raw_query

    def decide(self, text: str) -> None:
        self.decisions.append(text)

    def answer(self, by: str, reply: Reply) -> Reply:
        """Name filter ``by`` as the one that answered without Exact when ``reply`` is local (the
        innermost filter that did is kept); returns ``reply``."""
        if reply.local and self.answered_by is None:
            self.answered_by = by
        return reply
