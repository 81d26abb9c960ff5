"""``access_log``: a step that registers a finisher; the finisher writes one line per request and counts it."""

from __future__ import annotations

import asyncio
import json

from proxy.filters.access_log import AccessLog
from tests.support import Rig, capture_log


async def _line(out) -> dict:
    for _ in range(3):
        await asyncio.sleep(0)  # request lines reach the stream at the end of the loop's turn
    lines = [json.loads(s) for s in out.getvalue().splitlines() if '"event":"request"' in s]
    assert len(lines) == 1, out.getvalue()
    return lines[0]


async def test_it_is_a_step_that_only_registers_a_finisher():
    rig = Rig()
    ctx = await rig.ctx()
    assert AccessLog(rig.services).before(ctx) is None
    assert len(ctx.finishers) == 1


async def test_the_finisher_logs_one_line_with_the_request_its_classification_and_every_decision():
    rig = Rig()
    out = capture_log("json", rig.policy)
    ctx = await rig.ctx("GET", "/api/v1/101/crm/Accounts?$select=ID")
    AccessLog(rig.services).before(ctx)
    ctx.decide("queued 12 ms")  # decided by later filters, after the step ran
    ctx.decide("exact remaining 58/4999")
    ctx.attempt, ctx.bytes_out = 1, 321
    ctx.finishers[0](ctx, 200)
    line = await _line(out)
    assert (line["method"], line["path"], line["query"], line["status"]) == (
        "GET",
        "/api/v1/101/crm/Accounts",
        "$select=ID",
        200,
    )
    assert (line["division"], line["endpoint"], line["kind"], line["upstream"]) == (
        101,
        "crm/accounts",
        "rest",
        "exact",
    )
    assert line["attempts"] == 1 and line["bytes_out"] == 321 and line["listener"] == "default"
    assert line["decision"] == ["queued 12 ms", "exact remaining 58/4999"]


async def test_secret_query_values_are_masked():
    rig = Rig()
    out = capture_log("json", rig.policy)
    ctx = await rig.ctx("GET", "/api/oauth2/auth?client_id=app&code=the-code-123&redirect_uri=x")
    AccessLog(rig.services).before(ctx)
    ctx.finishers[0](ctx, 302)
    line = await _line(out)
    assert "the-code-123" not in out.getvalue()
    assert "client_id=app" in line["query"] and "code=the-code-123" not in line["query"]


async def test_the_finisher_logs_the_target_as_the_tool_sent_it():
    rig = Rig()
    out = capture_log("json", rig.policy)
    ctx = await rig.ctx("GET", "/api/v1/101/crm/Accounts?$top=1")
    AccessLog(rig.services).before(ctx)
    ctx.raw_query += "&$filter=ID%20ne%20null"  # as rewrite_filter would change it for Exact
    ctx.finishers[0](ctx, 200)
    assert (await _line(out))["query"] == "$top=1"


async def test_the_finisher_counts_the_request_in_the_metrics_by_who_answered():
    rig = Rig()
    log = AccessLog(rig.services)
    refused = await rig.ctx()
    log.before(refused)
    refused.answered_by = "error_budget"
    refused.finishers[0](refused, 429)
    forwarded = await rig.ctx()
    log.before(forwarded)
    forwarded.attempt = 1
    forwarded.finishers[0](forwarded, 200)
    requests = rig.services.metrics.requests
    assert requests[("local:error_budget", "4xx")] == 1 and requests[("upstream", "2xx")] == 1
    assert rig.services.metrics.local_counts() == {"error_budget": 1}
