"""``classify``: ``ctx.cls`` (app, division, endpoint, kind), ``ctx.tokenless``, and 400 for odd targets."""

from __future__ import annotations

import json

from proxy.filters.classify import UNKNOWN_APP, Classify
from tests.support import Rig, add_chain, make_policy

GUID = "b81cc4de-d192-400e-bcb4-09254394c52a"
OTHER = "0f6ac7a3-6d4a-4e7e-9a53-0d5e2c3a4b5c"
BEARER = {"Authorization": "Bearer some-token"}


async def _classify(
    rig: Rig, method="GET", target="/api/v1/101/crm/Accounts?$top=1", headers=None, listener=None
):
    ctx = await rig.ctx(method, target, headers=headers, cls=None, read_body=False, listener=listener)
    return ctx, Classify(rig.services).before(ctx)


async def test_an_api_call_gets_its_division_endpoint_and_kind():
    ctx, reply = await _classify(Rig(), target="/api/v1/101/bulk/CRM/Accounts?$select=ID")
    assert reply is None
    assert (ctx.cls.division, ctx.cls.endpoint, ctx.cls.kind) == (101, "bulk/crm/accounts", "bulk")


async def test_the_app_of_a_bearer_call_is_the_listeners_then_the_policys_default():
    listeners = (
        "listeners:\n  - {name: default, port: 0, upstream: exact}\n"
        f"  - {{name: tool, port: 0, upstream: exact, app: '{{{GUID.upper()}}}'}}\n"
    )
    rig = Rig(policy=make_policy(f"default_app: {OTHER}\n", listeners_yaml=listeners))
    on_tool, _ = await _classify(rig, headers=BEARER, listener="tool")
    on_default, _ = await _classify(rig, headers=BEARER, listener="default")
    assert on_tool.cls.app == GUID  # in its normal form
    assert on_default.cls.app == OTHER


async def test_the_app_is_the_brokers_only_app_else_unknown_never_a_pseudo_app_beside_it():
    rig = Rig()
    ctx, _ = await _classify(rig, headers=BEARER)
    assert ctx.cls.app == UNKNOWN_APP
    add_chain(rig.services, client_id=GUID)
    ctx, _ = await _classify(rig, headers=BEARER)
    assert ctx.cls.app == GUID
    add_chain(rig.services, client_id=OTHER)  # two apps known: the broker cannot say which
    ctx, _ = await _classify(rig, headers=BEARER)
    assert ctx.cls.app == UNKNOWN_APP


async def test_a_call_without_credentials_is_tokenless_but_a_token_request_is_not():
    rig = Rig()
    bare, _ = await _classify(rig)
    with_token, _ = await _classify(rig, headers=BEARER)
    token_request, _ = await _classify(rig, "POST", "/api/oauth2/token")
    assert bare.tokenless and not with_token.tokenless and not token_request.tokenless


async def test_an_odd_division_spelling_gets_400_naming_the_cause_and_counts_nothing():
    rig = Rig()
    ctx, reply = await _classify(rig, target="/api/v1/%2B555/crm/Accounts", headers=BEARER)
    assert reply.status == 400 and reply.local
    assert "+555" in json.loads(reply.body)["error"]["message"]["value"]
    assert ctx.decisions == ["refused (division segment '+555')"]
    assert ctx.cls.division is None and ctx.cls.endpoint is None
    assert rig.services.error_book.clean((UNKNOWN_APP, None, None))


async def test_a_dot_segment_is_refused():
    ctx, reply = await _classify(Rig(), target="/api/v1/101/crm/../../102/crm/Accounts")
    assert reply.status == 400 and ctx.decisions == ["refused (dot segment in path)"]
