"""The filter contracts (``proxy.filters.types``): every filter of ``ORDER`` keeps one, and a filter that
breaks it (no hook, a misspelt one, the wrong shape) stops the build with a clear error, not a hook that
is silently never called."""

from __future__ import annotations

import pytest

from proxy import pipeline
from proxy.clock import ManualClock
from proxy.filters import types
from proxy.filters.types import ContractError
from proxy.policy import parse_policy
from proxy.policy.watch import PolicyHolder
from proxy.services import Services

POLICY = ("upstreams:\n  exact: {base_url: 'https://start.exactonline.nl'}\n"
          "listeners:\n  - {name: default, port: 0, upstream: exact}\nstate: {path: ':memory:'}\n")


def _services() -> Services:
    return Services(PolicyHolder(parse_policy(POLICY, "<test>")), ManualClock())


class Step:
    name = "a_step"

    def __init__(self, services=None) -> None:
        self.services = services

    def before(self, ctx):
        return None


class Wrapper:
    name = "a_wrapper"

    def __init__(self, services=None) -> None:
        self.services = services

    async def handle(self, ctx, call_next):
        return await call_next(ctx)


def test_every_filter_in_order_is_a_step_or_a_wrapper_with_only_declared_hooks():
    services = _services()
    assert [type(f) for f in services.filters] == list(pipeline.ORDER)
    for f in services.filters:
        assert types.check(f) is f
        assert isinstance(f, types.Step) != isinstance(f, types.Wrapper), f.name
        public = {n for n in dir(f) if not n.startswith("_") and callable(getattr(f, n))}
        assert public <= set(types.HOOKS), (f.name, public - set(types.HOOKS))
    kinds = {f.name: [p.__name__ for p in (types.Step, types.Wrapper, types.Wants, types.Loads,
                                           types.Closes, types.Snapshots, types.Gauges) if isinstance(f, p)]
             for f in services.filters}
    assert kinds["call_budget"] == ["Wrapper", "Loads", "Closes", "Snapshots", "Gauges"]
    assert kinds["rewrite_filter"] == ["Wrapper", "Wants", "Loads"]
    assert kinds["route"] == ["Step"]
    assert services.error_book is next(f for f in services.filters if f.name == "error_budget").book


@pytest.mark.parametrize(("base", "typo", "meant"), [
    (Wrapper, "metrics_rows", "metric_rows"),
    (Wrapper, "wnats", "wants"),
    (Wrapper, "snapshots", "snapshot"),
    (Step, "befor", "before"),
    (Step, "lod", "load"),
])
def test_a_misspelt_hook_fails_when_the_pipeline_is_built(base, typo, meant):
    bad = type("Misspelt", (base,), {typo: lambda self, *args: None})
    with pytest.raises(ContractError, match=rf"no hooks: {typo} \(did you mean {meant}\?\)"):
        pipeline.compose([bad(), Wrapper()])


def test_a_misspelt_hook_in_order_stops_the_services_from_being_built(monkeypatch):
    class Forward(Wrapper):
        name = "forward"

        def metrics_rows(self):
            return []

    monkeypatch.setattr(pipeline, "ORDER", pipeline.ORDER[:-1] + (Forward,))
    with pytest.raises(ContractError, match=r"filter 'forward' \(.*Forward\) has public methods that are no "
                       r"hooks: metrics_rows \(did you mean metric_rows\?\)"):
        _services()


def test_a_filter_needs_a_name_and_exactly_one_request_hook():
    class Neither:
        name = "neither"

        def snapshot(self):
            return []

    class Both(Step, Wrapper):
        name = "both"

    class Nameless(Step):
        name = ""

    with pytest.raises(ContractError, match="neither before"):
        pipeline.compose([Neither()])
    with pytest.raises(ContractError, match="both before"):
        pipeline.compose([Both()])
    with pytest.raises(ContractError, match="has no name"):
        pipeline.compose([Nameless()])


def test_hooks_of_the_wrong_shape_fail_too():
    class WantsStep(Step):
        def wants(self, ctx):
            return True

    class SyncHandle:
        name = "sync_handle"

        def handle(self, ctx, call_next):
            return call_next(ctx)

    class AsyncClose(Wrapper):
        async def close(self):
            pass

    class SyncLoad(Wrapper):
        def load(self, store):
            pass

    class NoCtx(Step):
        def before(self):
            return None

    class NotAMethod(Wrapper):
        wants = True

    for cls, message in ((WantsStep, "is a step with wants"), (SyncHandle, "handle\\(\\) must be an async def"),
                         (AsyncClose, "close\\(\\) must be a plain def"), (SyncLoad, "load\\(\\) must be an async"),
                         (NoCtx, "before\\(\\) must take 1 argument"), (NotAMethod, "wants that is not a method")):
        with pytest.raises(ContractError, match=message):
            pipeline.compose([cls()])


def test_helpers_with_a_leading_underscore_and_plain_attributes_are_no_hooks():
    class Tidy(Wrapper):
        limit = 5

        def __init__(self) -> None:
            self.book = {}
            self.wants = lambda ctx: True  # a hook may be set on the instance too

        def _helper(self):
            return None

        @staticmethod
        def _static():
            return None

    f = Tidy()
    assert types.check(f) is f
    pipeline.compose([f])
