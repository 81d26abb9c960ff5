"""Emulator conformance: writes, the error limit (§4), faults, statistics, the JSONL log, XML, config, CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import xml.etree.ElementTree as ET

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.emulator import EMULATOR, EmulatorConfig, create_app, load_config
from proxy.emulator.runner import start_emulator

START = 1_795_600_800
ALL = "ID ne guid'00000000-0000-0000-0000-000000000000'"
MISSING = "/api/v1/1/crm/Accounts(guid'00000000-0000-0000-0000-00000000abcd')"


async def start(aiohttp_client, config: dict | None = None):
    clock = ManualClock(START)
    app = create_app(EmulatorConfig.from_dict({"minutely_limit": 10_000, **(config or {})}), clock)
    client = await aiohttp_client(app)
    emu = app[EMULATOR]
    h = {"Authorization": "Bearer " + emu.issue_tokens()["access_token"], "Accept": "application/json"}
    return client, emu, clock, h


async def test_writes_on_accounts(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    base = str(client.make_url("")).rstrip("/")
    resp = await client.post("/api/v1/1/crm/Accounts", json={"Name": "Nieuw B.V.", "City": "Delft"}, headers=h)
    assert resp.status == 201
    d = (await resp.json())["d"]
    gid = d["ID"]
    assert resp.headers["Location"] == f"{base}/api/v1/1/crm/Accounts(guid'{gid}')" == d["__metadata"]["uri"]
    assert gid in emu.account_ids(1) and len(emu.account_ids(1)) == 251
    resp = await client.put(f"/api/v1/1/crm/Accounts(guid'{gid}')", json={"City": "Gent"}, headers=h)
    assert resp.status == 204 and await resp.read() == b""
    got = (await (await client.get(f"/api/v1/1/crm/Accounts(guid'{gid}')", headers=h)).json())["d"]
    assert got["City"] == "Gent" and got["Name"] == "Nieuw B.V."
    sync = await client.get("/api/v1/1/sync/CRM/Accounts", headers=h, params={"$filter": f"Timestamp gt {got['Timestamp'] - 1}L"})
    assert [r["ID"] for r in (await sync.json())["d"]["results"]] == [gid]
    resp = await client.delete(f"/api/v1/1/crm/Accounts(guid'{gid}')", headers=h)
    assert resp.status == 204
    assert (await client.get(f"/api/v1/1/crm/Accounts(guid'{gid}')", headers=h)).status == 404
    deleted = await client.get("/api/v1/1/sync/Deleted", headers=h, params={"$filter": "Timestamp gt 1L"})
    assert gid in [r["EntityKey"] for r in (await deleted.json())["d"]["results"]]
    assert (await client.delete(f"/api/v1/1/crm/Accounts(guid'{gid}')", headers=h)).status == 404
    assert emu.count("created") == 1 and emu.count("updated") == 1 and emu.count("deleted") == 1


@pytest.mark.parametrize("method,path,body,status", [
    ("POST", "/api/v1/1/crm/Accounts", {}, 400),                  # Name is mandatory
    ("PUT", MISSING, {"Name": "x"}, 404),
    ("POST", "/api/v1/1/bulk/CRM/Accounts", {"Name": "x"}, 405),
])
async def test_write_errors(aiohttp_client, method, path, body, status):
    client, emu, clock, h = await start(aiohttp_client)
    resp = await client.request(method, path, json=body, headers=h)
    assert resp.status == status
    assert (await resp.json())["error"]["message"]["value"]


async def test_error_block_after_11_errors_lifts_after_an_hour(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    for _ in range(11):
        assert (await client.get(MISSING, headers=h)).status == 404
    resp = await client.get(MISSING, headers=h)
    assert resp.status == 429 and await resp.read() == b""
    assert not [k for k in resp.headers if k.lower().startswith("x-ratelimit")]
    ok = f"/api/v1/1/crm/Accounts(guid'{emu.account_ids(1)[0]}')"
    assert (await client.get(ok, headers=h)).status == 429                       # same endpoint: crm/accounts
    assert (await client.get("/api/v1/1/crm/Contacts", headers=h)).status == 200   # other endpoint
    assert (await client.get(ok.replace("/1/", "/2/"), headers=h)).status == 404   # other division (other data)
    assert emu.count("error_block") == 2
    assert emu.stats()["blocks"] == [{"app": "test-app", "division": 1, "endpoint": "crm/accounts",
                                      "until": START + 3600}]
    await clock.advance(3599)
    h["Authorization"] = "Bearer " + emu.issue_tokens()["access_token"]
    assert (await client.get(ok, headers=h)).status == 429
    await clock.advance(1)
    assert (await client.get(ok, headers=h)).status == 200


async def test_error_window_is_rolling(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client, {"access_token_lifetime": 100_000})
    for _ in range(10):
        await client.get(MISSING, headers=h)
    await clock.advance(1800)
    await client.get(MISSING, headers=h)                       # 11 in the hour: blocked
    assert (await client.get(MISSING, headers=h)).status == 429
    emu.reset_limits()
    for _ in range(10):
        await client.get(MISSING, headers=h)
    await clock.advance(3600)                                  # the first ten have left the window
    for _ in range(10):
        assert (await client.get(MISSING, headers=h)).status == 404
    assert (await client.get(MISSING, headers=h)).status == 404  # the 11th in this hour
    assert (await client.get(MISSING, headers=h)).status == 429


@pytest.mark.parametrize("path,params,endpoint", [
    ("/api/v1/1/crm/Accounts", {}, "crm/accounts"),                    # mandatory filter 400
    ("/api/v1/1/bulk/CRM/Accounts", {"$filter": ALL}, "bulk/crm/accounts"),
    ("/api/v1/1/sync/CRM/Accounts", {"$filter": "Name eq 'x'"}, "sync/crm/accounts"),
    ("/docs/XMLDownload.aspx", {"Topic": "Nope", "_Division_": "1"}, "xml/download/nope"),
])
async def test_error_limit_per_endpoint(aiohttp_client, path, params, endpoint):
    client, emu, clock, h = await start(aiohttp_client, {"error_block_status": 403,
                                                         "error_block_body": '{"blocked":true}'})
    for _ in range(11):
        assert (await client.get(path, params=params, headers=h)).status == 400
    resp = await client.get(path, params=params, headers=h)
    assert resp.status == 403 and await resp.json() == {"blocked": True}
    assert emu.count("error_block", endpoint=endpoint) == 1


async def test_auth_failures_count_toward_the_error_limit(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    old = h["Authorization"]
    await clock.advance(600)
    for _ in range(11):
        assert (await client.get(MISSING, headers={"Authorization": old})).status == 401
    h["Authorization"] = "Bearer " + emu.issue_tokens()["access_token"]
    assert (await client.get(MISSING, headers=h)).status == 429
    assert emu.count("token_expired") == 11


@pytest.mark.parametrize("kind,status", [("503", 503), ("408", 408), ("599", 599), ("empty", 200)])
async def test_fault_every_nth_not_counted(aiohttp_client, kind, status):
    client, emu, clock, h = await start(aiohttp_client)
    emu.set_faults([{"path": "/api/v1/*/crm/accounts*", "kind": kind, "every": 3}])
    ok = f"/api/v1/1/crm/Accounts(guid'{emu.account_ids(1)[0]}')"
    got = [(await client.get(ok, headers=h)).status for _ in range(6)]
    assert got == [200, 200, status, 200, 200, status]
    resp = await client.get(ok, headers=h)
    assert resp.headers["X-RateLimit-Remaining"] == str(5000 - 5)   # faulted calls did not count
    assert emu.count(f"fault_{kind}") == 2
    assert (await client.get("/api/v1/1/crm/Contacts", headers=h)).status == 200  # other paths untouched


async def test_fault_reset_probability_methods_and_slow(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    emu.set_faults([{"path": "/api/v1/*", "methods": ["DELETE"], "kind": "reset", "every": 1}])
    with pytest.raises(aiohttp.ClientError):
        await client.delete(MISSING, headers=h)
    assert emu.count("fault_reset") == 1
    rules = [{"path": "*", "kind": "503", "probability": 0.5, "seed": 7}]
    runs = []
    for _ in range(2):
        emu.set_faults(rules)
        runs.append([(await client.get("/api/v1/1/crm/Contacts", headers=h)).status for _ in range(20)])
    assert runs[0] == runs[1] and 503 in runs[0] and 200 in runs[0]
    emu.set_faults([{"path": "*", "kind": "slow", "delay": 30, "every": 1}])
    task = asyncio.ensure_future(client.get("/api/v1/1/crm/Contacts", headers=h))
    await asyncio.sleep(0.05)
    assert not task.done()
    await clock.advance(30)
    assert (await asyncio.wait_for(task, 2)).status == 200


async def test_stats_endpoint_and_jsonl_log(aiohttp_client, tmp_path):
    log = tmp_path / "requests.jsonl"
    client, emu, clock, h = await start(aiohttp_client, {"request_log": str(log)})
    emu.set_limits("test-app", 1, minutely=1)
    await client.get("/api/v1/1/crm/Contacts", headers=h)
    await client.get("/api/v1/1/crm/Contacts", headers=h)
    await client.get("/api/v1/1/crm/Accounts", headers=h)
    await client.post("/api/oauth2/token", data={"grant_type": "refresh_token", "refresh_token": "x!y",
                                                 "client_id": "test-app", "client_secret": "test-secret"})
    stats = await (await client.get("/_emulator/stats")).json()
    assert stats == emu.stats()
    assert stats["outcomes"] == {"ok": 1, "minutely_429": 2, "invalid_grant": 1}
    assert stats["token_calls"] == 1 and stats["requests"] == 5
    assert {"app": "test-app", "division": 1, "endpoint": "crm/contacts", "outcome": "minutely_429",
            "count": 1} in stats["calls"]
    assert emu.count("minutely_429", app="test-app", division=1, endpoint="crm/accounts") == 1
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["outcome"] for x in lines] == ["ok", "minutely_429", "minutely_429", "invalid_grant"]
    assert set(lines[0]) == {"ts", "method", "path", "app", "division", "endpoint", "status", "outcome"}
    assert lines[0]["ts"] == START and lines[0]["path"] == "/api/v1/1/crm/Contacts"
    text = log.read_text()
    assert h["Authorization"][7:] not in text and "test-secret" not in text and "x!y" not in text


async def test_xml_download_and_upload(aiohttp_client):
    client, emu, clock, h = await start(aiohttp_client)
    resp = await client.get("/docs/XMLDownload.aspx?Topic=Accounts&_Division_=4", headers=h)
    assert resp.status == 200 and "X-RateLimit-Limit" in resp.headers
    doc = ET.fromstring(await resp.read())
    assert doc.tag == "eExact" and len(doc.find("Accounts")) == 100
    assert doc.find("Accounts/Account").get("ID") == "{" + emu.account_ids(4)[0] + "}"
    resp = await client.post("/docs/XMLUpload.aspx?Topic=Items&_Division_=4", data=b"<eExact><Items/></eExact>",
                             headers={**h, "Content-Type": "application/json"})
    assert resp.status == 200
    assert ET.fromstring(await resp.read()).find("Messages/Message").get("type") == "2"
    assert (await client.get("/docs/XMLDownload.aspx?Topic=Accounts&_Division_=4")).status == 401
    assert emu.count("ok", endpoint="xml/upload/items") == 1


@pytest.mark.parametrize("text,where", [
    ("minutely_limit: 60\ndaily_limit: nope\n", ":2: daily_limit"),
    ("page_size: 60\nbogus: 1\n", ":2: unknown emulator setting"),
    ("faults:\n  - {path: '*', kind: 500}\n", ":1: faults"),
    ("a: [1\n", ":2: not valid YAML"),
    ("- 1\n", ":1: must be a mapping"),
])
def test_load_config_refuses_bad_input(tmp_path, text, where):
    path = tmp_path / "emulator.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as err:
        load_config(str(path))
    assert str(err.value).startswith(str(path)) and where in str(err.value)


def test_example_config_loads_with_defaults():
    example = os.path.join(os.path.dirname(__file__), "..", "proxy", "emulator", "emulator.example.yaml")
    assert load_config(example) == EmulatorConfig()


async def test_runner_and_cli(tmp_path):
    emu = await start_emulator(EmulatorConfig(), ManualClock(START))
    try:
        async with aiohttp.ClientSession() as s, s.get(emu.base_url + "/_emulator/stats") as resp:
            assert resp.status == 200 and emu.state.requests == 1
    finally:
        await emu.stop()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "proxy", "emulate", "--port", "0",
                                                "--request-log", str(tmp_path / "log.jsonl"),
                                                stdout=asyncio.subprocess.PIPE)
    first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    rest = (await asyncio.wait_for(proc.stdout.read(400), 5)).decode()
    assert "http://127.0.0.1:" in first and ":0 " not in first
    assert "demo-app / demo-secret" in rest and "/api/oauth2/auth?client_id=demo-app" in rest
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
