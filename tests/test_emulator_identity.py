"""Emulator conformance: identity as real clients meet it (exact-online-api.md §3, §4, §9), over HTTP.

One app in several client-id spellings; 401s without a division count toward the error limit; access
withdrawn (``/_emulator/revoke``) and the unauthorized phase (``/_emulator/unauthorized``).
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from proxy.clock import ManualClock
from proxy.emulator import EMULATOR, EmulatorConfig, create_app
from proxy.emulator.identity import normal_client_id

START = 1_795_600_800  # 2026-11-25T10:00:00Z
GUID = "b81cc4de-d192-400e-bcb4-09254394c52a"
BRACED_UPPER = "{" + GUID.upper() + "}"
SECRET = "s3cret!"
ME = "/api/v1/current/Me"
MISSING = "/api/v1/1/crm/Accounts(guid'00000000-0000-0000-0000-000000000001')"


async def start(aiohttp_client, config: dict | None = None):
    clock = ManualClock(START)
    app = create_app(EmulatorConfig.from_dict({"clients": {BRACED_UPPER: SECRET}, **(config or {})}), clock)
    return await aiohttp_client(app), app[EMULATOR], clock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token, "Accept": "application/json"}


async def code(client, client_id: str, user: str | None = None) -> str:
    q = f"client_id={quote(client_id)}&redirect_uri=http://localhost/cb&response_type=code"
    resp = await client.get("/api/oauth2/auth?" + q + (f"&user={user}" if user else ""), allow_redirects=False)
    assert resp.status == 302
    return parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]


async def token(client, client_id: str, **form):
    resp = await client.post("/api/oauth2/token", data={"client_id": client_id, "client_secret": SECRET, **form})
    return resp, await resp.json()


async def refresh(client, client_id: str, rt: str):
    return await token(client, client_id, grant_type="refresh_token", refresh_token=rt)


async def control(client, path: str, body=None):
    resp = await client.post("/_emulator/" + path, json=body) if body is not None else \
        await client.post("/_emulator/" + path)
    return resp.status, await resp.json()


# -- one app, several spellings --------------------------------------------------------------------------

@pytest.mark.parametrize("text", [GUID, GUID.upper(), "{" + GUID + "}", BRACED_UPPER, f"  {{{GUID}}}\t",
                                  f" {GUID.upper()} "])
def test_normal_client_id(text):
    assert normal_client_id(text) == GUID


def test_normal_client_id_takes_one_pair_of_braces_only():
    assert normal_client_id("{{X}}") == "{x}"
    assert normal_client_id("{x") == "{x"
    assert normal_client_id("test-app") == "test-app"


def test_configured_client_ids_are_normalised():
    cfg = EmulatorConfig.from_dict({"clients": {BRACED_UPPER: SECRET, GUID: SECRET},
                                    "limits": [{"app": BRACED_UPPER, "minutely": 5}]})
    assert cfg.clients == {GUID: SECRET}
    assert cfg.limits_for(GUID, 1) == (5, 5000)
    with pytest.raises(ValueError, match="same app"):
        EmulatorConfig.from_dict({"clients": {BRACED_UPPER: SECRET, GUID: "other"}})


async def test_code_refresh_and_limits_are_one_app_across_spellings(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    c = await code(client, BRACED_UPPER)                               # the browser: braces, upper case
    resp, first = await token(client, GUID, grant_type="authorization_code", code=c)   # bare, lower case
    assert resp.status == 200
    resp, body = await refresh(client, f" {{{GUID}}} ", first["refresh_token"])       # braces: too early,
    assert resp.status == 400 and body["error"] == "access_denied"                     # one 570 s clock
    await clock.advance(570)
    basic = base64.b64encode(f"{GUID.upper()}:{SECRET}".encode()).decode()
    resp = await client.post("/api/oauth2/token", headers={"Authorization": "Basic " + basic},
                             data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert resp.status == 200                                          # one refresh chain
    second = await resp.json()
    assert (await refresh(client, GUID, first["refresh_token"]))[1]["error"] == "unauthorized_client"
    assert emu.oauth.calls_today(BRACED_UPPER, "user-1") == 4

    emu.set_limits("{" + GUID + "}", 1, minutely=3)                    # one call-limit counter
    url = f"/api/v1/1/crm/Accounts(guid'{emu.account_ids(1)[0]}')"
    assert (await client.get(url, headers=bearer(first["access_token"]))).status == 200
    resp = await client.get(url, headers=bearer(second["access_token"]))
    assert resp.headers["X-RateLimit-Minutely-Remaining"] == "1"
    assert emu.limits.used(GUID.upper(), 1) == (2, 2)

    stats = (await (await client.get("/_emulator/stats")).json())["calls"]
    assert {row["app"] for row in stats} == {GUID}
    assert emu.count("ok", app=BRACED_UPPER) == 5 and emu.count(app=GUID) == 7


async def test_token_error_limit_is_shared_across_spellings(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    spellings = [GUID, GUID.upper(), "{" + GUID + "}", BRACED_UPPER, f" {GUID} "]
    for i in range(11):
        resp, body = await token(client, spellings[i % 5], grant_type="authorization_code", code="nope")
        assert resp.status == 400 and body["error"] == "invalid_grant"
    resp = await client.post("/api/oauth2/token", data={"client_id": BRACED_UPPER, "client_secret": SECRET,
                                                        "grant_type": "authorization_code",
                                                        "code": await code(client, GUID)})
    assert resp.status == 429 and await resp.read() == b""
    assert emu.errorlimit.active() == [{"app": GUID, "division": None, "endpoint": "oauth2/token",
                                        "until": START + 3600}]
    assert emu.count("error_block", app=GUID, endpoint="oauth2/token") == 1


async def test_api_error_limit_is_shared_across_spellings(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    a = emu.issue_tokens(BRACED_UPPER, "user-1")["access_token"]
    b = emu.issue_tokens(GUID, "user-2")["access_token"]
    for i in range(11):
        assert (await client.get(MISSING, headers=bearer(a if i % 2 else b))).status == 404
    resp = await client.get(MISSING, headers=bearer(a))
    assert resp.status == 429
    assert emu.count("error_block", app=GUID, division=1, endpoint="crm/accounts") == 1


async def test_auth_accepts_any_spelling_of_a_configured_client(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    await code(client, f" {GUID.upper()} ")
    resp = await client.get("/api/oauth2/auth?client_id=other&redirect_uri=http://localhost/cb",
                            allow_redirects=False)
    assert resp.status == 400
    assert emu.count("ok", app=GUID, endpoint="oauth2/auth") == 1


# -- errors without a division ------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["unknown", "expired", "revoked"])
async def test_current_me_401s_count_toward_the_error_limit(aiohttp_client, how):
    client, emu, clock = await start(aiohttp_client, {"error_block_status": 503,
                                                      "error_block_body": '{"blocked":true}'})
    bad = emu.issue_tokens(GUID)["access_token"]
    app = GUID
    if how == "unknown":
        bad, app = "nope", "unknown"
    elif how == "expired":
        await clock.advance(600)
    else:
        emu.revoke()
    for _ in range(11):
        resp = await client.get(ME, headers=bearer(bad))
        assert resp.status == 401 and "Reason" in resp.headers
    assert emu.errorlimit.active()[0] == {"app": app, "division": None, "endpoint": "current/me",
                                          "until": clock.time() + 3600}
    if how != "unknown":  # the app's own valid token now meets the block
        resp = await client.get("/api/v1/current/Me?$select=UserName",
                                headers=bearer(emu.issue_tokens(BRACED_UPPER)["access_token"]))
        assert resp.status == 503 and await resp.json() == {"blocked": True}
        assert emu.count("error_block", app=GUID, endpoint="current/me") == 1
    assert (await client.get(ME, headers=bearer(bad))).status == 401  # a bad token still gets its 401


async def test_current_me_ok_is_not_an_error(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    h = bearer(emu.issue_tokens(GUID)["access_token"])
    for _ in range(12):
        assert (await client.get(ME, headers=h)).status == 200
    assert emu.errorlimit.active() == [] and emu.count("ok", app=GUID, division=None, endpoint="current/me") == 12


# -- revocation ----------------------------------------------------------------------------------------------

async def test_revoke_one_user_over_http(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    alice = emu.issue_tokens(GUID, "alice")
    bob = emu.issue_tokens(GUID, "bob")
    assert await control(client, "revoke", {"client_id": BRACED_UPPER, "user": "alice"}) == (200, {"revoked": 1})
    assert emu.count() == 0
    url = f"/api/v1/1/crm/Accounts(guid'{emu.account_ids(1)[0]}')"
    resp = await client.get(url, headers=bearer(alice["access_token"]))
    assert resp.status == 401 and resp.headers["Reason"] == "Unauthorized"
    assert await resp.json() == {"error": {"code": "", "message": {"lang": "", "value": "Unauthorized"}}}
    assert "X-RateLimit-Limit" not in resp.headers
    assert emu.count("token_revoked", app=GUID, division=1, endpoint="crm/accounts") == 1
    assert emu.errorlimit.errors((GUID, 1, "crm/accounts")) == 1
    assert (await client.get(url, headers=bearer(bob["access_token"]))).status == 200
    await clock.advance(570)
    resp, fresh = await refresh(client, GUID, alice["refresh_token"])   # the refresh token still works
    assert resp.status == 200
    assert (await client.get(url, headers=bearer(fresh["access_token"]))).status == 200


@pytest.mark.parametrize("body", [None, {}])
async def test_revoke_all_with_refresh(aiohttp_client, body):
    client, emu, clock = await start(aiohttp_client, {"clients": {GUID: SECRET, "test-app": "test-secret"}})
    pairs = [emu.issue_tokens(GUID, "alice"), emu.issue_tokens("test-app", "bob"), emu.issue_tokens(GUID, "carol")]
    if body is None:
        assert emu.revoke(refresh=True) == 3
    else:
        assert await control(client, "revoke", {"refresh": True}) == (200, {"revoked": 3})
    await clock.advance(570)
    for pair in pairs:
        assert (await client.get(ME, headers=bearer(pair["access_token"]))).status == 401
    resp, body = await refresh(client, GUID, pairs[0]["refresh_token"])
    assert resp.status == 400
    assert body == {"error": "invalid_grant", "error_description": "The refresh token is invalid."}
    assert emu.count("invalid_grant", app=GUID, endpoint="oauth2/token") == 1
    assert emu.count("token_revoked") == 3
    resp, new = await token(client, GUID, grant_type="authorization_code", code=await code(client, GUID, "alice"))
    assert resp.status == 200                                       # a new authorization works again
    assert (await client.get(ME, headers=bearer(new["access_token"]))).status == 200
    assert (await refresh(client, GUID, pairs[0]["refresh_token"]))[0].status == 400


async def test_revoke_matches_app_and_user(aiohttp_client):
    client, emu, clock = await start(aiohttp_client, {"clients": {GUID: SECRET, "test-app": "test-secret"}})
    emu.issue_tokens(GUID, "alice")
    emu.issue_tokens(GUID, "bob")
    kept = emu.issue_tokens("test-app", "alice")
    assert emu.revoke(client_id=GUID.upper()) == 2
    assert emu.revoke(client_id=GUID) == 0                         # already revoked
    assert emu.revoke(user="nobody") == 0
    assert (await client.get(ME, headers=bearer(kept["access_token"]))).status == 200
    await clock.advance(570)
    resp = await client.post("/api/oauth2/token", data={"client_id": "test-app", "client_secret": "test-secret",
                                                        "grant_type": "refresh_token",
                                                        "refresh_token": kept["refresh_token"]})
    assert resp.status == 200


@pytest.mark.parametrize("path,body", [
    ("revoke", b"not json"), ("revoke", b"[1]"), ("revoke", b'{"user": 1}'), ("revoke", b'{"refresh": "yes"}'),
    ("revoke", b'{"client": "x"}'), ("unauthorized", b""), ("unauthorized", b'{"on": 1}'),
    ("unauthorized", b'{"on": true, "x": 1}'),
])
async def test_control_refuses_bad_bodies(aiohttp_client, path, body):
    client, emu, clock = await start(aiohttp_client)
    resp = await client.post("/_emulator/" + path, data=body)
    assert resp.status == 400 and "error" in await resp.json()
    assert emu.unauthorized_phase is False and emu.count() == 0


async def test_control_paths_are_post_only(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    for path in ("revoke", "unauthorized", "reset"):
        assert (await client.get("/_emulator/" + path)).status == 404


# -- the unauthorized phase ---------------------------------------------------------------------------------

CALLS = [
    ("GET", "/api/v1/1/crm/Accounts?$filter=Name eq 'x'", 1, "crm/accounts"),
    ("GET", "/api/v1/1/bulk/CRM/Accounts?$select=ID&$filter=Name eq 'x'", 1, "bulk/crm/accounts"),
    ("GET", "/api/v1/1/sync/CRM/Accounts?$select=ID", 1, "sync/crm/accounts"),
    ("GET", "/docs/XMLDownload.aspx?Topic=Accounts&_Division_=1", 1, "xml/download/accounts"),
    ("POST", "/docs/XMLUpload.aspx?Topic=Accounts&_Division_=1", 1, "xml/upload/accounts"),
    ("GET", ME, None, "current/me"),
]


@pytest.mark.parametrize("method,path,division,endpoint", CALLS)
async def test_unauthorized_phase_answers_every_api_call_401(aiohttp_client, method, path, division, endpoint):
    client, emu, clock = await start(aiohttp_client)
    pair = emu.issue_tokens(GUID)

    async def call():
        return await client.request(method, path, headers=bearer(pair["access_token"]),
                                    data=b"<eExact/>" if method == "POST" else None)

    assert (await call()).status == 200
    assert await control(client, "unauthorized", {"on": True}) == (200, {"unauthorized": True})
    resp = await call()
    assert resp.status == 401 and resp.headers["Reason"] == "Unauthorized"
    assert (await resp.json())["error"]["message"]["value"] == "Unauthorized"
    assert "X-RateLimit-Limit" not in resp.headers
    assert emu.count("unauthorized_phase", app=GUID, division=division, endpoint=endpoint) == 1
    assert emu.errorlimit.errors((GUID, division, endpoint)) == 1
    assert await control(client, "unauthorized", {"on": False}) == (200, {"unauthorized": False})
    assert (await call()).status == 200


async def test_unauthorized_phase_blocks_and_keeps_the_token_endpoint(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    pair = emu.issue_tokens(GUID)
    emu.set_unauthorized(True)
    for _ in range(11):
        assert (await client.get(ME, headers=bearer(pair["access_token"]))).status == 401
    resp = await client.get(ME, headers=bearer(pair["access_token"]))
    assert resp.status == 429 and await resp.read() == b""          # the blocked key: the blocked answer
    assert emu.count("error_block", app=GUID, endpoint="current/me") == 1
    await clock.advance(600)                                        # an expired token: still the block
    assert (await client.get(ME, headers=bearer(pair["access_token"]))).status == 429
    resp = await client.get(ME, headers=bearer("nope"))            # an unknown token: app "unknown"
    assert resp.status == 401 and emu.count("unauthorized_phase", app="unknown") == 1
    resp, new = await refresh(client, GUID, pair["refresh_token"])  # the token endpoint works as usual
    assert resp.status == 200
    url = f"/api/v1/1/crm/Accounts(guid'{emu.account_ids(1)[0]}')"
    assert (await client.get(url, headers=bearer(new["access_token"]))).status == 401
    assert emu.count("unauthorized_phase", app=GUID, division=1, endpoint="crm/accounts") == 1


async def test_reset_ends_the_unauthorized_phase(aiohttp_client):
    client, emu, clock = await start(aiohttp_client)
    h = bearer(emu.issue_tokens(GUID)["access_token"])
    emu.set_unauthorized(True)
    assert (await client.get(ME, headers=h)).status == 401
    assert await control(client, "reset") == (200, {"reset": True})
    assert (await client.get(ME, headers=h)).status == 200
    assert emu.count() == 1
