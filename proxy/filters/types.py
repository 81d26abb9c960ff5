"""The hooks a filter may have, as typed protocols, and the check that a filter has only those.

A filter is an object with a ``name`` and exactly one of the two request hooks: ``before`` (a
``Step``) or ``handle`` (a ``Wrapper``, which may add ``wants``). Beside them it may have the lifecycle
and status hooks that ``proxy.services`` and ``proxy.ops.admin`` call: ``load`` (``Loads``), ``close``
(``Closes``), ``snapshot`` (``Snapshots``) and ``metric_rows`` (``Gauges``). Those are the only public
methods a filter has: a helper's name starts with ``_``. ``check(f)`` enforces that when the pipeline is
built (``proxy.pipeline.compose``), so a misspelt hook (``befor``, ``wnats``, ``metrics_rows``) fails at
start with a message naming the filter and the hook it probably meant, instead of being silently never
called. Nothing here runs per request.

There is no ``reconfigure(old, new)`` hook: every filter reads the policy a request carries
(``ctx.policy``), and the engines re-apply changed settings lazily (the limits book when a division's
next request brings new settings), so a reload needs no call into the filters.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Awaitable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from proxy.context import Context, Next, Reply

if TYPE_CHECKING:
    from proxy.ops.metrics import Row
    from proxy.store.base import Store

__all__ = ["HOOKS", "Closes", "ContractError", "Filter", "Gauges", "Loads", "Snapshots", "Step",
           "StepResult", "Wants", "Wrapper", "check"]

StepResult: TypeAlias = "Reply | Awaitable[Reply | None] | None"


@runtime_checkable
class Step(Protocol):
    """A filter that only looks on the way in.

    ``before(ctx)`` runs once per request, after every filter before it in ``ORDER`` and before every
    filter after it; it costs a plain call (no coroutine). It returns None to let the request go on; a
    ``Reply`` to answer locally (the rest of the road is skipped, the filters before it see the reply on
    the way back, and the pipeline names the step in ``ctx.answered_by``); or an awaitable, when the step
    has to wait (read a body, refresh a token), that resolves to either of those.
    """

    name: str

    def before(self, ctx: Context) -> StepResult: ...


@runtime_checkable
class Wrapper(Protocol):
    """A filter that encloses the rest of the road.

    ``await handle(ctx, call_next)`` runs when the request reaches it (for each attempt, when a wrapper
    outside it repeats the call) and returns the reply the filters before it see. It may answer
    locally without calling ``call_next`` (naming itself with ``ctx.answer(name, reply)``), wait and then
    ``await call_next(ctx)``, look at the reply on the way back, or call ``call_next(ctx)`` once more after
    ``await reply.discard()`` (a replay).
    """

    name: str

    async def handle(self, ctx: Context, call_next: Next) -> Reply: ...


@runtime_checkable
class Wants(Protocol):
    """Optional beside ``handle``: ``wants(ctx)`` runs just before the wrapper would be entered; False
    passes the request by (the wrapper costs no coroutine frame), True enters ``handle``."""

    def wants(self, ctx: Context) -> bool: ...


@runtime_checkable
class Loads(Protocol):
    """``await load(store)`` runs once in ``Services.start()``, after the store opened and before the
    first request, in ``ORDER``: the filter reads back the state it keeps (windows, counts, learned
    filters). Returns nothing; an exception stops the start."""

    async def load(self, store: Store) -> None: ...


@runtime_checkable
class Closes(Protocol):
    """``close()`` runs once in ``Services.close()`` (a clean stop), after the token broker stopped and
    before the store flushes and closes: the filter writes its final, exact figures to the store
    (``put`` only: it never waits). Returns nothing."""

    def close(self) -> None: ...


@runtime_checkable
class Snapshots(Protocol):
    """``snapshot()`` runs for each ``/_proxy/status`` request: JSON-ready rows (counts, times, ids;
    never a token) shown under the filter's ``name``. An exception shows as an error entry, not a
    failed page."""

    name: str

    def snapshot(self) -> list[dict[str, Any]]: ...


@runtime_checkable
class Gauges(Protocol):
    """``metric_rows()`` runs at each Prometheus scrape (``proxy.ops.metrics``, registered once when the
    services are built): ``(name, help, labels, value)`` rows, one gauge sample each."""

    def metric_rows(self) -> Iterable[Row]: ...


Filter: TypeAlias = Step | Wrapper

# hook -> (positional arguments after self, "async": must be an ``async def``, "plain": must not be,
# None: either). The public methods a filter may have, and nothing else.
STEP_HOOKS = {"before": (1, None)}
WRAPPER_HOOKS = {"handle": (2, "async"), "wants": (1, "plain")}
LIFECYCLE_HOOKS = {"load": (1, "async"), "close": (0, "plain"), "snapshot": (0, "plain"),
                   "metric_rows": (0, "plain")}
HOOKS: dict[str, tuple[int, str | None]] = {**STEP_HOOKS, **WRAPPER_HOOKS, **LIFECYCLE_HOOKS}


class ContractError(TypeError):
    """A filter breaks the contract above; raised when the pipeline is built, never per request."""


def check(f: object) -> Filter:
    """``f`` itself when it is a step or a wrapper whose public methods are all hooks of the right
    shape; otherwise ``ContractError`` naming the filter and what is wrong."""
    name = getattr(f, "name", None)
    what = f"filter {name!r} ({type(f).__module__}.{type(f).__qualname__})"
    if not isinstance(name, str) or not name:
        raise ContractError(f"{what} has no name: a filter has a non-empty str attribute 'name'")
    methods = _public_methods(f)
    for hook in HOOKS:
        if hook not in methods and getattr(f, hook, None) is not None:
            raise ContractError(f"{what} has an attribute {hook} that is not a method: the name of a hook")
    unknown = sorted(m for m in methods if m not in HOOKS)
    if unknown:
        hints = []
        for m in unknown:
            close = difflib.get_close_matches(m, list(HOOKS), n=1, cutoff=0.6)
            hints.append(f"{m} (did you mean {close[0]}?)" if close else m)
        raise ContractError(f"{what} has public methods that are no hooks: {', '.join(hints)}. A filter's "
                            f"public methods are its hooks ({', '.join(HOOKS)}); start a helper's name "
                            "with '_'")
    step, wrapper = "before" in methods, "handle" in methods
    if step and wrapper:
        raise ContractError(f"{what} has both before() and handle(): a filter is a step or a wrapper")
    if not step and not wrapper:
        raise ContractError(f"{what} has neither before(ctx) (a step) nor handle(ctx, call_next) (a wrapper)")
    if step and "wants" in methods:
        raise ContractError(f"{what} is a step with wants(): wants() belongs to a wrapper's handle()")
    for hook in methods:
        _check_shape(what, hook, getattr(f, hook))
    if not isinstance(f, Step | Wrapper):  # pragma: no cover - what the checks above made sure of
        raise ContractError(f"{what} is neither a step nor a wrapper")
    return f


def _public_methods(f: object) -> set[str]:
    """Public names of ``f`` (its class's and its own) that hold something callable other than a class."""
    out = set()
    for name in dir(f):
        if name.startswith("_"):
            continue
        try:
            raw = inspect.getattr_static(f, name)
        except AttributeError:  # pragma: no cover - dir() lists what getattr_static finds
            continue
        if isinstance(raw, staticmethod | classmethod) or (callable(raw) and not isinstance(raw, type)):
            out.add(name)
    return out


def _check_shape(what: str, hook: str, fn: Any) -> None:
    args, kind = HOOKS[hook]
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    if kind == "async" and not is_async:
        raise ContractError(f"{what}: {hook}() must be an async def")
    if kind == "plain" and is_async:
        raise ContractError(f"{what}: {hook}() must be a plain def, not async")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # pragma: no cover - a builtin without a signature: nothing to check
        return
    try:
        sig.bind(*([None] * args))
    except TypeError:
        raise ContractError(f"{what}: {hook}() must take {args} argument{'' if args == 1 else 's'} "
                            f"(besides self), not {sig}") from None
