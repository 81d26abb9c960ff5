"""The road itself: how ``pipeline.compose`` runs steps and wrappers, and what a failing filter does.

The composition tests use small filters of their own (the contract of ``compose``, no network); the
last tests drive the real proxy over a real socket.
"""

from __future__ import annotations

import asyncio

import aiohttp
from multidict import CIMultiDict

from proxy import pipeline
from proxy.context import Context, Reply
from tests.fake_upstream import SEEN


def _ctx() -> Context:
    return Context(request=None, listener=None, policy=None, started=0.0, method="GET", raw_path="/",
                   raw_query="")


def _upstream_reply() -> Reply:
    return Reply(status=200, headers=CIMultiDict(), body=b"exact")


class Step:
    def __init__(self, name, trail, answer=None, wait=False):
        self.name, self.trail, self._answer, self.wait = name, trail, answer, wait

    def before(self, ctx):
        self.trail.append(self.name)
        if self.wait:
            return self._later()
        return self._answer

    async def _later(self):
        await asyncio.sleep(0)
        self.trail.append(f"{self.name} waited")
        return self._answer


class Wrapper:
    def __init__(self, name, trail, wants=None, local=None):
        self.name, self.trail, self.local = name, trail, local
        if wants is not None:
            self.wants = wants

    async def handle(self, ctx, call_next):
        self.trail.append(f"{self.name} in")
        if self.local is not None:
            return ctx.answer(self.name, self.local)
        reply = await call_next(ctx)
        self.trail.append(f"{self.name} out {reply.status}")
        return reply


class End:
    name = "end"

    def __init__(self, trail):
        self.trail = trail

    async def handle(self, ctx, call_next):
        self.trail.append("end")
        return _upstream_reply()


async def test_steps_and_wrappers_run_in_list_order_and_wrappers_see_the_reply_on_the_way_back():
    trail: list[str] = []
    entry = pipeline.compose([Wrapper("outer", trail), Step("a", trail), Step("b", trail),
                              Wrapper("inner", trail), Step("c", trail), End(trail)])
    reply = await entry(_ctx())
    assert reply.body == b"exact"
    assert trail == ["outer in", "a", "b", "inner in", "c", "end", "inner out 200", "outer out 200"]


async def test_a_step_that_answers_skips_the_rest_and_is_named():
    trail: list[str] = []
    refusal = Reply.make_local(403, b"{}")
    ctx = _ctx()
    entry = pipeline.compose([Wrapper("outer", trail), Step("a", trail, answer=refusal), Step("b", trail),
                              End(trail)])
    assert await entry(ctx) is refusal
    assert trail == ["outer in", "a", "outer out 403"]
    assert ctx.answered_by == "a"


async def test_a_step_that_waits_goes_on_or_answers_when_its_wait_is_over():
    trail: list[str] = []
    entry = pipeline.compose([Step("a", trail, wait=True), Step("b", trail), End(trail)])
    assert (await entry(_ctx())).status == 200
    assert trail == ["a", "a waited", "b", "end"]

    trail.clear()
    ctx = _ctx()
    refusal = Reply.make_local(413, b"{}")
    entry = pipeline.compose([Step("a", trail), Step("b", trail, answer=refusal, wait=True), Step("c", trail),
                              End(trail)])
    assert await entry(ctx) is refusal
    assert trail == ["a", "b", "b waited"] and ctx.answered_by == "b"


async def test_a_wrapper_that_does_not_want_the_request_is_passed_by():
    trail: list[str] = []
    entry = pipeline.compose([Wrapper("picky", trail, wants=lambda ctx: ctx.method == "POST"), End(trail)])
    await entry(_ctx())
    assert trail == ["end"]
    ctx = _ctx()
    ctx.method = "POST"
    await entry(ctx)
    assert trail == ["end", "picky in", "end", "picky out 200"]


async def test_the_innermost_filter_that_answered_locally_is_the_one_named():
    trail: list[str] = []
    ctx = _ctx()
    entry = pipeline.compose([Wrapper("outer", trail), Wrapper("inner", trail, local=Reply.make_local(429, b"{}")),
                              End(trail)])
    assert (await entry(ctx)).status == 429
    assert ctx.answered_by == "inner"
    ctx = _ctx()
    assert ctx.answer("x", _upstream_reply()).status == 200 and ctx.answered_by is None  # Exact's answer


def test_every_filter_in_order_is_a_step_or_a_wrapper_and_forward_ends_the_road():
    for cls in pipeline.ORDER:
        assert hasattr(cls, "before") != hasattr(cls, "handle"), cls.__name__
        assert isinstance(cls.name, str) and cls.name
    assert pipeline.ORDER[-1].name == "forward"
    assert [cls.name for cls in pipeline.ORDER][:3] == ["access_log", "route", "classify"]


async def test_a_filter_that_fails_gives_a_500_in_exacts_envelope_and_the_proxy_serves_on(
        upstream, start_proxy, log_output, monkeypatch):
    from proxy.filters import classify as classify_filter

    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    real = classify_filter.classify

    def broken(method, raw_path, *args):
        if "boom" in raw_path:
            raise ZeroDivisionError("a bug in a filter")
        return real(method, raw_path, *args)

    monkeypatch.setattr(classify_filter, "classify", broken)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url() + "/api/v1/1/crm/boom") as r:
            assert r.status == 500
            body = await r.json()
        assert "internal proxy error (ZeroDivisionError)" in body["error"]["message"]["value"]
        async with s.get(proxy.url() + "/api/v1/1/crm/Accounts?$filter=x") as r:
            assert r.status == 200
    assert [seen[1] for seen in upstream.app[SEEN]] == ["/api/v1/1/crm/Accounts?$filter=x"]  # not the failed one
    text = log_output.getvalue()
    assert "ERROR exact_proxy.app: request GET /api/v1/1/crm/boom failed in the proxy" in text
    assert "Traceback" in text and 'decision="proxy error (ZeroDivisionError)"' in text
    metrics = proxy.services.metrics.render().decode()
    assert 'exact_proxy_requests_total{outcome="local:proxy",status="5xx"} 1.0' in metrics
