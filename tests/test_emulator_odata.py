"""Emulator conformance: data, OData, paging, JSON and Atom, bulk/sync and mandatory filtering (§1, §5, §6)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import unquote

import pytest

from proxy.clock import ManualClock
from proxy.emulator import EMULATOR, EmulatorConfig, create_app
from proxy.emulator.data import ENTITIES
from proxy.emulator.rules import ACCOUNT_FIELDS

START = 1_795_600_800
ALL = "ID ne guid'00000000-0000-0000-0000-000000000000'"
NS = {"a": "http://www.w3.org/2005/Atom", "m": "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata",
      "d": "http://schemas.microsoft.com/ado/2007/08/dataservices"}


async def start(aiohttp_client, config: dict | None = None):
    clock = ManualClock(START)
    cfg = {"minutely_limit": 10_000, **(config or {})}
    app = create_app(EmulatorConfig.from_dict(cfg), clock)
    client = await aiohttp_client(app)
    emu = app[EMULATOR]
    h = {"Authorization": "Bearer " + emu.issue_tokens()["access_token"], "Accept": "application/json"}
    return client, emu, h


async def get(client, path, h, params=None):
    resp = await client.get(path, headers=h, params=params)
    return resp, (await resp.json() if "json" in resp.headers.get("Content-Type", "") else await resp.text())


async def test_paging_250_accounts_is_5_pages_of_60(aiohttp_client):
    client, emu, h = await start(aiohttp_client)
    url, pages, seen = f"/api/v1/1/crm/Accounts?$select=ID,Name&$filter={ALL}", [], []
    base = str(client.make_url("")).rstrip("/")
    while url:
        resp, body = await get(client, url, h)
        assert resp.status == 200
        d = body["d"]
        pages.append(len(d["results"]))
        seen += [r["ID"] for r in d["results"]]
        assert all(set(r) == {"__metadata", "ID", "Name"} for r in d["results"])
        url = d.get("__next")
        if url:
            assert url.startswith(base + "/api/v1/1/crm/Accounts?")
            assert "$select=ID,Name" in url and "$filter=" in unquote(url) and "$skiptoken=guid'" in unquote(url)
            url = url[len(base):]
    assert pages == [60, 60, 60, 60, 10]
    assert seen == emu.account_ids(1) and len(set(seen)) == 250


async def test_metadata_uri_and_type_absolute_on_the_request_host(aiohttp_client):
    client, emu, h = await start(aiohttp_client)
    gid = emu.account_ids(3)[5]
    resp, body = await get(client, f"/api/v1/3/CRM/accounts(guid'{gid}')", h)
    base = str(client.make_url("")).rstrip("/")
    assert body["d"]["__metadata"] == {"uri": f"{base}/api/v1/3/CRM/accounts(guid'{gid}')",
                                       "type": "Exact.Web.Api.Models.Account"}
    assert body["d"]["ID"] == gid and re.fullmatch(r"/Date\(\d+\)/", body["d"]["Modified"])


async def test_public_base_url_setting(aiohttp_client):
    client, emu, h = await start(aiohttp_client, {"public_base_url": "https://start.exactonline.nl"})
    resp, body = await get(client, f"/api/v1/1/crm/Accounts?$filter={ALL}", h)
    assert body["d"]["__next"].startswith("https://start.exactonline.nl/api/v1/1/crm/Accounts?")


async def test_data_is_deterministic_per_division(aiohttp_client):
    c1, e1, h1 = await start(aiohttp_client)
    c2, e2, h2 = await start(aiohttp_client)
    assert e1.account_ids(7) == e2.account_ids(7) != e1.account_ids(8)
    assert len(e1.account_ids(7)) == 250


def _expected(emu, flt) -> int:
    return sum(1 for r in emu.data.rows(1, ENTITIES["crm/accounts"]) if flt(r))


def _ms(row) -> int:
    return int(row["Modified"][6:-2])


FILTERS = [
    ("Name eq '{name}'", lambda r, x: r["Name"] == x["Name"]),
    ("ID eq guid'{ID}'", lambda r, x: r["ID"] == x["ID"]),
    ("ID eq guid'{IDU}'", lambda r, x: r["ID"] == x["ID"]),
    ("Modified gt datetime'2023-06-01T00:00:00'", lambda r, x: _ms(r) > 1685577600000),
    ("Modified le datetime'2023-06-01'", lambda r, x: _ms(r) <= 1685577600000),
    ("Timestamp ge {ts}L and Modified gt datetime'2000-01-01'", lambda r, x: r["Timestamp"] >= x["Timestamp"]),
    ("(Timestamp lt {ts}) and ID ne guid'{ID}'", lambda r, x: r["Timestamp"] < x["Timestamp"] and r["ID"] != x["ID"]),
    ("(Status eq 'C' or Status eq 'P') and IsSupplier eq true",
     lambda r, x: r["Status"] in ("C", "P") and r["IsSupplier"]),
    ("Name ne '{name}' and IsSupplier eq false", lambda r, x: r["Name"] != x["Name"] and not r["IsSupplier"]),
    ("Code ne 'x' or Name eq 'O''Brien'", lambda r, x: True),
]


@pytest.mark.parametrize("template,pred", FILTERS)
async def test_filters_and_count(aiohttp_client, template, pred):
    client, emu, h = await start(aiohttp_client)
    x = emu.data.rows(1, ENTITIES["crm/accounts"])[17]
    text = template.format(name=x["Name"], ID=x["ID"], IDU=x["ID"].upper(), ts=x["Timestamp"])
    want = _expected(emu, lambda r: pred(r, x))
    resp, body = await get(client, "/api/v1/1/crm/Accounts/$count", h, {"$filter": text})
    assert resp.status == 200 and body == str(want)
    resp, body = await get(client, "/api/v1/1/crm/Accounts", h, {"$filter": text, "$inlinecount": "allpages",
                                                                 "$top": "1000"})
    assert body["d"]["__count"] == str(want)
    assert len(body["d"]["results"]) == min(want, 60)


@pytest.mark.parametrize("text", ["Name eq", "Name foo 'x'", "(Name eq 'x'", "Name eq 'x' and", "eq 'x'",
                                  "Modified gt datetime'yesterday'"])
async def test_invalid_filter_is_400_in_the_envelope(aiohttp_client, text):
    client, emu, h = await start(aiohttp_client)
    resp, body = await get(client, "/api/v1/1/financial/GLAccounts", h, {"$filter": text})
    assert resp.status == 400 and body["error"]["code"] == "" and body["error"]["message"]["value"]
    assert emu.count("bad_request") == 1


async def test_select_top_skip(aiohttp_client):
    client, emu, h = await start(aiohttp_client)
    ids = emu.account_ids(1)
    resp, body = await get(client, "/api/v1/1/crm/Accounts", h, {"$filter": ALL, "$select": "ID", "$top": "5",
                                                                 "$skip": "10"})
    assert [r["ID"] for r in body["d"]["results"]] == ids[10:15]
    assert "__next" not in body["d"]
    resp, body = await get(client, "/api/v1/1/crm/Accounts", h, {"$filter": ALL, "$top": "100"})
    assert len(body["d"]["results"]) == 60
    nxt = unquote(body["d"]["__next"])
    assert "$top=40" in nxt


MANDATORY_MSG = ("This endpoint has mandatory filtering applied. A GET request for this endpoint must have a "
                 "$filter parameter with one of the following fields in the url:")


@pytest.mark.parametrize("path,params,status,outcome", [
    ("crm/Accounts", {}, 400, "mandatory_filter"),
    ("crm/Accounts", {"$filter": "Website eq 'x'"}, 400, "mandatory_filter"),
    ("crm/Accounts", {"$filter": ALL}, 200, "ok"),
    ("crm/Accounts", {"$filter": "Modified gt datetime'2024-01-01'"}, 200, "ok"),
    ("crm/Accounts/$count", {}, 400, "mandatory_filter"),
    ("bulk/CRM/Accounts", {"$select": "ID"}, 400, "mandatory_filter"),
    ("bulk/CRM/Accounts", {"$filter": ALL}, 400, "bulk_select"),
    ("bulk/CRM/Accounts", {"$filter": ALL, "$select": "ID,Name"}, 200, "ok"),
    ("logistics/Items", {}, 400, "mandatory_filter"),
    ("bulk/Logistics/Items", {"$select": "ID"}, 400, "mandatory_filter"),
    ("crm/Contacts", {}, 200, "ok"),
    ("bulk/CRM/Contacts", {}, 400, "bulk_select"),
    ("sync/CRM/Accounts", {"$filter": "Timestamp gt 1"}, 200, "ok"),
    ("sync/CRM/Accounts", {"$filter": "Name eq 'x'"}, 400, "sync_filter"),
    ("sync/Financial/TransactionLines", {"$filter": "Timestamp gt 1L and ID ne guid'" + "0" * 8 + "-0000-0000-0000-"
                                         + "0" * 12 + "'"}, 400, "sync_filter"),
    ("sync/Logistics/Items", {}, 200, "ok"),
    ("sync/Deleted", {"$filter": "Timestamp gt 1L"}, 200, "ok"),
    ("salesinvoice/SalesInvoices", {}, 200, "ok"),
    ("financialtransaction/TransactionLines", {"$top": "1"}, 200, "ok"),
    ("system/Divisions", {}, 200, "ok"),
    ("crm/Nothing", {}, 404, "not_found"),
])
async def test_rules_table(aiohttp_client, path, params, status, outcome):
    client, emu, h = await start(aiohttp_client)
    resp, body = await get(client, f"/api/v1/1/{path}", h, params)
    assert resp.status == status, body
    assert emu.count(outcome) == 1
    if outcome == "mandatory_filter":
        msg = body["error"]["message"]["value"]
        assert msg.startswith(MANDATORY_MSG) and msg.endswith(".") and "url: " not in msg
        fields = msg[len(MANDATORY_MSG):-1].split(",")
        assert {"ID", "Modified"} <= set(fields)
        if "ccounts" in path:
            assert fields == ACCOUNT_FIELDS and fields[:2] == ["Accountant", "AccountManager"]
            assert fields[-1] == "VATNumber"


async def test_mandatory_filter_endpoints_are_configurable(aiohttp_client):
    client, emu, h = await start(aiohttp_client, {"mandatory_filter_endpoints": ["crm/contacts"],
                                                  "mandatory_filter_fields": {"Contacts": ["ID", "Modified"]}})
    resp, body = await get(client, "/api/v1/1/crm/Accounts", h)
    assert resp.status == 200
    resp, body = await get(client, "/api/v1/1/crm/Contacts", h)
    assert body["error"]["message"]["value"] == MANDATORY_MSG + "ID,Modified."


async def test_sync_paging_by_timestamp(aiohttp_client):
    client, emu, h = await start(aiohttp_client, {"rows": {"financialtransaction/transactionlines": 2300}})
    base = str(client.make_url("")).rstrip("/")
    url, pages, stamps = "/api/v1/1/sync/Financial/TransactionLines?$filter=Timestamp gt 1L&$select=ID,Timestamp", [], []
    while url:
        resp, body = await get(client, url, h)
        pages.append(len(body["d"]["results"]))
        stamps += [r["Timestamp"] for r in body["d"]["results"]]
        url = body["d"].get("__next")
        if url:
            assert re.search(r"\$skiptoken=\d+L$", url)
            url = url[len(base):]
    assert pages == [1000, 1000, 300] and stamps == sorted(stamps) and len(set(stamps)) == 2300
    resp, body = await get(client, "/api/v1/1/sync/Financial/TransactionLines", h,
                           {"$skiptoken": f"{stamps[1499]}L", "$select": "Timestamp"})
    assert [r["Timestamp"] for r in body["d"]["results"]] == stamps[1500:2300]


async def test_bulk_page_is_1000(aiohttp_client):
    client, emu, h = await start(aiohttp_client, {"rows": {"crm/accounts": 1500}})
    resp, body = await get(client, "/api/v1/1/bulk/CRM/Accounts", h, {"$filter": ALL, "$select": "ID"})
    assert len(body["d"]["results"]) == 1000 and "$skiptoken=guid'" in unquote(body["d"]["__next"])


async def test_deleted_record(aiohttp_client):
    client, emu, h = await start(aiohttp_client)
    gone = emu.deleted_account_id(1)
    resp, body = await get(client, "/api/v1/1/sync/Deleted", h, {"$filter": "Timestamp gt 1L"})
    assert gone in [r["EntityKey"] for r in body["d"]["results"]]
    resp, body = await get(client, f"/api/v1/1/crm/Accounts(guid'{gone}')", h)
    assert resp.status == 404 and body["error"]["message"]["value"]


async def test_atom_paging_and_properties(aiohttp_client):
    client, emu, h = await start(aiohttp_client)
    h = {"Authorization": h["Authorization"]}  # no Accept: Atom is the default
    base = str(client.make_url("")).rstrip("/")
    url, pages = f"/api/v1/1/crm/Accounts?$select=ID,Name&$filter={ALL}", []
    while url:
        resp = await client.get(url, headers=h)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/atom+xml")
        feed = ET.fromstring(await resp.read())
        assert feed.get("{http://www.w3.org/XML/1998/namespace}base") == base + "/api/v1/"
        entries = feed.findall("a:entry", NS)
        pages.append(len(entries))
        first = entries[0]
        gid = first.find("a:content/m:properties/d:ID", NS).text
        assert first.find("a:id", NS).text == f"{base}/api/v1/1/crm/Accounts(guid'{gid}')"
        assert first.find("a:content/m:properties/d:Name", NS).text
        nxt = feed.find("a:link[@rel='next']", NS)
        url = nxt.get("href")[len(base):] if nxt is not None else None
    assert pages == [60, 60, 60, 60, 10]


async def test_me_and_divisions(aiohttp_client):
    client, emu, h = await start(aiohttp_client, {"divisions": [11, 12]})
    resp, body = await get(client, "/api/v1/current/Me", h, {"$select": "CurrentDivision"})
    assert body["d"]["results"][0]["CurrentDivision"] == 11
    resp, body = await get(client, "/api/v1/11/system/Divisions", h)
    assert [r["Code"] for r in body["d"]["results"]] == [11, 12]
    resp, body = await get(client, "/api/v1/13/crm/Contacts", h)
    assert resp.status == 403 and resp.headers["Reason"] == "NoDivisionAccess"


async def test_next_links_keep_the_query_encoded_as_sent(aiohttp_client):
    """ossobv/exactonline follows __next through urllib, which refuses a URL with a literal space."""
    client, emu, h = await start(aiohttp_client)
    resp, body = await get(client, "/api/v1/1/crm/Accounts?$select=ID&$filter=ID%20ne%20guid'00000000-0000-0000-"
                           "0000-000000000000'", h)
    nxt = body["d"]["__next"]
    assert " " not in nxt and "$filter=ID%20ne%20guid'" in nxt
