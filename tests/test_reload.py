"""Hot reload: a broken edit is refused and the last good policy stays; a fixed edit is applied."""

from __future__ import annotations

import asyncio
import os

import aiohttp

from tests import fake_upstream
from tests.fake_upstream import SEEN


async def _wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _save_by_rename(path, text):
    tmp = path.with_suffix(".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


async def test_broken_edit_refused_fixed_edit_applied(aiohttp_server, start_proxy, log_output, tmp_path):
    one = await aiohttp_server(fake_upstream.make_app())
    two = await aiohttp_server(fake_upstream.make_app())
    base_one = str(one.make_url("")).rstrip("/")
    base_two = str(two.make_url("")).rstrip("/")
    proxy = await start_proxy(base_one, extra_yaml="reload_interval: 0.05\n")
    path = tmp_path / "policies.yaml"
    original = path.read_text()
    holder = proxy.holder

    async def get():
        async with aiohttp.ClientSession() as s:
            async with s.get(proxy.url() + "/api/v1/1/crm/Accounts") as r:
                return r.status

    assert await get() == 200 and len(one.app[SEEN]) == 1

    # 1. a broken edit, saved the way editors save (write a temp file, rename over)
    _save_by_rename(path, original.replace(base_one, base_two).replace("reload_interval: 0.05",
                                                                        "reload_interval: soon"))
    await _wait_for(lambda: holder.refusals >= 1)
    assert "policies.yaml:" in log_output.getvalue()
    assert "reload_interval: must be a number" in log_output.getvalue()
    assert "last good policy stays in force" in log_output.getvalue()
    assert await get() == 200 and len(one.app[SEEN]) == 2 and two.app[SEEN] == []

    # 2. the fixed edit is applied
    _save_by_rename(path, original.replace(base_one, base_two))
    await _wait_for(lambda: holder.reloads >= 1)
    assert await get() == 200 and len(two.app[SEEN]) == 1 and len(one.app[SEEN]) == 2

    # 3. truncated, then deleted: refused, the policy in force stays
    path.write_text("")
    await _wait_for(lambda: holder.refusals >= 2)
    assert "the file is empty" in log_output.getvalue()
    path.unlink()
    await _wait_for(lambda: "is gone" in log_output.getvalue())
    assert await get() == 200 and len(two.app[SEEN]) == 2
