"""``route``: the configured Exact host for a request, or a refusal; never an open proxy."""

from __future__ import annotations

import json

import pytest

from proxy.filters.route import Route
from tests.support import Rig, make_policy

TWO_HOSTS = """\
upstreams:
  nl: {base_url: 'https://start.exactonline.nl'}
  be: {base_url: 'https://start.exactonline.be'}
listeners:
  - {name: default, port: 0, upstream: nl}
"""


def _rig(upstreams_yaml: str | None = None) -> Rig:
    if upstreams_yaml is None:
        return Rig()
    head, _, listeners = upstreams_yaml.partition("listeners:")
    return Rig(policy=make_policy(upstreams_yaml=head, listeners_yaml="listeners:" + listeners))


async def _route(rig: Rig, method: str, target: str, headers=None):
    ctx = await rig.ctx(method, target, headers=headers, upstream=None, cls=None, read_body=False)
    return ctx, Route(rig.services).before(ctx)


def _message(reply) -> str:
    return json.loads(reply.body)["error"]["message"]["value"]


async def test_connect_is_refused_with_405_and_nothing_is_chosen():
    ctx, reply = await _route(_rig(), "CONNECT", "start.exactonline.nl:443")
    assert reply.status == 405 and reply.local and "not a tunnel" in _message(reply)
    assert ctx.upstream is None and ctx.decisions == ["refused (CONNECT)"]


async def test_an_absolute_form_request_for_the_upstream_goes_there_in_origin_form():
    rig = _rig()
    ctx, reply = await _route(rig, "GET", "http://start.exactonline.nl/api/v1/101/crm/Accounts?$top=1")
    assert reply is None
    assert ctx.upstream is rig.policy.upstreams["exact"] and ctx.absolute_form
    assert (ctx.raw_path, ctx.raw_query) == ("/api/v1/101/crm/Accounts", "$top=1")


@pytest.mark.parametrize(
    "target, status, decision",
    [
        ("https://example.com/api/v1/101/crm/Accounts", 403, "refused (not an Exact host)"),
        ("https://user@start.exactonline.nl/api/v1/101/crm/Accounts", 403, "refused (not an Exact host)"),
        (
            "https://start.exactonline.nl:8443/api/v1/101/crm/Accounts",
            403,
            "refused (not the upstream's port)",
        ),
        ("https://start.exactonline.nl:0/api/v1/101/crm/Accounts", 400, "refused (bad target)"),
    ],
)
async def test_an_absolute_form_request_for_anything_else_is_refused(target, status, decision):
    ctx, reply = await _route(_rig(), "GET", target)
    assert reply.status == status and reply.local
    assert ctx.upstream is None and ctx.decisions == [decision]


async def test_a_target_that_is_not_a_path_gets_400():
    ctx, reply = await _route(_rig(), "OPTIONS", "*")
    assert reply.status == 400 and ctx.decisions == ["refused (bad target)"]


async def test_a_host_header_naming_a_configured_exact_host_selects_that_upstream():
    rig = _rig(TWO_HOSTS)
    ctx, reply = await _route(rig, "GET", "/api/v1/101/crm/Accounts", {"Host": "start.exactonline.be"})
    assert reply is None and ctx.upstream is rig.policy.upstreams["be"] and not ctx.absolute_form


async def test_any_other_host_header_goes_to_the_listeners_upstream():
    rig = _rig(TWO_HOSTS)
    for host in ("localhost:8080", "example.com"):
        ctx, reply = await _route(rig, "GET", "/api/v1/101/crm/Accounts", {"Host": host})
        assert reply is None and ctx.upstream is rig.policy.upstreams["nl"]
