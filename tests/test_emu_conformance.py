"""Table-driven conformance: one row per emulator rule, each hit over HTTP with the ManualClock.

A row: id, config, calls before (method, path, repeat), then the checked call and what it must answer:
status, outcome (in the emulator's statistics), headers present/absent, a body fragment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

pytest_plugins = ["tests.test_emu_support"]

ALL = "ID ne guid'00000000-0000-0000-0000-000000000000'"
NONE = "00000000-0000-0000-0000-000000000001"
SIX = [
    "X-RateLimit-Minutely-Limit",
    "X-RateLimit-Minutely-Remaining",
    "X-RateLimit-Minutely-Reset",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
]


@dataclass
class Row:
    id: str
    path: str
    status: int
    outcome: str
    method: str = "GET"
    config: dict = field(default_factory=dict)
    before: list[tuple[str, str, int]] = field(default_factory=list)
    advance: float = 0
    json: dict | None = None
    data: dict | None = None
    auth: str = "token"  # token | none | bogus
    present: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    body: str | None = None
    empty: bool = False


ROWS = [
    Row("ok-headers", "/api/v1/7095/crm/Contacts?$top=1", 200, "ok", present=SIX, body='"results"'),
    Row("me-no-division", "/api/v1/current/Me", 200, "ok", absent=SIX, body='"CurrentDivision":7095'),
    Row(
        "minutely-429",
        "/api/v1/7095/crm/Contacts?$top=1",
        429,
        "minutely_429",
        config={"minutely_limit": 2},
        before=[("GET", "/api/v1/7095/crm/Contacts?$top=1", 2)],
        present=SIX[:3],
        absent=SIX[3:],
        empty=True,
    ),
    Row(
        "daily-429",
        "/api/v1/7095/crm/Contacts?$top=1",
        429,
        "daily_429",
        config={"daily_limit": 1},
        before=[("GET", "/api/v1/7095/crm/Contacts?$top=1", 1)],
        present=SIX[3:],
        absent=SIX[:3],
        empty=True,
    ),
    Row(
        "retry-after-optional",
        "/api/v1/7095/crm/Contacts",
        429,
        "minutely_429",
        config={"minutely_limit": 0, "retry_after_on_429": True},
        present=["Retry-After"],
    ),
    Row(
        "unknown-token",
        "/api/v1/7095/crm/Contacts",
        401,
        "unauthorized",
        auth="bogus",
        present=["Reason"],
        absent=SIX,
    ),
    Row("no-token", "/api/v1/7095/crm/Contacts", 401, "unauthorized", auth="none"),
    Row("expired-token", "/api/v1/7095/crm/Contacts", 401, "token_expired", advance=600, present=["Reason"]),
    Row(
        "not-found", f"/api/v1/7095/crm/Accounts(guid'{NONE}')", 404, "not_found", body='"message":{"lang":""'
    ),
    Row("deleted", "/api/v1/7095/crm/Accounts(guid'{deleted}')", 404, "not_found"),
    Row("by-key", "/api/v1/7095/crm/Accounts(guid'{acc}')", 200, "ok", body='"__metadata"'),
    Row(
        "mandatory-filter",
        "/api/v1/7095/crm/Accounts",
        400,
        "mandatory_filter",
        body="in the url:Accountant,AccountManager,",
    ),
    Row(
        "mandatory-filter-items-bulk", "/api/v1/7095/bulk/Logistics/Items?$select=ID", 400, "mandatory_filter"
    ),
    Row("mandatory-filter-satisfied", f"/api/v1/7095/crm/Accounts?$filter={ALL}", 200, "ok"),
    Row("bulk-select", "/api/v1/7095/bulk/CRM/Contacts", 400, "bulk_select"),
    Row(
        "sync-filter",
        "/api/v1/7095/sync/Financial/TransactionLines?$filter=ID eq guid'" + NONE + "'",
        400,
        "sync_filter",
    ),
    Row("sync-ok", "/api/v1/7095/sync/Deleted?$filter=Timestamp gt 1L", 200, "ok", body='"EntityKey"'),
    Row("bad-filter", "/api/v1/7095/crm/Contacts?$filter=Name eq", 400, "bad_request"),
    Row("count", "/api/v1/7095/salesinvoice/SalesInvoices/$count", 200, "ok", body="200"),
    Row(
        "post",
        "/api/v1/7095/crm/Accounts",
        201,
        "ok",
        method="POST",
        json={"Name": "X"},
        present=["Location"] + SIX,
    ),
    Row(
        "put-unknown",
        f"/api/v1/7095/crm/Accounts(guid'{NONE}')",
        404,
        "not_found",
        method="PUT",
        json={"Name": "Y"},
    ),
    Row("delete", "/api/v1/7095/crm/Accounts(guid'{acc}')", 204, "ok", method="DELETE"),
    Row(
        "error-block",
        f"/api/v1/7095/crm/Accounts(guid'{NONE}')",
        429,
        "error_block",
        before=[("GET", f"/api/v1/7095/crm/Accounts(guid'{NONE}')", 11)],
        absent=SIX,
        empty=True,
    ),
    Row(
        "error-below-limit",
        f"/api/v1/7095/crm/Accounts(guid'{NONE}')",
        404,
        "not_found",
        before=[("GET", f"/api/v1/7095/crm/Accounts(guid'{NONE}')", 10)],
    ),
    Row(
        "fault-503",
        "/api/v1/7095/crm/Contacts",
        503,
        "fault_503",
        config={"faults": [{"path": "*/contacts", "kind": "503"}]},
        absent=SIX,
    ),
    Row(
        "fault-408-every-2nd",
        "/api/v1/7095/crm/Contacts",
        408,
        "fault_408",
        config={"faults": [{"path": "*/contacts", "kind": "408", "every": 2}]},
        before=[("GET", "/api/v1/7095/crm/Contacts", 1)],
    ),
    Row(
        "xml-download",
        "/docs/XMLDownload.aspx?Topic=Accounts&_Division_=7095",
        200,
        "ok",
        present=SIX,
        body="<eExact",
    ),
    Row(
        "token-too-early",
        "/api/oauth2/token",
        400,
        "too_early",
        method="POST",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "{rt}",
            "client_id": "test-app",
            "client_secret": "test-secret",
        },
        present=["Reason", "Retry-After"],
        body="access_denied",
    ),
    Row(
        "token-ok",
        "/api/oauth2/token",
        200,
        "ok",
        method="POST",
        advance=570,
        data={
            "grant_type": "refresh_token",
            "refresh_token": "{rt}",
            "client_id": "test-app",
            "client_secret": "test-secret",
        },
        body='"expires_in":"600"',
    ),
    Row(
        "token-bad-client",
        "/api/oauth2/token",
        400,
        "invalid_client",
        method="POST",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "{rt}",
            "client_id": "test-app",
            "client_secret": "nope",
        },
    ),
    Row(
        "token-unknown-refresh",
        "/api/oauth2/token",
        400,
        "invalid_grant",
        method="POST",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "Gcp7!nope",
            "client_id": "test-app",
            "client_secret": "test-secret",
        },
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
async def test_rule(emu, emu_clock, row: Row):
    c = await emu(row.config)
    tokens = c.state.issue_tokens()
    subs = {
        "acc": c.state.account_ids(7095)[3],
        "deleted": c.state.deleted_account_id(7095),
        "rt": tokens["refresh_token"],
    }
    headers = {"Authorization": f"Bearer {tokens['access_token']}", "Accept": "application/json"}
    for method, path, n in row.before:
        for _ in range(n):
            await c.request(method, path.format(**subs), headers=headers)
    await emu_clock.advance(row.advance)
    if row.auth == "none":
        headers.pop("Authorization")
    elif row.auth == "bogus":
        headers["Authorization"] = "Bearer bogus"
    data = {k: v.format(**subs) for k, v in row.data.items()} if row.data else None
    r = await c.request(row.method, row.path.format(**subs), headers=headers, json=row.json, data=data)
    text = await r.text()
    assert r.status == row.status, text
    assert c.state.count(row.outcome) >= 1, c.state.stats()
    for h in row.present:
        assert h in r.headers, h
    for h in row.absent:
        assert h not in r.headers, h
    if row.body is not None:
        assert row.body in text
    if row.empty:
        assert text == ""
