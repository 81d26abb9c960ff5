"""The classification table: real URL shapes of Exact Online clients."""

from __future__ import annotations

import base64

import pytest

from proxy.exact.classify import classify

G = "guid'8bc6f0b0-1a30-4b47-92bd-8a6f0c1f4f4e'"
BASIC = "Basic " + base64.b64encode(b"my-client:s3cret").decode()

TABLE = [
    # method, path, query, authorization -> app, division, endpoint, kind, key
    ("GET", "/api/v1/123456/crm/Accounts", "", None, "default", 123456, "crm/accounts", "rest", None),
    ("GET", "/api/v1/123456/CRM/Accounts", "", None, "default", 123456, "crm/accounts", "rest", None),
    ("GET", "/api/v1/123456/crm/accounts", "$top=1", None, "default", 123456, "crm/accounts", "rest", None),
    ("GET", f"/api/v1/123456/crm/Accounts({G})", "", None, "default", 123456, "crm/accounts", "rest", G),
    ("GET", "/api/v1/123456/crm/Accounts(guid%278bc6f0b0-1a30-4b47-92bd-8a6f0c1f4f4e%27)", "", None,
     "default", 123456, "crm/accounts", "rest", G),
    ("GET", "/api/v1/123456/crm/Accounts/$count", "$filter=Name eq 'x'", None, "default", 123456,
     "crm/accounts", "rest", None),
    ("GET", "/api/v1/123456/crm/Accounts/%24count", "", None, "default", 123456, "crm/accounts", "rest", None),
    ("GET", "/api/v1/123456/crm/Accounts", "%24filter=ID%20eq%20guid%27x%27&%24select=ID", None, "default",
     123456, "crm/accounts", "rest", None),
    ("GET", "/api/v1/7095/bulk/CRM/Accounts", "$select=ID,Name", None, "default", 7095, "bulk/crm/accounts",
     "bulk", None),
    ("GET", "/api/v1/7095/sync/Financial/TransactionLines", "$filter=Timestamp gt 1L", None, "default", 7095,
     "sync/financial/transactionlines", "sync", None),
    ("GET", "/api/v1/7095/read/financial/ReceivablesList", "", None, "default", 7095,
     "read/financial/receivableslist", "read", None),
    ("GET", "/api/v1/7095/beta/project/Projects", "", None, "default", 7095, "beta/project/projects", "rest",
     None),
    ("GET", "/api/v1/7095/sync/Deleted", "", None, "default", 7095, "sync/deleted", "sync", None),
    ("GET", "/api/v1/current/Me", "$select=CurrentDivision", None, "default", None, "current/me", "me", None),
    ("GET", "/api/v1/Current/Me", "", None, "default", None, "current/me", "me", None),
    ("POST", "/api/v1/7095/crm/Accounts", "", None, "default", 7095, "crm/accounts", "rest", None),
    ("GET", "/docs/XMLDownload.aspx", "Topic=Items&_Division_=123456", None, "default", 123456,
     "xml/download/items", "xml", None),
    ("GET", "/docs/XMLDownload.aspx", "topic=Items&_division_=123456&Params_Code=1", None, "default",
     123456, "xml/download/items", "xml", None),
    ("POST", "/docs/XMLUpload.aspx", "Topic=GLTransactions&_Division_=7", None, "default", 7,
     "xml/upload/gltransactions", "xml", None),
    ("POST", "/api/oauth2/token", "", None, "default", None, "oauth2/token", "token", None),
    ("POST", "/api/oauth2/token", "", BASIC, "my-client", None, "oauth2/token", "token", None),
    ("GET", "/api/oauth2/auth", "client_id=abc-123&redirect_uri=x&response_type=code", None, "abc-123", None,
     "oauth2/auth", "auth", None),
    ("GET", "/api/v1/123456/crm/Accounts", "", "Bearer xyz", "default", 123456, "crm/accounts", "rest", None),
    ("GET", "/api/v1/abc/crm/Accounts", "", None, "default", None, None, "other", None),
    ("GET", "/api/v1/", "", None, "default", None, None, "other", None),
    ("GET", "/docs/Login.aspx", "", None, "default", None, None, "other", None),
    ("GET", "/", "", None, "default", None, None, "other", None),
    ("GET", "/api/v1/123/", "", None, "default", 123, None, "other", None),
]


@pytest.mark.parametrize(("method", "path", "query", "auth", "app", "division", "endpoint", "kind", "key"),
                         TABLE, ids=[f"{r[0]} {r[1]}?{r[2]}" for r in TABLE])
def test_classify(method, path, query, auth, app, division, endpoint, kind, key):
    c = classify(method, path, query, auth, "default")
    assert (c.app, c.division, c.endpoint, c.kind, c.entity_key) == (app, division, endpoint, kind, key)


def test_division_calls_count_and_others_do_not():
    assert classify("GET", "/api/v1/1/crm/Accounts").counts_toward_limits
    assert not classify("GET", "/api/v1/current/Me").counts_toward_limits
    assert not classify("POST", "/api/oauth2/token").counts_toward_limits


@pytest.mark.parametrize("junk", ["", "%", "/api/v1/%zz/x", "/api/v1/" + "9" * 40 + "/x", "\x00", "/api/oauth2/"])
def test_classify_never_raises(junk):
    assert classify("GET", junk, "%%%&&=", "Basic !!!notbase64").kind in ("other", "rest")
