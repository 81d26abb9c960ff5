"""Absolute links in Exact's answers are rewritten to the proxy, streaming, whatever the chunking."""

from __future__ import annotations

import gzip
import json

import aiohttp
import pytest

from proxy.exact.links import BodyCodec, LinkRewriter

UP = "https://start.exactonline.nl"
ME = "http://localhost:8080"


def test_every_split_point_gives_the_same_result():
    body = (f'{{"d":{{"__next":"{UP}/api/v1/1/crm/Accounts?$skiptoken=x","u":"{UP.replace("/", chr(92) + "/")}'
            f'/api","end":"{UP}"}}}}').encode()
    expected = body.replace(UP.encode(), ME.encode()).replace(
        UP.replace("/", "\\/").encode(), ME.replace("/", "\\/").encode())
    for size in (1, 2, 3, 7, 13, 29, 64):
        for offset in range(size):
            rw = LinkRewriter(UP, ME)
            pieces = [body[:offset]] + [body[i:i + size] for i in range(offset, len(body), size)]
            out = b"".join(rw.feed(p) for p in pieces) + rw.close()
            assert out == expected, (size, offset)
            assert rw.replaced == 3


def test_rewriter_holds_back_only_a_needle():
    rw = LinkRewriter(UP, ME)
    out = rw.feed(b"a" * 100_000)
    assert len(out) >= 100_000 - len(UP.replace("/", "\\/"))  # the longest needle, JSON-escaped


def test_gzip_codec_round_trip():
    plain = (UP + "/x ") * 1000
    data = gzip.compress(plain.encode())
    codec = BodyCodec("gzip")
    rw = LinkRewriter(UP, ME)
    out = b"".join(codec.encode(rw.feed(codec.decode(data[i:i + 100]))) for i in range(0, len(data), 100))
    out += codec.encode(rw.feed(codec.decode_end()) + rw.close()) + codec.encode_end()
    assert gzip.decompress(out).decode() == plain.replace(UP, ME)


async def _get(url, **kw):
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(kw.pop("method", "GET"), url, **kw) as r:
            return r.status, r.headers, await r.read()


@pytest.mark.parametrize("query", ["", "&chunked=1&step=7", "&rows=2000&step=1000"])
async def test_json_links_point_at_the_proxy(upstream, start_proxy, query):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base)
    status, headers, body = await _get(proxy.url() + "/links?x=1" + query)
    assert status == 200
    text = body.decode()
    assert base not in text
    doc = json.loads(text)
    assert doc["d"]["__next"] == proxy.url() + "/api/v1/1/crm/Accounts?$skiptoken=x"
    assert all(r["__metadata"]["uri"].startswith(proxy.url() + "/api/v1/1/") for r in doc["d"]["results"])
    assert headers["Location"].startswith(proxy.url() + "/api/v1/1/")
    if "Content-Length" in headers:
        assert int(headers["Content-Length"]) == len(body)


async def test_atom_links_point_at_the_proxy(upstream, start_proxy):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base)
    _, _, body = await _get(proxy.url() + "/links?atom=1&step=5")
    text = body.decode()
    assert base not in text
    assert f'xml:base="{proxy.url()}/api/v1/1/"' in text
    assert f'href="{proxy.url()}/api/v1/1/crm/Accounts?' in text
    assert f"<id>{proxy.url()}/api/v1/1/crm/Accounts(guid'0')</id>" in text


@pytest.mark.parametrize("query", ["", "&chunked=1&step=50&rows=500"])
async def test_gzip_answers_are_rewritten_and_stay_gzip(upstream, start_proxy, query):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base)
    status, headers, body = await _get(proxy.url() + "/links?gzip=1" + query,
                                       headers={"Accept-Encoding": "gzip, br"})
    assert headers["Content-Encoding"] == "gzip"
    doc = json.loads(gzip.decompress(body))
    assert doc["d"]["__next"].startswith(proxy.url())
    sent = upstream.app[__import__("tests.fake_upstream", fromlist=["SEEN"]).SEEN][-1][2]
    assert sent["Accept-Encoding"] == "gzip"  # br dropped: the proxy could not rewrite it


async def test_location_on_post_201(upstream, start_proxy):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base)
    status, headers, _ = await _get(proxy.url() + "/links", method="POST", data=b"{}")
    assert status == 201
    assert headers["Location"] == proxy.url() + "/api/v1/1/crm/Accounts(guid'1')"


async def test_rule_switches_rewriting_off_or_sets_another_base(upstream, start_proxy):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base, extra_yaml="""
        links:
          rules:
            - match: {user_agent: "python-exact-online*"}
              rewrite: false
            - match: {header: {X-Tool: excel}}
              base_url: https://proxy.example:8443
    """)
    _, _, body = await _get(proxy.url() + "/links", headers={"User-Agent": "python-exact-online/0.3"})
    assert json.loads(body)["d"]["__next"].startswith(base)
    _, _, body = await _get(proxy.url() + "/links", headers={"X-Tool": "Excel"})
    assert json.loads(body)["d"]["__next"].startswith("https://proxy.example:8443/api/v1/1/")
    _, _, body = await _get(proxy.url() + "/links")
    assert json.loads(body)["d"]["__next"].startswith(proxy.url())


async def test_policy_can_turn_rewriting_off(upstream, start_proxy):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base, extra_yaml="links: {rewrite: false}\n")
    _, headers, body = await _get(proxy.url() + "/links")
    assert json.loads(body)["d"]["__next"].startswith(base)
    assert headers["Location"].startswith(base)


async def test_forward_proxy_mode_keeps_exact_links(upstream, start_proxy):
    base = str(upstream.make_url("")).rstrip("/")
    proxy = await start_proxy(base)
    async with aiohttp.ClientSession() as s:
        async with s.get(base + "/links", proxy=proxy.url()) as r:
            assert (await r.json())["d"]["__next"].startswith(base)
