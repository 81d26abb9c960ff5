"""HTTPS with the emulator standing in for start.exactonline.nl by name (a test CA, no network).

A Python client that verifies certificates and trusts only the proxy's local CA reaches the emulator
through the HTTPS listener and through CONNECT interception, with a real token, and pages with __next.
"""

from __future__ import annotations

import ssl

import aiohttp
import pytest

from proxy.clock import SystemClock
from proxy.emulator.runner import start_emulator
from proxy.tls.ca import LocalCA
from tests.test_tls import EXACT, trusting


@pytest.fixture
async def exact_emulator(tmp_path):
    test_ca = LocalCA.create(str(tmp_path / "exact-test-ca"), SystemClock())
    leaf = test_ca.leaf([EXACT])
    (tmp_path / "leaf.pem").write_bytes(leaf.chain_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    emu = await start_emulator(ssl_context=ctx)
    emu.test_ca = test_ca.cert_path
    yield emu
    await emu.stop()


@pytest.fixture
async def proxy(start_proxy, exact_emulator, tmp_path):
    port = exact_emulator.base_url.rsplit(":", 1)[1]
    upstreams = (f"upstreams:\n  nl: {{base_url: 'https://{EXACT}', connect_to: '127.0.0.1:{port}', "
                 f"ca_bundle: '{exact_emulator.test_ca}'}}\n")
    listeners = ("listeners:\n  - {name: plain, port: 0, upstream: nl}\n"
                 "  - {name: secure, port: 0, upstream: nl, tls: true}\n")
    LocalCA.create(str(tmp_path / "ca"), SystemClock())
    return await start_proxy("", extra_yaml=f"ca: {{dir: '{tmp_path / 'ca'}'}}\n", listeners_yaml=listeners,
                             upstreams_yaml=upstreams)


async def _page_through(s, first_url, headers, **kw) -> tuple[int, list[str]]:
    rows, urls, url = 0, [], first_url
    while url:
        urls.append(url)
        async with s.get(url, headers=headers, **kw) as r:
            assert r.status == 200, await r.text()
            d = (await r.json())["d"]
        rows += len(d["results"])
        url = d.get("__next")
    return rows, urls


async def test_https_listener_and_connect_mode_reach_the_emulator(proxy, exact_emulator, tmp_path):
    ctx = trusting(str(tmp_path / "ca" / "ca.pem"))
    token = exact_emulator.state.issue_tokens("test-app")["access_token"]
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    async with aiohttp.ClientSession() as s:
        # 1. the HTTPS listener: links come back on the listener
        secure = proxy.url("secure")
        rows, urls = await _page_through(s, f"{secure}/api/v1/7/crm/Accounts?$select=ID", h, ssl=ctx)
        assert rows == 250 and all(u.startswith(secure) for u in urls)
        # 2. HTTPS_PROXY mode: the tool keeps Exact's own host; every page goes through the proxy
        rows, urls = await _page_through(s, f"https://{EXACT}/api/v1/8/crm/Accounts?$select=ID", h,
                                         proxy=proxy.url("plain"), ssl=ctx)
        assert rows == 250 and all(u.startswith(f"https://{EXACT}/") for u in urls)
    # the proxy added Exact's mandatory $filter both times, so the emulator refused nothing
    assert exact_emulator.state.count(outcome="mandatory_filter") == 0
    assert exact_emulator.state.count(endpoint="crm/accounts") == 10
