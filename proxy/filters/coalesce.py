"""Filter ``coalesce``: identical GETs in flight at the same time go to Exact once.

Contract (``coalesce.enabled``, on by default):
- A GET whose ``proxy.reuse.key.answer_key`` equals that of a GET already under way (same upstream,
  target, ``Accept``/``Accept-Encoding``/``Accept-Language``, app and token chain, or the same
  ``Authorization`` for a token the broker does not know, and the same link rewriting) waits for that
  call instead of making its own, and gets the same status, reason, headers and body (its links are
  the ones its own call would have got: the key includes how they are rewritten). Writes (POST, PUT,
  DELETE, PATCH) never coalesce, and a write to an endpoint closes the calls in flight for it to later
  GETs (they make a call of their own, which sees the write).
- It sits before ``rewrite_filter``, ``error_budget``, ``retry`` and ``call_budget``: the shared call
  passes all of them once; a waiter costs no call budget, no error budget and no Exact call, and its
  log line has ``attempts 0`` and the decision ``coalesced with a call in flight (request N)``. The
  call that was shared notes ``answer shared with N coalesced calls``. Waiters are counted as answered
  locally by ``coalesce`` in the metrics.
- The shared call runs on its own: a waiter that disconnects leaves the others waiting for it; when
  the first caller goes away, the call goes on for those still waiting (it is cancelled only when
  nobody waits for it any more).
- An answer is shared only when it fits ``coalesce.max_body`` (1 MiB; it is held in memory); a larger
  one streams to the first caller, and each waiter then makes its own call (``not coalesced (answer
  over N bytes)``); so does each waiter of a call that failed in the proxy.
- Node-local: in cluster mode (``services.cluster``) each node coalesces the calls it receives.
- Status (``snapshot``): calls in flight, calls shared, answers coalesced, answers too large to share;
  metrics ``exact_proxy_coalesced_answers`` and ``exact_proxy_coalesce_shared_calls``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.context import Context, Next, Reply
from proxy.reuse.buffer import Held, hold
from proxy.reuse.key import WRITES, AnswerKey, answer_key, scope_of

if TYPE_CHECKING:
    from proxy.ops.metrics import Row
    from proxy.services import Services

METHODS = WRITES | {"GET"}


@dataclass(slots=True)
class _Flight:
    leader: int                       # the request id of the call that went out
    done: asyncio.Future[Held | None]  # None: make a call of your own
    waiting: int = 0                  # waiters still listening
    leader_gone: bool = False
    why: str = "the shared call failed"  # why waiters make their own call, when they must
    task: asyncio.Task[Reply] | None = field(default=None, repr=False)


class Coalesce:
    name = "coalesce"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.flights: dict[AnswerKey, _Flight] = {}
        self.coalesced = 0   # answers given from another tool's call
        self.shared = 0      # calls whose answer went to at least one waiter
        self.too_large = 0   # waiters that made their own call because the answer was too large

    def wants(self, ctx: Context) -> bool:
        return ctx.method in METHODS and ctx.policy.coalesce.enabled

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"in_flight": len(self.flights), "shared_calls": self.shared, "coalesced_answers": self.coalesced,
                 "too_large": self.too_large}]

    def metric_rows(self) -> Iterator[Row]:
        yield ("exact_proxy_coalesced_answers", "Answers given from an identical call already in flight "
               "(no Exact call of their own)", {}, self.coalesced)
        yield ("exact_proxy_coalesce_shared_calls", "Exact calls whose answer went to more than one tool", {},
               self.shared)

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        if ctx.method != "GET":
            scope = scope_of(ctx)
            if scope is not None and self.flights:  # later GETs of this endpoint must see the write
                for closed in [k for k in self.flights if k.scope == scope]:
                    del self.flights[closed]
            return await call_next(ctx)
        key = answer_key(ctx)
        if key is None:
            return await call_next(ctx)
        flight = self.flights.get(key)
        if flight is not None:
            return await self._wait(ctx, flight, call_next)
        return await self._lead(ctx, key, call_next)

    async def _lead(self, ctx: Context, key: AnswerKey, call_next: Next) -> Reply:
        flight = _Flight(ctx.id, asyncio.get_running_loop().create_future())
        self.flights[key] = flight
        task = flight.task = asyncio.ensure_future(self._call(ctx, key, flight, call_next))
        task.add_done_callback(_retrieved)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:  # the first caller went away: the call goes on for the others
            flight.leader_gone = True
            if flight.waiting == 0:
                self._abandon(key, flight)
            raise

    async def _call(self, ctx: Context, key: AnswerKey, flight: _Flight, call_next: Next) -> Reply:
        held: Held | None = None
        try:
            reply = await call_next(ctx)
            held = await hold(reply, ctx.policy.coalesce.max_body)
            if held is None:
                flight.why = f"answer over {ctx.policy.coalesce.max_body} bytes"
                self.too_large += flight.waiting
            elif flight.waiting:
                self.shared += 1
                ctx.decide(f"answer shared with {flight.waiting} coalesced call{'s' if flight.waiting > 1 else ''}")
            if flight.leader_gone:
                await reply.discard()
            return reply
        finally:
            if self.flights.get(key) is flight:
                del self.flights[key]
            if not flight.done.done():
                flight.done.set_result(held)

    async def _wait(self, ctx: Context, flight: _Flight, call_next: Next) -> Reply:
        flight.waiting += 1
        try:
            held = await asyncio.shield(flight.done)
        except asyncio.CancelledError:  # this tool went away; the call goes on for the others
            flight.waiting -= 1
            if flight.leader_gone and flight.waiting == 0:
                for key, f in list(self.flights.items()):
                    if f is flight:
                        self._abandon(key, flight)
                        break
                else:
                    self._abandon(None, flight)
            raise
        flight.waiting -= 1
        if held is None:
            ctx.decide(f"not coalesced ({flight.why})")
            return await call_next(ctx)
        self.coalesced += 1
        ctx.decide(f"coalesced with a call in flight (request {flight.leader})")
        return ctx.answer(self.name, held.reply())

    def _abandon(self, key: AnswerKey | None, flight: _Flight) -> None:
        """Nobody waits for the call any more: cancel it, as if it had never been shared."""
        if key is not None and self.flights.get(key) is flight:
            del self.flights[key]
        if flight.task is not None and not flight.task.done():
            flight.task.cancel()


def _retrieved(task: asyncio.Task[Reply]) -> None:
    """A call whose first caller went away has nobody to raise to: its failure is read here (the
    waiters make their own call)."""
    if not task.cancelled():
        task.exception()
