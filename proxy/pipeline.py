"""The road every request takes: one ordered list of filters.

A filter is an object with ``name`` and ``async handle(ctx, call_next) -> Reply`` (``proxy.context``).
It may
- answer locally: return a ``Reply`` without calling ``call_next`` (``Reply.make_local(...)``);
- wait, then call ``await call_next(ctx)``;
- look at the reply on the way back (status, headers; wrap ``reply.stream`` to see the body);
- call ``call_next(ctx)`` again, once, after ``await reply.discard()`` (a replay after a 429).
Every filter appends what it decided to ``ctx.decisions``; the access log prints them.

``ORDER`` below is the whole order, outermost first, the same order in which a log line reads. Filters
receive shared state from the ``Services`` object the app owns, never from module globals.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from .context import Context, Filter, Next, Reply
from .filters import (
    access_log,
    call_budget,
    classify,
    error_budget,
    forward,
    read_body,
    retry,
    rewrite_filter,
    rewrite_links,
    route,
    token_broker,
)

__all__ = ["ORDER", "Context", "Filter", "Next", "Reply", "build", "compose"]

# The order of work, outermost first. Later features insert their filter here, and nowhere else:
#   access_log → route → classify → read_body → token_broker → rewrite_filter → error_budget
#   → call_budget → retry → rewrite_links → error_headroom → forward
ORDER = (
    access_log.AccessLog,   # one line per request, with every decision taken below
    route.Route,            # pick the configured Exact host; refuse anything else (never an open proxy)
    classify.Classify,      # app, division, endpoint, kind
    read_body.ReadBody,     # refuse oversize bodies; buffer small ones so they can be replayed
    token_broker.TokenBroker,  # token requests answered from the chain; expired tokens replaced
    rewrite_filter.RewriteFilter,  # add the $filter Exact demands; learn new such endpoints
    error_budget.ErrorBudget,  # count Exact's 4xx per endpoint; answer locally before Exact would block
    retry.Retry,            # transient faults retried (GET/HEAD; any method only if nothing was sent)
    call_budget.CallBudget,  # reserve in Exact's minute/day windows or wait in the division's queue
    rewrite_links.RewriteLinks,  # Exact's absolute links point back at the proxy
    error_budget.ErrorHeadroom,  # reserve error room per call sent; count Exact's 4xx; detect its block
    forward.Forward,        # send it to Exact, stream the answer back
)


def compose(filters: list[Filter]) -> Next:
    """Chain the filters: each one's ``call_next`` is the next one's ``handle``."""

    async def end(ctx: Context) -> Reply:  # pragma: no cover - forward never calls further
        raise RuntimeError("the last filter must answer")

    handler: Next = end
    for f in reversed(filters):
        handler = functools.partial(_call, f.handle, f.name, handler)
    return handler


async def _call(handle: Callable[[Context, Next], Awaitable[Reply]], name: str, call_next: Next,
                ctx: Context) -> Reply:
    reply = await handle(ctx, call_next)
    if reply.local and ctx.answered_by is None:
        ctx.answered_by = name  # the innermost filter that answered without Exact
    return reply


def build(services: Any) -> tuple[list[Filter], Next]:
    """Instantiate ``ORDER`` with the app's shared services; return the filters and the entry point."""
    filters = [cls(services) for cls in ORDER]
    return filters, compose(filters)
