"""Advice (``proxy.ops.advice``, with the map of ``proxy.exact.alternatives``): a tool that keeps
re-reading a whole set with a sync or bulk alternative is told so, once a day, in the log, in
``/_proxy/usage`` and in ``exact-proxy status``."""

from __future__ import annotations

import asyncio
import io

import aiohttp

from proxy.exact.alternatives import ALTERNATIVES, alternative, estimate
from proxy.ops import advice
from proxy.ops.status_cli import status
from tests.test_usage import DAY, REQUESTS, fresh, get_json, read_whole, setup

EXCEL = "Microsoft Office Excel 2014"


def test_the_map_names_sync_and_bulk_endpoints_as_exact_spells_them():
    acc = alternative("crm/accounts")
    assert acc is not None and acc.sync == "sync/CRM/Accounts" and acc.bulk == "bulk/CRM/Accounts"
    assert alternative("crm/nothing") is None and alternative(None) is None
    for key, alt in ALTERNATIVES.items():
        assert alt.rest.lower() == key
        assert alt.sync is None or alt.sync.startswith("sync/")
        assert alt.bulk is None or alt.bulk.startswith("bulk/")
    # 48 reads of 5 pages of 60: in pages of 1000, one page a read; the sync way: one full read, then
    # about one page per read
    assert estimate(48, 240) == (48, 48)
    assert estimate(10, 500) == (12, 30) and estimate(0, 0) == (0, 0)


async def test_whole_reads_past_the_threshold_are_advised_once_a_day(emulator, start_proxy, log_output):
    clock, emu, proxy, auth = await setup(emulator, start_proxy, "usage: {advice: {whole_reads: 3}}\n")
    base = proxy.url()
    h = {**auth, "User-Agent": REQUESTS}
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            assert await read_whole(s, base + "/api/v1/101/crm/Accounts", h) == 5
        # neither a filtered read, nor $top, nor a single row is a whole read
        for q in ("?$filter=Name%20eq%20'x'", "?$top=5", "(guid'00000000-0000-0000-0000-000000000001')"):
            async with s.get(base + "/api/v1/101/crm/Accounts" + q, headers=h) as r:
                await r.read()
        # a tool that sends the proxy's own mandatory filter reads the whole set too
        await read_whole(s, base + "/api/v1/102/crm/Accounts?$filter=ID%20ne%20guid'00000000-0000-0000-"
                         "0000-000000000000'&$select=ID,Name", {**auth, "User-Agent": EXCEL})
        assert "exact_proxy.advice" not in log_output.getvalue()
        _, body = await get_json(s, base + "/_proxy/usage?by=tool")
        assert body["advice"] == []
        reads = {r["tool"]: r["whole_reads"] for r in body["rows"]}
        assert reads == {"python-requests": 3, "Microsoft Office Excel": 1}
        assert await read_whole(s, base + "/api/v1/102/crm/Accounts", h) == 5  # the 4th, another division
        lines = [ln for ln in log_output.getvalue().splitlines() if "advice:" in ln]
        assert len(lines) == 1, lines
        assert "INFO" in lines[0] and "exact_proxy.advice" in lines[0]
        # logged as the 4th read begins: 3 reads of 5 pages and its first page
        assert ("tool python-requests (listener default) read crm/Accounts whole 4 times today (about 16 calls): "
                "use sync/CRM/Accounts with Timestamp (about 4 calls a day) or bulk/CRM/Accounts (about 4 "
                "calls a day)") in lines[0]
        await read_whole(s, base + "/api/v1/101/crm/Accounts", h)  # the 5th: no second line today
        assert len([ln for ln in log_output.getvalue().splitlines() if "advice:" in ln]) == 1
        _, body = await get_json(s, base + "/_proxy/usage")
        [entry] = body["advice"]
        assert entry["tool"] == "python-requests" and entry["endpoint"] == "crm/accounts"
        assert entry["whole_reads"] == 5 and entry["calls"] == 25 and "whole 5 times" in entry["advice"]
        _, st = await get_json(s, base + "/_proxy/status")
        assert st["advice"][0]["whole_reads"] == 5
        out = io.StringIO()
        assert await asyncio.to_thread(status, proxy.holder.current, base, False, out) == 0
        assert "advice (today" in out.getvalue() and "read crm/Accounts whole 5 times" in out.getvalue()

        await clock.advance(DAY)  # a new UTC day: counted afresh, advised again when past the threshold
        h = {**fresh(emu), "User-Agent": REQUESTS}
        _, body = await get_json(s, base + "/_proxy/usage")
        assert body["advice"] == []
        for _ in range(4):
            await read_whole(s, base + "/api/v1/101/crm/Accounts", h)
        assert len([ln for ln in log_output.getvalue().splitlines() if "advice:" in ln]) == 2
        await clock.advance(2)
        await asyncio.sleep(0.1)
    policy = proxy.holder.current
    await proxy.stop()
    out = io.StringIO()  # from the state file: the advice of the newest day it holds
    assert await asyncio.to_thread(status, policy, "http://127.0.0.1:9", False, out) == 0
    assert "advice (as last written" in out.getvalue() and "whole 4 times" in out.getvalue()

    proxy = await start_proxy(emu.base, "usage: {advice: {whole_reads: 3}}\n", clock=clock)
    async with aiohttp.ClientSession() as s:  # after a restart: known, not logged again today
        await read_whole(s, proxy.url() + "/api/v1/101/crm/Accounts", h)
        _, body = await get_json(s, proxy.url() + "/_proxy/usage")
    assert body["advice"][0]["whole_reads"] == 5
    assert len([ln for ln in log_output.getvalue().splitlines() if "advice:" in ln]) == 2


async def test_advice_can_be_switched_off(emulator, start_proxy, log_output):
    clock, emu, proxy, auth = await setup(emulator, start_proxy,
                                          "usage: {advice: {enabled: false, whole_reads: 1}}\n")
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            await read_whole(s, proxy.url() + "/api/v1/101/logistics/Items", {**auth, "User-Agent": REQUESTS})
        _, body = await get_json(s, proxy.url() + "/_proxy/usage")
    assert body["advice"] == [] and body["total"]["whole_reads"] == 3
    assert "advice:" not in log_output.getvalue() and advice.log.name == "exact_proxy.advice"
