"""Mandatory filters: added to unfiltered GETs of listed endpoints, learned from Exact's 400."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from proxy.exact.mandatory import DEFAULT_FILTER, add_filter, has_filter, neutral_filter, parse_allowed_fields
from tests.fake_upstream import MANDATORY_TEXT, SEEN

ACCOUNTS_TEXT = MANDATORY_TEXT.format("Accountant,AccountManager,ActivitySector,Blocked,Code,Created,ID,"
                                      "Modified,Name,VATNumber")


@pytest.mark.parametrize(("query", "expected"), [
    ("", False), ("$top=1", False), ("$filter=ID eq 1", True), ("%24filter=x", True), ("%24FILTER=x", True),
    ("$select=ID&$Filter=x", True), ("filter=x", False), ("$filterx=1", False),
])
def test_has_filter(query, expected):
    assert has_filter(query) is expected


def test_add_filter_keeps_every_client_byte():
    q = "%24select=ID%2CName&$top=5"
    out = add_filter(q, DEFAULT_FILTER)
    assert out.startswith(q + "&$filter=")
    assert out.endswith("ID%20ne%20guid'00000000-0000-0000-0000-000000000000'")


def test_parse_allowed_fields_from_exacts_text():
    fields = parse_allowed_fields(ACCOUNTS_TEXT)
    assert fields[0] == "Accountant" and fields[-1] == "VATNumber" and "ID" in fields
    assert parse_allowed_fields("Some other 400") is None


@pytest.mark.parametrize(("fields", "expected"), [
    (["Name", "ID"], "ID ne guid'00000000-0000-0000-0000-000000000000'"),
    (["Employee", "Modified"], "Modified ge datetime'1900-01-01'"),
    (["Created"], "Created ge datetime'1900-01-01'"),
    (["Timestamp"], "Timestamp gt 0L"),
    (["Colour"], None),
])
def test_neutral_filter(fields, expected):
    assert neutral_filter(fields) == expected


async def _get(url: str, method: str = "GET"):
    async with aiohttp.ClientSession() as s:
        async with s.request(method, URL(url, encoded=True)) as r:
            return r.status, await r.json(content_type=None)


async def test_listed_endpoint_gets_the_filter_and_nothing_else_changes(upstream, start_proxy, log_output):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    await _get(proxy.url() + "/api/v1/1/CRM/Accounts?%24select=ID%2CName")
    await _get(proxy.url() + "/api/v1/1/bulk/CRM/Accounts?$select=ID")
    await _get(proxy.url() + "/api/v1/1/crm/Accounts?%24filter=Name%20eq%20%27x%27")      # has one already
    await _get(proxy.url() + "/api/v1/1/crm/Accounts(guid'00000000-0000-0000-0000-000000000001')")  # by key
    await _get(proxy.url() + "/api/v1/1/crm/Accounts", "POST")                          # a write
    await _get(proxy.url() + "/api/v1/1/crm/Contacts")                                  # not listed
    targets = [t for _, t, *_ in upstream.app[SEEN]]
    enc = "ID%20ne%20guid'00000000-0000-0000-0000-000000000000'"
    assert targets == [
        f"/api/v1/1/CRM/Accounts?%24select=ID%2CName&$filter={enc}",
        f"/api/v1/1/bulk/CRM/Accounts?$select=ID&$filter={enc}",
        "/api/v1/1/crm/Accounts?%24filter=Name%20eq%20%27x%27",
        "/api/v1/1/crm/Accounts(guid'00000000-0000-0000-0000-000000000001')",
        "/api/v1/1/crm/Accounts",
        "/api/v1/1/crm/Contacts",
    ]
    assert 'decision="rewritten (+$filter=ID ne guid' in log_output.getvalue()


async def test_unknown_endpoint_is_learned_after_exactly_one_400(upstream, start_proxy, log_output):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    for _ in range(3):
        status, _ = await _get(proxy.url() + "/api/v1/1/crm/Addresses?$select=ID")
        assert status == 200
    targets = [t for _, t, *_ in upstream.app[SEEN]]
    assert targets[0] == "/api/v1/1/crm/Addresses?$select=ID"  # the one error it costs
    assert all("$filter=ID%20ne%20guid" in t for t in targets[1:])
    assert len(targets) == 4
    assert "learned: Exact demands a $filter on crm/addresses" in log_output.getvalue()


async def test_learned_filter_falls_back_to_modified(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    status, _ = await _get(proxy.url() + "/api/v1/1/hrm/Schedules")
    assert status == 200
    assert upstream.app[SEEN][-1][1].endswith("$filter=Modified%20ge%20datetime'1900-01-01'")


async def test_no_neutral_field_passes_exacts_400_through(upstream, start_proxy, log_output):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"))
    status, body = await _get(proxy.url() + "/api/v1/1/weird/Things")
    assert status == 400
    assert body["error"]["message"]["value"].startswith("This endpoint has mandatory filtering applied")
    assert len(upstream.app[SEEN]) == 1
    assert "none of them is known to keep every row" in log_output.getvalue()


async def test_learning_can_be_switched_off(upstream, start_proxy):
    proxy = await start_proxy(str(upstream.make_url("")).rstrip("/"), extra_yaml="""
        mandatory_filters:
          learn: false
          endpoints:
            crm/contacts: "Modified ge datetime'2000-01-01'"
    """)
    status, _ = await _get(proxy.url() + "/api/v1/1/crm/Addresses")
    assert status == 400 and len(upstream.app[SEEN]) == 1
    await _get(proxy.url() + "/api/v1/1/crm/Accounts")  # no longer listed: the list replaces the defaults
    await _get(proxy.url() + "/api/v1/1/crm/Contacts")
    assert upstream.app[SEEN][1][1] == "/api/v1/1/crm/Accounts"
    assert upstream.app[SEEN][2][1] == "/api/v1/1/crm/Contacts?$filter=Modified%20ge%20datetime'2000-01-01'"
