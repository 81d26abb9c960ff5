"""``rewrite_links``: Exact's absolute links in bodies and headers point back at the proxy."""

from __future__ import annotations

import gzip
import json

import pytest

from proxy.filters.rewrite_links import RewriteLinks
from tests.support import Rig, Script, local, make_policy, upstream

EXACT = "https://start.exactonline.nl"
NEXT = f"{EXACT}/api/v1/101/crm/Accounts?$skiptoken=guid'00000000-0000-0000-0000-000000000060'"
JSON = {"Content-Type": "application/json; charset=utf-8"}


def _page() -> bytes:
    return json.dumps(
        {
            "d": {
                "results": [{"__metadata": {"uri": f"{EXACT}/api/v1/101/crm/Accounts(guid'1')"}}],
                "__next": NEXT,
            }
        }
    ).encode()


async def _through(rig: Rig, step, **ctx_kw):
    ctx = await rig.ctx(**ctx_kw)
    reply = await RewriteLinks(rig.services).handle(ctx, Script(step))
    return ctx, reply


async def test_links_in_a_json_body_point_at_the_proxy_by_the_requests_host():
    ctx, reply = await _through(Rig(), upstream(200, _page(), JSON))
    doc = json.loads(reply.body)["d"]
    assert doc["__next"] == NEXT.replace(EXACT, "http://localhost:8080")
    assert doc["results"][0]["__metadata"]["uri"].startswith("http://localhost:8080/api/v1/101/")
    assert reply.length == len(reply.body) and ctx.decisions == ["links rewritten"]


async def test_location_headers_use_the_listeners_public_base_url_or_a_rules_base_url():
    listeners = (
        "listeners:\n  - {name: default, port: 0, upstream: exact, public_base_url: 'https://proxy.lan'}\n"
    )
    rig = Rig(policy=make_policy(listeners_yaml=listeners))
    _, reply = await _through(
        rig,
        upstream(
            201,
            b"",
            {"Location": f"{EXACT}/api/v1/101/crm/Accounts(guid'1')", "Content-Location": f"{EXACT}/x"},
        ),
    )
    assert reply.headers["Location"] == "https://proxy.lan/api/v1/101/crm/Accounts(guid'1')"
    assert reply.headers["Content-Location"] == "https://proxy.lan/x"
    rules = Rig("links: {rules: [{match: {user_agent: 'legacy*'}, base_url: 'http://legacy:9000'}]}\n")
    _, reply = await _through(rules, upstream(200, _page(), JSON), headers={"User-Agent": "Legacy/1.0"})
    assert json.loads(reply.body)["d"]["__next"].startswith("http://legacy:9000/api/")


async def test_a_stream_is_rewritten_chunk_by_chunk_even_across_chunk_boundaries():
    body = _page()
    cut = body.index(b"exactonline") + 4  # the upstream URL split between two chunks
    ctx, reply = await _through(
        Rig(), upstream(200, None, JSON, stream=[body[:cut], body[cut:]], length=len(body))
    )
    assert reply.length is None  # sent chunked: the length changed
    out = b"".join([chunk async for chunk in reply.stream])
    assert json.loads(out)["d"]["__next"] == NEXT.replace(EXACT, "http://localhost:8080")
    assert ctx.decisions == ["links rewritten"]


async def test_a_gzip_body_is_decoded_rewritten_and_encoded_again():
    ctx, reply = await _through(
        Rig(),
        upstream(200, gzip.compress(_page()), {**JSON, "Content-Encoding": "gzip"}),
        headers={"Accept-Encoding": "gzip, deflate, br"},
    )
    assert ctx.header_changes["Accept-Encoding"] == "gzip, deflate"  # only what the proxy can decode
    assert json.loads(gzip.decompress(reply.body))["d"]["__next"].startswith("http://localhost:8080/")


@pytest.mark.parametrize(
    "extra, kw",
    [
        ("links: {rewrite: false}\n", {}),
        ("", {"target": "https://start.exactonline.nl/api/v1/101/crm/Accounts"}),  # forward-proxy mode
    ],
)
async def test_skipped_when_the_policy_says_so_or_the_tool_addressed_exact_itself(extra, kw):
    ctx, reply = await _through(Rig(extra), upstream(200, _page(), JSON), **kw)
    assert reply.body == _page() and ctx.decisions == [] and "Accept-Encoding" not in ctx.header_changes


async def test_bodies_it_cannot_or_need_not_rewrite_pass_unchanged():
    ctx, reply = await _through(Rig(), upstream(200, b"\x00br-bytes", {**JSON, "Content-Encoding": "br"}))
    assert reply.body == b"\x00br-bytes" and ctx.decisions == ["links not rewritten (Content-Encoding br)"]
    _, reply = await _through(Rig(), upstream(200, NEXT.encode(), {"Content-Type": "text/plain"}))
    assert reply.body == NEXT.encode()  # not JSON or XML: holds no links
    _, reply = await _through(Rig(), local(429, NEXT.encode()))
    assert reply.body == NEXT.encode()  # the proxy's own answer
