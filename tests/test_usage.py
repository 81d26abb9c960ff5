"""Where the budget went: ``proxy.ops.usage`` through the real proxy in front of the emulator, the
``usage`` section (``proxy.ops.usage_settings``), the tool families (``proxy.ops.tool_family``),
``/_proxy/usage``, the per-tool metrics and ``exact-proxy usage`` (``proxy.ops.usage_cli``)."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.ops import tool_family, usage_cli
from proxy.ops.usage import NAMESPACE, valid_day
from proxy.ops.usage_settings import UsageSettings, read_usage
from proxy.policy import PolicyError, parse_policy

START = 1_795_600_800.0  # 2026-11-25T10:00:00Z
DAY = 86400.0
REQUESTS = "python-requests/2.31.0"
CURL = "curl/8.5.0"


async def setup(emulator, start_proxy, extra=""):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, extra, clock=clock)
    return clock, emu, proxy, fresh(emu)


def fresh(emu) -> dict[str, str]:
    token = emu.state.issue_tokens("test-app")["access_token"]
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def read_whole(s, url, headers) -> int:
    """Read a set by following ``__next``, as a tool does; returns the pages read."""
    pages = 0
    while url:
        async with s.get(url, headers=headers) as r:
            assert r.status == 200, await r.text()
            url = (await r.json())["d"].get("__next")
        pages += 1
    return pages


async def get_json(s, url):
    async with s.get(url) as r:
        return r.status, await r.json(content_type=None)


def test_tool_families_are_a_small_fixed_set():
    cases = {
        "python-requests/2.31.0": "python-requests",
        "Microsoft Office Excel 2014": "Microsoft Office Excel",
        "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Excel 16.0.17328; Pro)": "Microsoft Office Excel",
        "Microsoft.Data.Mashup (https://go.microsoft.com/fwlink/?LinkID=304225)": "Power Query",
        "curl/8.5.0": "curl",
        "Go-http-client/1.1": "Go-http-client",
        "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)": "node-fetch",
        "axios/1.6.8": "axios",
        "okhttp/4.12.0": "okhttp",
        "RestSharp/110.2.0.0": ".NET",
        "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.19041.4291": "PowerShell",
        "Python/3.12 aiohttp/3.9.5": "aiohttp",
        "Java/17.0.2": "Java",
        "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0": "browser",
        "MyTool/1.0 secret-ish-build-7f3a": "other",
        "": "none",
        None: "none",
    }
    for ua, expected in cases.items():
        assert tool_family.family(ua) == expected, ua
    assert set(tool_family.FAMILIES) >= set(cases.values())
    for i in range(tool_family.CACHE + 10):  # any number of User-Agents: still a bounded cache
        assert tool_family.family(f"tool-{i}") == "other"
    assert len(tool_family._known) <= tool_family.CACHE


def test_the_usage_section_is_validated_with_file_and_line():
    p = parse_policy("usage:\n  keep_days: 10\n  advice: {whole_reads: 5}\n", "p.yaml")
    assert p.usage.keep_days == 10 and p.usage.advice.whole_reads == 5 and p.usage.advice.enabled
    assert parse_policy("{}", "p.yaml").usage == UsageSettings()
    with pytest.raises(PolicyError) as err:
        parse_policy("usage:\n  keep_days: 0\n  advice:\n    enabld: true\n    whole_reads: x\n", "p.yaml")
    text = str(err.value)
    assert "p.yaml:2: usage.keep_days: must be at least 1" in text
    assert "p.yaml:4: usage.advice.enabld: unknown setting; did you mean 'enabled'?" in text
    assert "p.yaml:5: usage.advice.whole_reads: must be a whole number" in text
    assert callable(read_usage) and valid_day("2026-11-25") and not valid_day("2026-13-01")


async def test_usage_per_tool_division_and_endpoint(emulator, start_proxy):
    clock, emu, proxy, auth = await setup(emulator, start_proxy)
    base = proxy.url()
    async with aiohttp.ClientSession() as s:
        pages = await read_whole(s, base + "/api/v1/101/crm/Accounts", {**auth, "User-Agent": REQUESTS})
        assert pages == 5
        for _ in range(2):
            async with s.get(base + "/api/v1/102/crm/Contacts?$top=1", headers={**auth, "User-Agent": CURL}) as r:
                assert r.status == 200
        async with s.get(base + "/api/v1/102/crm/Nothing", headers={**auth, "User-Agent": CURL}) as r:
            assert r.status == 404  # Exact's own 404: an error
        async with s.get(base + "/api/v1/+555/crm/Accounts", headers={**auth, "User-Agent": CURL}) as r:
            assert r.status == 400  # answered locally, by classify
        code, by_tool = await get_json(s, base + "/_proxy/usage?by=tool")
        assert code == 200 and by_tool["day"] == "2026-11-25" and by_tool["scope"] == "this proxy"
        rows = {r["tool"]: r for r in by_tool["rows"]}
        assert rows["python-requests"]["requests"] == 5 and rows["python-requests"]["exact_calls"] == 5
        assert rows["python-requests"]["whole_reads"] == 1 and rows["python-requests"]["listener"] == "default"
        assert rows["curl"]["requests"] == 4 and rows["curl"]["exact_calls"] == 3
        assert rows["curl"]["local_by"] == {"classify": 1} and rows["curl"]["errors"] == {"404": 1}
        assert by_tool["total"]["requests"] == 9 and by_tool["total"]["local"] == 1
        _, by_division = await get_json(s, base + "/_proxy/usage?by=division")
        assert {(r["division"], r["requests"]) for r in by_division["rows"]} == {(101, 5), (102, 3), (None, 1)}
        _, by_endpoint = await get_json(s, base + "/_proxy/usage?by=endpoint&day=2026-11-25")
        assert {r["endpoint"]: r["requests"] for r in by_endpoint["rows"]}["crm/accounts"] == 5
        _, full = await get_json(s, base + "/_proxy/usage")
        assert full["by"] == "key" and {"app", "division", "listener", "tool", "endpoint"} <= set(full["rows"][0])
        assert (await get_json(s, base + "/_proxy/usage?day=2026-13-01"))[0] == 400
        assert (await get_json(s, base + "/_proxy/usage?by=user-agent"))[0] == 400
        assert (await get_json(s, base + "/_proxy/usage?day=2026-11-24"))[1]["rows"] == []
        async with s.get(base + "/_proxy/metrics") as r:
            metrics = await r.text()
    assert 'exact_proxy_tool_requests_total{listener="default",outcome="upstream",tool="python-requests"} 5.0' \
        in metrics
    assert 'exact_proxy_tool_requests_total{listener="default",outcome="local:classify",tool="curl"} 1.0' in metrics
    assert 'exact_proxy_tool_exact_errors_total{listener="default",status="404",tool="curl"} 1.0' in metrics
    assert 'exact_proxy_tool_exact_calls_total{listener="default",tool="curl"} 3.0' in metrics
    assert "exact_proxy_tool_queued_seconds_total" in metrics
    assert auth["Authorization"].split()[1] not in metrics + json.dumps(full)


async def test_time_queued_for_call_budget_is_counted(emulator, start_proxy):
    clock, emu, proxy, auth = await setup(emulator, start_proxy)
    base = proxy.url()
    h = {**auth, "User-Agent": REQUESTS}
    book = next(f for f in proxy.services.filters if f.name == "call_budget").book

    async def calls(s):
        for _ in range(62):  # the emulator's minute: 60 calls; the rest wait for the next one
            async with s.get(base + "/api/v1/7/crm/Contacts?$top=1", headers=h) as r:
                assert r.status == 200

    async with aiohttp.ClientSession() as s:
        task = asyncio.ensure_future(calls(s))
        while not task.done():  # move the clock only while the call waits in the division's queue
            await asyncio.sleep(0.005)
            if sum(len(d.waiters) for d in book.divisions.values()) and clock.next_deadline() is not None:
                await clock.set_monotonic(max(clock.next_deadline() or 0, clock.monotonic()))
        await task
        _, body = await get_json(s, base + "/_proxy/usage?by=tool")
    row = body["rows"][0]
    assert row["requests"] == 62 and row["exact_calls"] == 62 and row["queued"] >= 1 and row["queued_s"] > 1


async def test_kept_in_the_state_file_read_back_and_old_days_dropped(emulator, start_proxy, tmp_path):
    clock, emu, proxy, auth = await setup(emulator, start_proxy, "usage: {keep_days: 2}\n")
    base = proxy.url()
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.get(base + "/api/v1/5/crm/Contacts?$top=1", headers={**auth, "User-Agent": CURL}) as r:
                assert r.status == 200
        await clock.advance(DAY)  # 2026-11-26
        auth = fresh(emu)
        async with s.get(base + "/api/v1/5/crm/Contacts?$top=1", headers={**auth, "User-Agent": CURL}) as r:
            assert r.status == 200
        _, day2 = await get_json(s, base + "/_proxy/usage?by=tool")
        assert day2["day"] == "2026-11-26" and day2["total"]["requests"] == 1
        assert day2["days"] == ["2026-11-25", "2026-11-26"]
        await clock.advance(2)  # written behind: the records reach the file within flush intervals
        await asyncio.sleep(0.2)
    path = str(tmp_path / "state.sqlite")
    days = {json.loads(k)[0] for (k,) in _rows(path)}
    assert days == {"2026-11-25", "2026-11-26"}
    policy = proxy.holder.current
    await proxy.stop()

    out = io.StringIO()  # no proxy answers: the state file, read-only
    assert await asyncio.to_thread(usage_cli.usage, policy, "http://127.0.0.1:9", "2026-11-25", "tool", False,
                                   out) == 0
    text = out.getvalue()
    assert "from the state file" in text and "curl" in text and "2026-11-25" in text
    out = io.StringIO()
    assert await asyncio.to_thread(usage_cli.usage, policy, "http://127.0.0.1:9", "2026-11-25", None, True,
                                   out) == 0
    assert json.loads(out.getvalue())["total"]["requests"] == 3

    await clock.advance(DAY)  # 2026-11-27: with keep_days 2, the 25th goes
    proxy = await start_proxy(emu.base, "usage: {keep_days: 2}\n", clock=clock)
    async with aiohttp.ClientSession() as s:
        _, body = await get_json(s, proxy.url() + "/_proxy/usage?day=2026-11-26")
        assert body["total"]["requests"] == 1 and body["days"] == ["2026-11-26", "2026-11-27"]
        out = io.StringIO()
        assert await asyncio.to_thread(usage_cli.usage, proxy.holder.current, proxy.url(), "2026-11-26",
                                       "endpoint", False, out) == 0
        assert "live" in out.getvalue() and "crm/contacts" in out.getvalue()
    await proxy.stop()
    assert {json.loads(k)[0] for (k,) in _rows(path)} == {"2026-11-26"}


async def test_records_per_day_are_bounded(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), "usage: {max_keys_per_day: 100}\n")
    async with aiohttp.ClientSession() as s:
        for division in range(1, 131):
            async with s.get(proxy.url() + f"/api/v1/{division}/crm/Contacts?$top=1") as r:
                assert r.status == 200
        _, body = await get_json(s, proxy.url() + "/_proxy/usage")
    assert len(body["rows"]) == 101 and body["total"]["requests"] == 130
    other = [r for r in body["rows"] if r["endpoint"] == "(other)"]
    assert other and other[0]["requests"] == 30


def _rows(path: str) -> list[tuple[str]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT key FROM state WHERE namespace = ?", (NAMESPACE,)).fetchall()
    finally:
        conn.close()


def test_the_usage_command(tmp_path, capsys):
    from proxy import cli

    policy = tmp_path / "p.yaml"
    policy.write_text(f"listeners: [{{name: a, port: 1}}]\nstate: {{path: '{tmp_path}/none.sqlite'}}\n")
    assert cli.main(["usage", "--config", str(policy), "--day", "25-11-2026"]) == 2
    assert cli.main(["usage", "--config", str(policy), "--by", "tool", "--json"]) == 1
    assert "no proxy answers" in capsys.readouterr().out
