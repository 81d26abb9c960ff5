"""The emulator's faults, statistics, reset, request log, XML API, config loading, runner and CLI."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import aiohttp
import pytest

from proxy.emu import ConfigError, EmulatorConfig, load_config
from proxy.emu.runner import start_emulator

pytest_plugins = ["tests.test_emu_support"]

DIV = "/api/v1/7095/system/Divisions"


async def test_fault_every_nth_not_counted(emu):
    c = await emu({"faults": [{"path": "/api/v1/*/system/*", "kind": "503", "every": 3}]})
    statuses = [(await c.get(DIV, headers=c.auth)).status for _ in range(6)]
    assert statuses == [200, 200, 503, 200, 200, 503]
    r = await c.get(DIV, headers=c.auth)
    assert r.headers["X-RateLimit-Minutely-Remaining"] == "55"  # faulted calls took no slot
    assert c.state.count("fault_503") == 2


async def test_fault_probability_is_seeded(emu):
    rules = [{"path": "*", "kind": "408", "probability": 0.5, "seed": 7, "methods": ["GET"]}]
    runs = []
    for _ in range(2):
        c = await emu({"faults": rules})
        runs.append([(await c.get(DIV, headers=c.auth)).status for _ in range(20)])
    assert runs[0] == runs[1] and 408 in runs[0] and 200 in runs[0]


async def test_fault_set_at_runtime_599_reset_empty(emu):
    c = await emu()
    c.state.set_faults(
        [
            {"path": "/api/oauth2/token", "kind": "empty"},
            {"path": "*/crm/*", "kind": "599"},
            {"path": "*/logistics/*", "kind": "reset"},
        ]
    )
    r = await c.post("/api/oauth2/token", data={"grant_type": "refresh_token"})
    assert r.status == 200 and await r.read() == b""
    r = await c.get("/api/v1/7095/crm/Contacts", headers=c.auth)
    assert r.status == 599
    with pytest.raises(aiohttp.ClientError):
        await c.get("/api/v1/7095/logistics/Items", headers=c.auth)
    assert c.state.count("fault_reset") == 1
    c.state.set_faults([])
    assert (await c.get(DIV, headers=c.auth)).status == 200


async def test_slow_fault_waits_on_the_clock(emu, emu_clock):
    c = await emu({"faults": [{"path": "*", "kind": "slow", "delay": 30}]})
    task = asyncio.ensure_future(c.get(DIV, headers=c.auth))
    for _ in range(200):
        if emu_clock.sleepers:
            break
        await asyncio.sleep(0.001)
    assert emu_clock.sleepers == 1 and not task.done()
    await emu_clock.advance(30)
    r = await task
    assert r.status == 200


async def test_stats_endpoint_and_reset(emu):
    c = await emu({"minutely_limit": 1})
    await c.get(DIV, headers=c.auth)
    await c.get(DIV, headers=c.auth)
    stats = await (await c.get("/_emulator/stats")).json()
    assert stats["by_outcome"] == {"ok": 1, "minutely_429": 1}
    assert {
        "app": "test-app",
        "division": 7095,
        "endpoint": "system/divisions",
        "outcome": "ok",
        "count": 1,
    } in stats["counts"]
    assert stats["requests"] == 2 == c.state.requests
    assert (await c.post("/_emulator/reset")).status == 204
    assert c.state.count() == 0
    assert (await c.get(DIV, headers=c.auth)).status == 200


async def test_request_log_has_no_secrets(emu, tmp_path):
    log = tmp_path / "requests.jsonl"
    c = await emu({"request_log": str(log)})
    rt = c.state.issue_tokens("demo-app")["refresh_token"]
    await c.post(
        "/api/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": rt,
            "client_id": "demo-app",
            "client_secret": "demo-secret",
        },
    )
    await c.get(DIV + "?$filter=Code eq 1", headers=c.auth)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["outcome"] for x in lines] == ["too_early", "ok"]
    assert set(lines[1]) == {"ts", "method", "path", "app", "division", "endpoint", "status", "outcome"}
    assert lines[1]["division"] == 7095 and lines[1]["endpoint"] == "system/divisions"
    text = log.read_text()
    assert rt not in text and c.token not in text and "demo-secret" not in text


async def test_xml_download_and_upload_count(emu):
    c = await emu({"minutely_limit": 2})
    r = await c.get(
        "/docs/XMLDownload.aspx",
        params={"Topic": "Accounts", "_Division_": "7095"},
        headers={"Authorization": c.auth["Authorization"]},
    )
    assert r.status == 200
    text = await r.text()
    assert text.count("<Account ") == 250 and "<eExact" in text
    assert r.headers["X-RateLimit-Minutely-Remaining"] == "1"
    r = await c.post(
        "/docs/XMLUpload.aspx?Topic=Accounts&_Division_=7095",
        data=b"<eExact><Accounts/></eExact>",
        headers={"Authorization": c.auth["Authorization"], "Content-Type": "application/json"},
    )
    assert r.status == 200 and "<Messages>" in await r.text()
    r = await c.get(
        "/docs/XMLDownload.aspx",
        params={"Topic": "Items", "_Division_": "7095"},
        headers={"Authorization": c.auth["Authorization"]},
    )
    assert r.status == 429
    assert c.state.count(endpoint="xml/download/accounts") == 1
    assert c.state.count(endpoint="xml/upload/accounts") == 1


def test_config_from_dict_and_yaml_errors(tmp_path):
    assert EmulatorConfig().minutely_limit == 60 and EmulatorConfig().clients["demo-app"] == "demo-secret"
    with pytest.raises(ValueError):
        EmulatorConfig.from_dict({"nonsense": 1})
    good = tmp_path / "good.yaml"
    good.write_text("minutely_limit: 100\nlimits:\n  - {app: demo-app, daily: 9000}\n")
    cfg = load_config(str(good))
    assert cfg.minutely_limit == 100 and cfg.limits[0].daily == 9000
    bad = tmp_path / "bad.yaml"
    bad.write_text("minutely_limit: 60\ndaily_limit: lots\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: daily_limit"):
        load_config(str(bad))
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: 1\nb: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_config(str(broken))
    faults = tmp_path / "faults.yaml"
    faults.write_text("minutely_limit: 60\nfaults:\n  - {path: '*', kind: 500}\n")
    with pytest.raises(ConfigError, match=r"faults\.yaml:2: faults: fault rule: kind must be one of"):
        load_config(str(faults))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("minutely_limit: 60\nfoo: 1\n")
    with pytest.raises(ConfigError, match=r"unknown\.yaml:2: unknown setting"):
        load_config(str(unknown))


async def test_runner_serves_and_links_use_host(emu_clock):
    running = await start_emulator(EmulatorConfig(), emu_clock)
    try:
        tok = running.state.issue_tokens()["access_token"]
        async with aiohttp.ClientSession() as s:
            url = running.base_url + "/api/v1/7095/crm/Contacts?$top=61"
            async with s.get(
                url, headers={"Authorization": f"Bearer {tok}", "Accept": "application/json"}
            ) as r:
                body = await r.json()
            assert body["d"]["__next"].startswith(running.base_url + "/api/v1/7095/crm/Contacts?")
    finally:
        await running.stop()
    running = await start_emulator(EmulatorConfig(public_base_url="https://start.exactonline.nl"), emu_clock)
    try:
        tok = running.state.issue_tokens()["access_token"]
        async with aiohttp.ClientSession() as s:
            url = running.base_url + "/api/v1/7095/crm/Contacts?$top=1"
            async with s.get(
                url, headers={"Authorization": f"Bearer {tok}", "Accept": "application/json"}
            ) as r:
                row = (await r.json())["d"]["results"][0]
        assert row["__metadata"]["uri"].startswith(
            "https://start.exactonline.nl/api/v1/7095/crm/Contacts(guid'"
        )
    finally:
        await running.stop()


def test_cli_prints_urls_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy.emu.cli", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    try:
        first = proc.stdout.readline()
        assert re.fullmatch(r"Exact Online emulator listening on http://127\.0\.0\.1:\d+", first.strip()), (
            first
        )
        assert "client_id=demo-app" in proc.stdout.readline()
        assert "/api/oauth2/auth?client_id=demo-app" in proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    bad = tmp_path / "bad.yaml"
    bad.write_text("daily_limit: -1\n")
    out = subprocess.run(
        [sys.executable, "-m", "proxy.emu.cli", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=10,
        cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    assert out.returncode == 2 and "bad.yaml:1: daily_limit" in out.stderr


def test_example_config_is_the_defaults():
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "proxy", "emu", "emulator.example.yaml")
    assert load_config(path) == EmulatorConfig()
