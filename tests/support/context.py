"""Contexts for filter tests: a mocked aiohttp request, a real policy, the real early steps.

``make_ctx(method, target, ...)`` builds the ``Context`` that ``proxy.http.handler.handle`` would build
for a request, then (unless told otherwise) passes it through the real ``route``, ``classify`` and
``read_body`` steps, in ``pipeline.ORDER``'s order, so the filter under test sees what it would see in
the proxy. A step that refuses the request is a mistake in the test: it raises ``AssertionError``.
"""

from __future__ import annotations

import asyncio
import inspect
import io
import textwrap
import time
from typing import Any
from unittest import mock

from aiohttp import HttpVersion11
from aiohttp.streams import EmptyStreamReader, StreamReader
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from proxy.clock import ManualClock
from proxy.context import Context, Reply
from proxy.exact.classify import Classification
from proxy.filters.classify import Classify
from proxy.filters.read_body import ReadBody
from proxy.filters.route import Route
from proxy.ops.logs import setup_logging
from proxy.policy import Policy, parse_policy
from proxy.policy.hosts import Listener, Upstream
from proxy.policy.watch import PolicyHolder
from proxy.services import Services

EXACT = "https://start.exactonline.nl"
START = 1_795_600_800.0  # 2026-11-25T10:00:00Z, ManualClock's own default

CLASSIFY = "classify"  # make_ctx(cls=CLASSIFY): the real classify step decides (the default)
ROUTE = "route"  # make_ctx(upstream=ROUTE): the real route step decides (the default)


def make_policy(
    extra_yaml: str = "",
    *,
    base_url: str = EXACT,
    listeners_yaml: str | None = None,
    upstreams_yaml: str | None = None,
) -> Policy:
    """A real ``Policy`` from a small YAML text: one upstream ``exact`` (``base_url``), one listener
    ``default`` on port 0, state in memory, then ``extra_yaml`` (dedented)."""
    upstreams = upstreams_yaml or f"upstreams:\n  exact: {{base_url: '{base_url}'}}\n"
    listeners = listeners_yaml or "listeners:\n  - {name: default, port: 0, upstream: exact}\n"
    text = upstreams + listeners + "state: {path: ':memory:'}\n" + textwrap.dedent(extra_yaml)
    return parse_policy(text, "<tests.support>")


def _as_policy(policy: Policy | str | None) -> Policy:
    if isinstance(policy, Policy):
        return policy
    return make_policy(policy or "")


def make_services(policy: Policy | str | None = None, clock: Any = None) -> Services:
    """The real ``Services`` (filters, token broker, metrics) on a ``ManualClock``; never started, so it
    has no HTTP session and no store (set ``services.store`` or ``services.http`` when a test needs one)."""
    return Services(PolicyHolder(_as_policy(policy)), clock or ManualClock(start=START))


def _payload(body: bytes | None, eof: bool) -> StreamReader:
    if body is None:
        return EmptyStreamReader()
    reader = StreamReader(mock.Mock(), 2**16, loop=asyncio.get_running_loop())
    if body:
        reader.feed_data(body)
    if eof:
        reader.feed_eof()
    return reader


def _listener(policy: Policy, listener: Listener | str | None) -> Listener:
    if isinstance(listener, Listener):
        return listener
    if listener is None:
        return policy.listeners[0]
    for candidate in policy.listeners:
        if candidate.name == listener:
            return candidate
    raise AssertionError(f"make_ctx: the policy has no listener {listener!r}")


async def _run_step(step, ctx: Context) -> None:
    got = step.before(ctx)
    if inspect.isawaitable(got):
        got = await got
    if isinstance(got, Reply):
        raise AssertionError(
            f"make_ctx: the {step.name} step answered {got.status} ({got.body!r}); decisions {ctx.decisions}"
        )


async def make_ctx(
    method: str = "GET",
    target: str = "/api/v1/101/crm/Accounts?$select=ID",
    *,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes | None = None,
    chunked: bool = False,
    eof: bool = True,
    services: Services | None = None,
    policy: Policy | str | None = None,
    listener: Listener | str | None = None,
    upstream: Upstream | str | None = ROUTE,
    cls: Classification | str | None = CLASSIFY,
    read_body: bool = True,
    version=HttpVersion11,
) -> Context:
    """A ``Context`` for ``method target`` as the handler builds it.

    ``headers`` go on the mocked request (``Host`` defaults to ``localhost:8080``). ``body`` (bytes)
    becomes the request's payload with a ``Content-Length`` (unless ``headers`` give one, or ``chunked``),
    ended unless ``eof=False`` (a tool that stalls). ``policy`` and ``services``: the services' policy by
    default; a YAML text is ``make_policy(text)``. Then, unless switched off: ``upstream=ROUTE`` runs the
    real route step (or give an ``Upstream``, an upstream's name, or None); ``cls=CLASSIFY`` the real
    classify step (or give a ``Classification``, or None); ``read_body=True`` the real read_body step."""
    if services is None:
        services = make_services(policy)
    pol = services.policy if policy is None else _as_policy(policy)
    h = CIMultiDict(headers or {})
    h.setdefault("Host", "localhost:8080")
    if body is not None:
        if chunked:
            h.setdefault("Transfer-Encoding", "chunked")
        else:
            h.setdefault("Content-Length", str(len(body)))
    request = make_mocked_request(method, target, headers=h, payload=_payload(body, eof), version=version)
    path, _, query = request.raw_path.partition("?")
    ctx = Context(
        request=request,
        listener=_listener(pol, listener),
        policy=pol,
        started=time.perf_counter(),
        method=request.method,
        raw_path=path,
        raw_query=query,
    )
    if upstream == ROUTE:
        await _run_step(Route(services), ctx)
    elif isinstance(upstream, str):
        ctx.upstream = pol.upstreams[upstream]
    else:
        ctx.upstream = upstream
    if cls == CLASSIFY:
        await _run_step(Classify(services), ctx)
    else:
        ctx.cls = cls
    if read_body:
        await _run_step(ReadBody(services), ctx)
    return ctx


class Rig:
    """One policy, one clock, one ``Services``: ``rig.ctx(...)`` is ``make_ctx`` with them."""

    def __init__(
        self,
        extra_yaml: str = "",
        *,
        base_url: str = EXACT,
        clock: ManualClock | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.clock = clock or ManualClock(start=START)
        self.policy = policy or make_policy(extra_yaml, base_url=base_url)
        self.services = make_services(self.policy, self.clock)

    async def ctx(
        self, method: str = "GET", target: str = "/api/v1/101/crm/Accounts?$select=ID", **kw: Any
    ) -> Context:
        return await make_ctx(method, target, services=self.services, **kw)


def capture_log(fmt: str = "json", policy: Policy | None = None) -> io.StringIO:
    """Send the proxy's log (request lines and the rest) to a new ``StringIO``; lines arrive at the end
    of the event loop's turn (``await asyncio.sleep(0)`` before reading)."""
    out = io.StringIO()
    setup_logging((policy or make_policy()).log, fmt, stream=out)
    return out
