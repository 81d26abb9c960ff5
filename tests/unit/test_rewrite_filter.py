"""``rewrite_filter``: the ``$filter`` Exact demands, added to unfiltered list GETs; learned after one 400."""

from __future__ import annotations

import json

import pytest

from proxy.exact.classify import Classification
from proxy.filters.rewrite_filter import NAMESPACE, RewriteFilter
from proxy.store import MemoryStore
from tests.support import Rig, Script, upstream

NEUTRAL = "ID%20ne%20guid'00000000-0000-0000-0000-000000000000'"
MANDATORY_400 = json.dumps(
    {
        "error": {
            "code": "",
            "message": {
                "lang": "",
                "value": (
                    "This endpoint has mandatory filtering applied. A GET request for this endpoint must have a $filter "
                    "parameter with one of the following fields in the url:Code,ID,Modified."
                ),
            },
        }
    }
).encode()


async def test_an_unfiltered_list_of_a_listed_endpoint_gets_the_filter_and_keeps_every_byte_it_had():
    rig = Rig()
    f = RewriteFilter(rig.services)
    ctx = await rig.ctx("GET", "/api/v1/101/crm/Accounts?$select=ID,Name&$top=5&%24skiptoken=guid'a%2Fb'")
    assert f.wants(ctx)
    script = Script(upstream(200, b"{}"))
    assert (await f.handle(ctx, script)).status == 200
    assert script.seen[0].raw_query == f"$select=ID,Name&$top=5&%24skiptoken=guid'a%2Fb'&$filter={NEUTRAL}"
    assert ctx.decisions == ["rewritten (+$filter=ID ne guid'00000000-0000-0000-0000-000000000000')"]


@pytest.mark.parametrize(
    "method, target",
    [
        ("GET", "/api/v1/101/crm/Accounts?$filter=Name%20eq%20'x'"),
        ("GET", "/api/v1/101/crm/Accounts?%24FILTER=Name%20eq%20'x'"),  # the name percent-encoded
        ("GET", "/api/v1/101/crm/Accounts(guid'00000000-0000-0000-0000-000000000001')"),  # one row by key
        ("POST", "/api/v1/101/crm/Accounts"),  # a write is never touched
        ("GET", "/api/v1/current/Me"),
    ],
)
async def test_it_passes_by_what_is_not_an_unfiltered_list_get(method, target):
    rig = Rig()
    ctx = await rig.ctx(method, target)
    assert not RewriteFilter(rig.services).wants(ctx)


async def test_an_option_without_dollar_on_a_listed_endpoint_is_refused_locally_never_widened():
    rig = Rig()
    ctx = await rig.ctx("GET", "/api/v1/101/crm/Accounts?ID=guid'00000000-0000-0000-0000-000000000001'")
    script = Script()
    reply = await RewriteFilter(rig.services).handle(ctx, script)
    assert reply.status == 400 and reply.local and script.calls == 0
    assert "$filter" in json.loads(reply.body)["error"]["message"]["value"]
    assert ctx.decisions == ["refused (no $filter; options without $: 'ID')"]
    assert ctx.answered_by == "rewrite_filter"


async def test_a_new_mandatory_endpoint_is_learned_from_one_400_remembered_and_replayed_once():
    rig = Rig()
    f = RewriteFilter(rig.services)
    rig.services.store = store = MemoryStore()
    await store.open()
    ctx = await rig.ctx("GET", "/api/v1/101/financial/GLAccounts?$select=ID")
    script = Script(upstream(400, MANDATORY_400, {"Content-Type": "application/json"}), upstream(200, b"{}"))
    reply = await f.handle(ctx, script)
    assert reply.status == 200 and script.calls == 2 and script.released == 1  # the 400 was dropped
    assert script.seen[1].raw_query == f"$select=ID&$filter={NEUTRAL}"
    assert ctx.decisions == [
        "learned mandatory filter, replayed (+$filter=ID ne guid'00000000-0000-0000-0000-000000000000')"
    ]
    assert (await store.load(NAMESPACE)) == {
        "financial/glaccounts": "ID ne guid'00000000-0000-0000-0000-000000000000'"
    }

    later = await rig.ctx("GET", "/api/v1/102/financial/GLAccounts?$select=Code")  # any division
    script = Script(upstream(200, b"{}"))
    await f.handle(later, script)
    assert script.calls == 1 and script.seen[0].raw_query == f"$select=Code&$filter={NEUTRAL}"


async def test_an_option_without_dollar_on_an_endpoint_not_known_yet_is_learned_from_but_not_replayed():
    rig = Rig()
    f = RewriteFilter(rig.services)
    ctx = await rig.ctx("GET", "/api/v1/101/financial/GLAccounts?Code=1000")
    script = Script(upstream(400, MANDATORY_400))
    reply = await f.handle(ctx, script)
    assert reply.status == 400 and script.calls == 1
    assert ctx.decisions == ["learned mandatory filter, not replayed (options without $: 'Code')"]
    assert "financial/glaccounts" in f.learned


@pytest.mark.parametrize(
    "extra, body",
    [
        ("mandatory_filters: {learn: false}\n", MANDATORY_400),
        ("", b'{"error": {"message": {"value": "Bad request"}}}'),
    ],
)
async def test_other_400s_and_learning_switched_off_pass_the_400_on_untouched(extra, body):
    rig = Rig(extra)
    f = RewriteFilter(rig.services)
    ctx = await rig.ctx("GET", "/api/v1/101/financial/GLAccounts")
    script = Script(upstream(400, body))
    reply = await f.handle(ctx, script)
    assert reply.status == 400 and reply.body == body and script.calls == 1 and not f.learned


async def test_a_classification_other_than_rest_or_bulk_passes_by():
    rig = Rig()
    ctx = await rig.ctx(
        "GET", "/api/v1/101/sync/CRM/Accounts", cls=Classification("a", 101, "sync/crm/accounts", "sync")
    )
    assert not RewriteFilter(rig.services).wants(ctx)


async def test_a_large_400_that_is_not_the_mandatory_filter_one_reaches_the_tool_whole():
    rig = Rig()
    ctx = await rig.ctx("GET", "/api/v1/101/financial/GLAccounts")
    reply = await RewriteFilter(rig.services).handle(
        ctx, Script(upstream(400, None, stream=[b"y" * 50_000] * 3))
    )
    body = reply.body if reply.stream is None else b"".join([c async for c in reply.stream])
    assert len(body) == 150_000
