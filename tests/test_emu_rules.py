"""The emulator's rules over HTTP: writes on Accounts, mandatory filtering, bulk/sync refusals, error limit."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.test_emu_support"]

ACC = "/api/v1/7095/crm/Accounts"
ALL = "ID ne guid'00000000-0000-0000-0000-000000000000'"
MISSING = "00000000-0000-0000-0000-000000000001"
PREFIX = (
    "This endpoint has mandatory filtering applied. A GET request for this endpoint must have a $filter "
    "parameter with one of the following fields in the url:"
)


async def test_post_put_delete_and_sync_deleted(emu, emu_clock):
    c = await emu()
    base = str(c.make_url("")).rstrip("/")
    r = await c.post(ACC, json={"Name": "New Co", "City": "Delft"}, headers=c.auth)
    assert r.status == 201
    row = (await r.json())["d"]
    assert row["Name"] == "New Co" and row["City"] == "Delft"
    assert r.headers["Location"] == f"{base}{ACC}(guid'{row['ID']}')" == row["__metadata"]["uri"]
    key = f"{ACC}(guid'{row['ID']}')"
    r = await c.put(key, json={"Name": "Renamed"}, headers=c.auth)
    assert r.status == 204 and await r.read() == b""
    assert (await (await c.get(key, headers=c.auth)).json())["d"]["Name"] == "Renamed"
    assert len(c.state.account_ids(7095)) == 251
    r = await c.delete(key, headers=c.auth)
    assert r.status == 204
    r = await c.get(key, headers=c.auth)
    assert r.status == 404
    assert (await r.json())["error"]["message"]["value"]
    assert c.state.count("not_found", endpoint="crm/accounts") == 1
    deleted = (
        await (
            await c.get("/api/v1/7095/sync/Deleted", headers=c.auth, params={"$filter": "Timestamp gt 1"})
        ).json()
    )["d"]["results"]
    keys = [d["EntityKey"] for d in deleted]
    assert row["ID"] in keys and c.state.deleted_account_id(7095) in keys
    assert deleted[-1]["EntityKey"] == row["ID"]
    # the preset deleted record 404s too
    r = await c.get(f"{ACC}(guid'{c.state.deleted_account_id(7095)}')", headers=c.auth)
    assert r.status == 404
    assert (await c.delete(key, headers=c.auth)).status == 404


@pytest.mark.parametrize(
    "path", ["crm/Accounts", "CRM/accounts", "bulk/CRM/Accounts", "logistics/Items", "bulk/Logistics/Items"]
)
async def test_mandatory_filter(emu, path):
    c = await emu()
    url = f"/api/v1/7095/{path}"
    params = {"$select": "ID"}
    r = await c.get(url, headers=c.auth, params=params)
    assert r.status == 400
    text = (await r.json())["error"]["message"]["value"]
    assert text.startswith(PREFIX) and text.endswith(".") and "url: " not in text
    fields = text[len(PREFIX) : -1].split(",")
    assert "ID" in fields and "Modified" in fields
    if "accounts" in path.lower():
        assert "Name" in fields and fields[0] == "Accountant" and fields[-1] == "VATNumber"
    r = await c.get(url, headers=c.auth, params={**params, "$filter": "Division eq 7095"})
    assert r.status == 400  # a field outside the list does not satisfy the rule
    r = await c.get(url, headers=c.auth, params={**params, "$filter": ALL})
    assert r.status == 200
    assert c.state.count("mandatory_filter") == 2


async def test_mandatory_filter_is_configurable(emu):
    c = await emu(
        {
            "mandatory_filter_endpoints": ["crm/contacts"],
            "mandatory_filter_fields": {"crm/contacts": ["ID", "Account"]},
        }
    )
    assert (await c.get(ACC, headers=c.auth)).status == 200
    r = await c.get("/api/v1/7095/crm/Contacts", headers=c.auth)
    assert (await r.json())["error"]["message"]["value"] == PREFIX + "ID,Account."


async def test_bulk_select_sync_filter_bad_filter(emu):
    c = await emu()
    r = await c.get("/api/v1/7095/bulk/Financial/TransactionLines", headers=c.auth)
    assert r.status == 400 and c.state.count("bulk_select") == 1
    r = await c.get("/api/v1/7095/sync/CRM/Accounts", headers=c.auth, params={"$filter": "Name eq 'x'"})
    assert r.status == 400 and c.state.count("sync_filter") == 1
    for bad in ("Name eq", "ID eq guid'nope'", "Nonexistent eq 1", "(Name eq 'a'"):
        r = await c.get("/api/v1/7095/crm/Contacts", headers=c.auth, params={"$filter": bad})
        assert r.status == 400, bad
        assert (await r.json())["error"]["code"] == ""
    assert c.state.count("bad_request") == 4


async def test_error_limit_blocks_endpoint_for_an_hour(emu, emu_clock):
    c = await emu({"minutely_limit": 1000})
    missing = f"{ACC}(guid'{MISSING}')"
    for _ in range(11):
        assert (await c.get(missing, headers=c.auth)).status == 404
    r = await c.get(f"{ACC}(guid'{c.state.account_ids(7095)[0]}')", headers=c.auth)
    assert r.status == 429 and await r.read() == b""
    assert not [k for k in r.headers if k.startswith("X-RateLimit")]
    assert c.state.count("error_block", endpoint="crm/accounts", division=7095, app="test-app") == 1
    # other endpoints and divisions flow
    assert (await c.get("/api/v1/7095/crm/Contacts/$count", headers=c.auth)).status == 200
    assert (await c.get(f"/api/v1/7096/crm/Accounts(guid'{MISSING}')", headers=c.auth)).status == 404
    await emu_clock.advance(3599)
    c.auth["Authorization"] = "Bearer " + c.state.issue_tokens()["access_token"]
    assert (await c.get(missing, headers=c.auth)).status == 429
    await emu_clock.advance(1)
    assert (await c.get(missing, headers=c.auth)).status == 404
    assert c.state.stats()["by_outcome"]["error_block"] == 2


async def test_error_window_is_rolling(emu, emu_clock):
    c = await emu({"minutely_limit": 1000, "access_token_lifetime": 100000})
    missing = f"{ACC}(guid'{MISSING}')"
    for _ in range(10):
        await c.get(missing, headers=c.auth)
    await emu_clock.advance(3601)
    assert (await c.get(missing, headers=c.auth)).status == 404  # the old ten have left the hour
    for _ in range(8):
        await c.get(missing, headers=c.auth)
    assert (await c.get(missing, headers=c.auth)).status == 404
    assert (await c.get(missing, headers=c.auth)).status == 404  # the 11th error in the hour blocks after it
    assert (await c.get(missing, headers=c.auth)).status == 429


async def test_block_answer_configurable(emu):
    c = await emu({"error_limit": 0, "error_block_status": 403, "error_block_body": "blocked"})
    await c.get(f"{ACC}(guid'{MISSING}')", headers=c.auth)
    r = await c.get(f"{ACC}(guid'{MISSING}')", headers=c.auth)
    assert r.status == 403 and await r.text() == "blocked"


async def test_configured_refusals_carry_reason(emu):
    c = await emu({"division_reasons": {7097: "DivisionBlocked"}, "user_reasons": {"user-9": "BlockedUser"}})
    r = await c.get("/api/v1/7097/system/Divisions", headers=c.auth)
    assert r.status == 403 and r.headers["Reason"] == "DivisionBlocked"
    assert (await c.get("/api/v1/7095/system/Divisions", headers=c.auth)).status == 200
    tok = c.state.issue_tokens("test-app", "user-9")["access_token"]
    r = await c.get("/api/v1/current/Me", headers={"Authorization": f"Bearer {tok}"})
    assert r.status == 401 and r.headers["Reason"] == "BlockedUser"
    assert c.state.count("division_refused") == 1 and c.state.count("user_refused") == 1
