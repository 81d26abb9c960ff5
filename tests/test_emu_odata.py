"""The emulator's OData over HTTP: paging by absolute __next, Atom paging, filters of each literal type."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

pytest_plugins = ["tests.test_emu_support"]

ALL = "ID ne guid'00000000-0000-0000-0000-000000000000'"
A = "http://www.w3.org/2005/Atom"
M = "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"
D = "http://schemas.microsoft.com/ado/2007/08/dataservices"


def rel(url: str) -> str:
    u = urlsplit(url)
    return u.path + ("?" + u.query if u.query else "")


async def get_json(c, url, **params):
    r = await c.get(url, headers=c.auth, params=params or None)
    assert r.status == 200, await r.text()
    return await r.json()


async def test_250_accounts_in_5_pages_with_absolute_next(emu):
    c = await emu()
    base = str(c.make_url("")).rstrip("/")
    url = f"/api/v1/7095/crm/Accounts?$filter={ALL}&$select=ID,Name"
    seen, pages = [], 0
    while url:
        body = await get_json(c, url)
        pages += 1
        rows = body["d"]["results"]
        for row in rows:
            assert set(row) == {"__metadata", "ID", "Name"}
            assert row["__metadata"]["uri"] == f"{base}/api/v1/7095/crm/Accounts(guid'{row['ID']}')"
            assert row["__metadata"]["type"] == "Exact.Web.Api.Models.Account"
        seen += [r["ID"] for r in rows]
        nxt = body["d"].get("__next")
        if nxt:
            assert nxt.startswith(base + "/api/v1/7095/crm/Accounts?")
            assert "$select=ID,Name" in nxt and nxt.count("$skiptoken=guid'") == 1
            assert " " not in nxt and "$filter=ID" in nxt  # the query as the client sent it
            assert len(rows) == 60
            url = rel(nxt)
        else:
            url = None
    assert pages == 5 and len(seen) == 250 and len(set(seen)) == 250
    assert seen == sorted(seen) == c.state.account_ids(7095)


async def test_inlinecount_count_top_skip(emu):
    c = await emu()
    body = await get_json(c, "/api/v1/7095/crm/Contacts", **{"$inlinecount": "allpages", "$top": "5"})
    assert body["d"]["__count"] == "300" and len(body["d"]["results"]) == 5 and "__next" not in body["d"]
    r = await c.get("/api/v1/7095/crm/Contacts/$count", headers=c.auth)
    assert await r.text() == "300"
    first = await get_json(c, "/api/v1/7095/crm/Contacts", **{"$top": "3"})
    skipped = await get_json(c, "/api/v1/7095/crm/Contacts", **{"$top": "2", "$skip": "1"})
    assert [r["ID"] for r in skipped["d"]["results"]] == [r["ID"] for r in first["d"]["results"][1:]]
    big = await get_json(c, "/api/v1/7095/crm/Contacts", **{"$top": "100"})
    assert len(big["d"]["results"]) == 60 and "$top=40" in big["d"]["__next"]
    nxt = await get_json(c, rel(big["d"]["__next"]))
    assert len(nxt["d"]["results"]) == 40 and "__next" not in nxt["d"]


async def test_atom_paging(emu):
    c = await emu()
    headers = {"Authorization": c.auth["Authorization"]}
    url = f"/api/v1/7095/crm/Accounts?$filter={ALL}"
    total = 0
    base = str(c.make_url("")).rstrip("/")
    while url:
        r = await c.get(url, headers=headers)
        assert r.status == 200 and r.content_type == "application/atom+xml"
        root = ET.fromstring(await r.read())
        assert root.tag == f"{{{A}}}feed"
        assert root.get("{http://www.w3.org/XML/1998/namespace}base") == f"{base}/api/v1/7095/"
        entries = root.findall(f"{{{A}}}entry")
        for e in entries:
            assert e.find(f"{{{A}}}id").text.startswith(f"{base}/api/v1/7095/crm/Accounts(guid'")
            props = e.find(f"{{{A}}}content/{{{M}}}properties")
            assert props.find(f"{{{D}}}Name").text
        total += len(entries)
        nxt = root.find(f"{{{A}}}link[@rel='next']")
        url = rel(nxt.get("href")) if nxt is not None else None
    assert total == 250


async def test_filters_of_each_literal_type(emu):
    c = await emu()
    rows = (await get_json(c, "/api/v1/7095/crm/Contacts", **{"$top": "60"}))["d"]["results"]
    row = rows[7]
    one = f"/api/v1/7095/crm/Contacts?$filter=ID eq guid'{row['ID'].upper()}'"
    assert [r["ID"] for r in (await get_json(c, one))["d"]["results"]] == [row["ID"]]
    name = row["FirstName"]
    got = (
        await get_json(
            c,
            "/api/v1/7095/crm/Contacts",
            **{"$filter": f"FirstName eq '{name}'", "$inlinecount": "allpages"},
        )
    )["d"]
    assert all(r["FirstName"] == name for r in got["results"]) and int(got["__count"]) > 10
    ms = int(row["Modified"][6:-2])
    from datetime import UTC, datetime

    iso = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    got = (
        await get_json(
            c, "/api/v1/7095/crm/Contacts", **{"$filter": f"Modified ge datetime'{iso}'", "$top": "1000"}
        )
    )["d"]
    assert got["results"] and all(int(r["Modified"][6:-2]) >= (ms // 1000) * 1000 for r in got["results"])
    r = await c.get(
        "/api/v1/7095/financialtransaction/TransactionLines/$count",
        headers=c.auth,
        params={"$filter": "(EntryNumber ge 10010 and EntryNumber lt 10020) or AmountDC gt 4999.5"},
    )
    n = int(await r.text())
    assert 30 <= n < 60
    sync = await get_json(
        c, "/api/v1/7095/sync/CRM/Accounts", **{"$filter": "Timestamp gt 1", "$select": "ID,Timestamp"}
    )
    ts = [r["Timestamp"] for r in sync["d"]["results"]]
    assert len(ts) == 250 and ts == sorted(ts) and "__next" not in sync["d"]
    later = await get_json(
        c, "/api/v1/7095/sync/CRM/Accounts", **{"$filter": f"Timestamp gt {ts[199]}L", "$select": "ID"}
    )
    assert len(later["d"]["results"]) == 50
    assert (
        await get_json(
            c,
            "/api/v1/7095/crm/Accounts",
            **{"$filter": "IsSupplier eq true and Blocked eq false", "$top": "1000"},
        )
    )["d"]["results"]


async def test_sync_pages_of_1000_with_int64_skiptoken(emu):
    c = await emu()
    body = await get_json(c, "/api/v1/7095/sync/Financial/TransactionLines", **{"$select": "ID,Timestamp"})
    rows = body["d"]["results"]
    assert len(rows) == 1000
    nxt = body["d"]["__next"]
    assert nxt.endswith(f"$skiptoken={rows[-1]['Timestamp']}L")
    body = await get_json(c, rel(nxt))
    assert len(body["d"]["results"]) == 500 and "__next" not in body["d"]
    assert body["d"]["results"][0]["Timestamp"] > rows[-1]["Timestamp"]


async def test_bulk_pages_of_1000(emu):
    c = await emu({"counts": {"crm/accounts": 1200}})
    body = await get_json(c, "/api/v1/7095/bulk/CRM/Accounts", **{"$select": "ID", "$filter": ALL})
    assert len(body["d"]["results"]) == 1000 and "$skiptoken=guid'" in body["d"]["__next"]


async def test_data_is_deterministic_per_division(emu):
    c1 = await emu()
    c2 = await emu()
    assert c1.state.account_ids(7095) == c2.state.account_ids(7095)
    assert c1.state.account_ids(7095) != c1.state.account_ids(7096)


async def test_atom_single_entries_are_well_formed(emu):
    c = await emu()
    h = {"Authorization": c.auth["Authorization"]}
    acc = c.state.account_ids(7095)[0]
    r = await c.get(f"/api/v1/7095/crm/Accounts(guid'{acc}')", headers=h)
    root = ET.fromstring(await r.read())
    assert root.tag == f"{{{A}}}entry"
    assert root.find(f"{{{A}}}content/{{{M}}}properties/{{{D}}}ID").text == acc
    assert (
        root.find(f"{{{A}}}content/{{{M}}}properties/{{{D}}}Modified").get(f"{{{M}}}type") == "Edm.DateTime"
    )
    r = await c.post("/api/v1/7095/crm/Accounts", json={"Name": "A & B <co>"}, headers=h)
    assert r.status == 201
    root = ET.fromstring(await r.read())
    assert root.find(f"{{{A}}}content/{{{M}}}properties/{{{D}}}Name").text == "A & B <co>"
    assert root.find(f"{{{A}}}id").text == r.headers["Location"]
    for path in ("/api/v1/current/Me", "/api/v1/7095/system/Divisions"):
        ET.fromstring(await (await c.get(path, headers=h)).read())
    r = await c.get("/docs/XMLDownload.aspx?Topic=Accounts&_Division_=7096", headers=h)
    assert len(ET.fromstring(await r.read()).findall("Accounts/Account")) == 250
