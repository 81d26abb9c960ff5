"""``tests.support`` itself: the context factory takes requests through the real early steps, and the
scripted ``call_next`` answers as ``forward`` would."""

from __future__ import annotations

import pytest

from proxy.exact.classify import Classification
from tests.support import Rig, Script, failure, local, make_ctx, raises, upstream


async def test_make_ctx_routes_classifies_and_reads_the_body_as_the_proxy_would():
    rig = Rig()
    ctx = await rig.ctx(
        "POST", "/api/v1/101/crm/Accounts?$select=ID", body=b"{}", headers={"Authorization": "Bearer t"}
    )
    assert (ctx.raw_path, ctx.raw_query, ctx.upstream.name) == (
        "/api/v1/101/crm/Accounts",
        "$select=ID",
        "exact",
    )
    assert ctx.cls.endpoint == "crm/accounts" and not ctx.tokenless
    assert ctx.body.replayable and ctx.body.payload() == b"{}" and ctx.policy is rig.policy


async def test_make_ctx_takes_what_it_is_given_and_refuses_a_request_its_steps_refuse():
    given = Classification("app", 7, "x/y", "rest")
    ctx = await make_ctx(cls=given, upstream=None, read_body=False)
    assert ctx.cls is given and ctx.upstream is None and ctx.body is None
    with pytest.raises(AssertionError, match="route step answered 405"):
        await make_ctx("CONNECT", "start.exactonline.nl:443")


async def test_the_script_answers_in_order_records_each_call_and_counts_released_replies():
    ctx = await make_ctx()
    script = Script(upstream(503), failure("connect"), local(429), raises(RuntimeError("boom")))
    first = await script(ctx)
    assert (first.status, first.local, ctx.attempt) == (503, False, 1)
    await first.discard()
    assert script.released == 1
    second = await script(ctx)
    assert second.failure == "connect" and ctx.upstream_failure == "connect" and ctx.attempt == 2
    third = await script(ctx)
    assert third.local and ctx.answered_by == "forward"  # the innermost answer is kept
    with pytest.raises(RuntimeError):
        await script(ctx)
    with pytest.raises(AssertionError, match="5 times"):
        await script(ctx)
    assert [s.attempt for s in script.seen] == [0, 1, 2, 2, 2]
