"""The road every request takes: one ordered list of filters.

A filter is an object with ``name`` and one of two hooks (``proxy.filters.types`` declares them, with the
lifecycle hooks ``load``, ``close``, ``snapshot`` and ``metric_rows``, as typed protocols):

``before(ctx) -> None | Reply | Awaitable[Reply | None]`` (a *step*: it only looks on the way in)
  Runs once, before everything after it in ``ORDER``. ``None``: go on. A ``Reply``: answer locally; the
  rest of the road is skipped, and the filters before it see the reply on the way back. An awaitable
  (the step has to wait: read a body, refresh a token) resolves to either. A step costs a plain call,
  not a coroutine.
``async handle(ctx, call_next) -> Reply`` (a *wrapper*: it encloses the rest of the road)
  May answer locally without calling ``call_next``; wait, then ``await call_next(ctx)``; look at the
  reply on the way back (status, headers; wrap ``reply.stream`` to see the body); call ``call_next(ctx)``
  again, once, after ``await reply.discard()`` (a replay after a 429). A wrapper may also define
  ``wants(ctx) -> bool``: when it says False the request passes it by without entering it.

Every filter appends what it decided to ``ctx.decisions``; the access log prints them. A filter that
answers locally is named in ``ctx.answered_by`` (the innermost one that did; for a step the pipeline
sets it, a wrapper sets it with ``ctx.answer(name, reply)``).

``ORDER`` below is the whole order, outermost first, the same order in which a log line reads. Filters
receive shared state from the ``Services`` object the app owns, never from module globals. Steps cost a
function call and wrappers a coroutine frame that every resumption of the request passes through, so a
filter is a step unless it has to see or repeat what comes after it.

``compose`` checks every filter once, when it builds the road (``proxy.filters.types.check``): a filter
with neither hook, both, or a public method that is no hook (a misspelt ``befor`` or ``wnats``) stops the
start with a ``ContractError``. Nothing is checked per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from proxy.context import Context, Next, Reply
from proxy.filters import (
    access_log,
    cache,
    call_budget,
    classify,
    coalesce,
    error_budget,
    forward,
    read_body,
    retry,
    rewrite_filter,
    rewrite_links,
    route,
    token_broker,
    token_fresh,
)
from proxy.filters.types import Filter, Step, Wants, Wrapper, check

if TYPE_CHECKING:
    from proxy.services import Services

__all__ = ["ORDER", "Context", "Filter", "Next", "Reply", "build", "compose"]

# The order of work, outermost first. Later features insert their filter here, and nowhere else:
#   access_log → route → classify → read_body → token_broker → cache → coalesce → rewrite_filter
#   → error_budget → retry → call_budget → rewrite_links → token_fresh → error_headroom → forward
# cache and coalesce come after token_broker (their key needs the token's chain) and before everything
# that counts or spends (error and call budget, retries): a reused answer costs nothing. They sit
# outside rewrite_links, so what they share is the answer as a tool gets it: their key includes how its
# links are rewritten (listener, Host, links rules), so every tool still gets its own links.
ORDER = (
    access_log.AccessLog,   # step: one line per request, with every decision taken below
    route.Route,            # step: pick the configured Exact host; refuse anything else (never an open proxy)
    classify.Classify,      # step: app, division, endpoint, kind
    read_body.ReadBody,     # step: refuse oversize bodies; buffer small ones so they can be replayed
    token_broker.TokenBroker,  # step: token requests answered from the chain; the app of a known token
    cache.Cache,            # listed endpoints' GETs answered from memory for their TTL; writes forget them
    coalesce.Coalesce,      # identical GETs in flight at once go to Exact once; every waiter gets the answer
    rewrite_filter.RewriteFilter,  # add the $filter Exact demands; learn new such endpoints
    error_budget.ErrorBudget,  # count Exact's 4xx per endpoint; answer locally before Exact would block
    retry.Retry,            # transient faults retried (GET/HEAD; any method only if nothing was sent)
    call_budget.CallBudget,  # reserve in Exact's minute/day windows or wait in the division's queue
    rewrite_links.RewriteLinks,  # Exact's absolute links point back at the proxy
    token_fresh.TokenFresh,  # the token decided last (after any queue, per retry); Exact's 401 noted
    error_budget.ErrorHeadroom,  # reserve error room per call sent; count Exact's 4xx; detect its block
    forward.Forward,        # send it to Exact, stream the answer back
)

_Before = Callable[[Context], "Reply | Awaitable[Reply | None] | None"]


def compose(filters: Sequence[Filter]) -> Next:
    """Chain the filters, innermost first: a wrapper's ``call_next`` is whatever follows it; a run of
    steps becomes one plain function in front of what follows them. Each filter is checked against its
    contract first (``ContractError`` when it breaks it)."""

    async def end(ctx: Context) -> Reply:  # pragma: no cover - forward never calls further
        raise RuntimeError("the last filter must answer")

    checked = [check(f) for f in filters]
    handler: Next = end
    steps: list[tuple[str, _Before]] = []
    for f in reversed(checked):
        if isinstance(f, Step):
            steps.insert(0, (f.name, f.before))
            continue
        if steps:
            handler, steps = _steps(tuple(steps), handler), []
        handler = _wrapper(f, handler)
    if steps:
        handler = _steps(tuple(steps), handler)
    return handler


def _wrapper(f: Wrapper, call_next: Next) -> Next:
    handle = f.handle
    enter: Next
    if isinstance(f, Wants):
        wants = f.wants

        def enter(ctx: Context) -> Awaitable[Reply]:
            return handle(ctx, call_next) if wants(ctx) else call_next(ctx)
    else:
        def enter(ctx: Context) -> Awaitable[Reply]:
            return handle(ctx, call_next)
    enter.__qualname__ = f"enter[{f.name}]"
    return enter


def _steps(steps: tuple[tuple[str, _Before], ...], call_next: Next) -> Next:
    def run(ctx: Context) -> Awaitable[Reply]:
        for i, (name, before) in enumerate(steps):
            got = before(ctx)
            if got is not None:  # a local answer, or a step that has to wait: finish in a coroutine
                return _finish_steps(ctx, name, got, steps[i + 1:], call_next)
        return call_next(ctx)

    run.__qualname__ = "steps[" + ",".join(name for name, _ in steps) + "]"
    return run


async def _finish_steps(ctx: Context, name: str, got: Reply | Awaitable[Reply | None],
                        rest: tuple[tuple[str, _Before], ...], call_next: Next) -> Reply:
    while True:
        reply = got if isinstance(got, Reply) else await got
        if reply is not None:
            return ctx.answer(name, reply)
        for i, (step_name, before) in enumerate(rest):
            later = before(ctx)
            if later is not None:  # this step answers or waits: go round again with it
                name, rest, got = step_name, rest[i + 1:], later
                break
        else:
            return await call_next(ctx)


def build(services: Services) -> tuple[list[Filter], Next]:
    """Instantiate ``ORDER`` with the app's shared services; return the filters and the entry point
    (``ContractError`` when a filter breaks its contract)."""
    filters: list[Filter] = [cls(services) for cls in ORDER]
    return filters, compose(filters)
