"""``exact-proxy status``: live from the running proxy, or from the state file when it is down."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp

from proxy.ops.status_cli import status


async def test_status_live_table_and_json(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(proxy.url("default") + "/api/v1/5/crm/Accounts?$filter=ID%20eq%201") as r:
                assert r.status == 200
    out = io.StringIO()
    assert await asyncio.to_thread(status, proxy.holder.current, proxy.url("default"), False, out) == 0
    text = out.getvalue()
    assert "exact-proxy status: live" in text and "token chains" in text and "calls: 3" in text
    out = io.StringIO()
    assert await asyncio.to_thread(status, proxy.holder.current, proxy.url("default"), True, out) == 0
    data = json.loads(out.getvalue())
    assert data["totals"]["calls"] == 3


async def test_status_when_nothing_answers(tmp_path):
    from proxy.policy import parse_policy

    policy = parse_policy(f"listeners: [{{name: a, port: 1}}]\nstate: {{path: '{tmp_path}/none.sqlite'}}\n",
                          str(tmp_path / "p.yaml"))
    out = io.StringIO()
    assert await asyncio.to_thread(status, policy, None, False, out) == 1
    assert "no proxy answers" in out.getvalue()


async def test_status_from_the_state_file_when_the_proxy_is_down(emulator, start_proxy):
    from tests.test_token_broker_e2e import authorize

    emu = await emulator()
    proxy = await start_proxy(emu.base)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, proxy.url())
        h = {"Authorization": f"Bearer {tok['access_token']}", "Accept": "application/json"}
        for _ in range(3):
            async with s.get(proxy.url() + "/api/v1/77/crm/Contacts?$top=1", headers=h) as r:
                assert r.status == 200
    policy = proxy.holder.current
    await proxy.stop()
    out = io.StringIO()
    assert await asyncio.to_thread(status, policy, "http://127.0.0.1:9", False, out) == 0
    text = out.getvalue()
    assert "from the state file" in text and "call budget (as last written)" in text
    assert "3/60" in text and "token chains" in text
    assert tok["access_token"] not in text and tok["refresh_token"] not in text and "fernet:" not in text
    assert "plain:" not in text
