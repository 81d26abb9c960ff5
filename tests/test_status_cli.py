"""``exact-proxy status``: live from the running proxy, or from the state file when it is down."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp

from proxy.status_cli import status


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
