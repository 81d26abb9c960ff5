"""``token_broker``: token requests answered from the chain; the chain and app of a known Bearer token."""

from __future__ import annotations

import base64
import inspect
import json
import time
from urllib.parse import urlencode

from proxy.filters.token_broker import TokenBroker
from tests.support import Rig, add_chain
from tests.support.tokens import APP, SECRET

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def _token(rig: Rig, form: dict, headers: dict | None = None, method: str = "POST"):
    ctx = await rig.ctx(
        method,
        "/api/oauth2/token",
        body=urlencode(form).encode() if form else None,
        headers={**FORM, **(headers or {})},
    )
    got = TokenBroker(rig.services).before(ctx)
    if inspect.isawaitable(got):
        got = await got
    return ctx, got


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_a_refresh_with_the_chains_token_and_secret_is_answered_from_the_chain():
    rig = Rig()
    chain = add_chain(rig.services, age=60)
    ctx, reply = await _token(
        rig,
        {"grant_type": "refresh_token", "refresh_token": chain.refresh_token},
        _basic("{" + APP.upper() + "}", SECRET),
    )
    body = json.loads(reply.body)
    assert reply.status == 200 and reply.local and ctx.attempt == 0  # Exact was not asked
    assert (body["access_token"], body["refresh_token"]) == (chain.access_token, chain.refresh_token)
    assert body["expires_in"] == "540"
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["Pragma"] == "no-cache"
    assert ctx.cls.app == APP  # the client id in its normal form
    assert ctx.decisions[-1].endswith("(current refresh token)")


async def test_no_token_without_the_apps_secret():
    rig = Rig()
    chain = add_chain(rig.services)
    for secret in (None, "wrong"):
        form = {"grant_type": "refresh_token", "refresh_token": chain.refresh_token, "client_id": APP}
        if secret:
            form["client_secret"] = secret
        _, reply = await _token(rig, form)
        body = json.loads(reply.body)
        assert reply.status == 401 and body["error"] == "invalid_client" and "access_token" not in body


async def test_a_token_request_without_a_client_id_gets_400_in_the_oauth_shape():
    ctx, reply = await _token(Rig(), {"grant_type": "refresh_token", "refresh_token": "x"})
    assert reply.status == 400 and json.loads(reply.body)["error"] == "invalid_request"
    assert ctx.decisions == ["refused (no client_id)"]


async def test_an_unsupported_grant_gets_400_unsupported_grant_type():
    ctx, reply = await _token(Rig(), {"grant_type": "password", "client_id": APP, "client_secret": SECRET})
    assert reply.status == 400 and json.loads(reply.body)["error"] == "unsupported_grant_type"
    assert ctx.decisions == ["refused (bad grant)"]


async def test_a_chain_that_needs_a_person_answers_after_the_loop_delay():
    rig = Rig("tokens: {loop_delay: 0.2}\n")
    chain = add_chain(rig.services, needs_reauth="Exact refused its refresh token")
    t0 = time.monotonic()
    _, reply = await _token(
        rig,
        {
            "grant_type": "refresh_token",
            "refresh_token": chain.refresh_token,
            "client_id": APP,
            "client_secret": SECRET,
        },
    )
    assert time.monotonic() - t0 >= 0.19
    assert reply.status == 400 and json.loads(reply.body)["error"] == "invalid_grant"


async def test_a_bearer_token_of_a_known_chain_sets_the_chain_and_the_app():
    rig = Rig()
    chain = add_chain(rig.services)
    ctx = await rig.ctx(headers={"Authorization": f"Bearer {chain.access_token}"})
    assert ctx.cls.app == APP  # classify: the broker's only app
    other = add_chain(rig.services, client_id="other-app", access_token="acc-other")
    ctx = await rig.ctx(headers={"Authorization": f"Bearer {other.access_token}"})
    assert ctx.cls.app == "unknown"  # two apps now: classify cannot tell
    assert TokenBroker(rig.services).before(ctx) is None
    assert ctx.chain is other and ctx.bearer == "acc-other" and ctx.cls.app == "other-app"
    stranger = await rig.ctx(headers={"Authorization": "Bearer never-seen"})
    TokenBroker(rig.services).before(stranger)
    assert stranger.chain is None and stranger.cls.app == "unknown"


async def test_with_the_broker_off_everything_passes_untouched():
    rig = Rig("tokens: {broker: false}\n")
    chain = add_chain(rig.services)
    ctx, got = await _token(
        rig,
        {
            "grant_type": "refresh_token",
            "refresh_token": chain.refresh_token,
            "client_id": APP,
            "client_secret": SECRET,
        },
    )
    assert got is None and ctx.decisions == []
    api = await rig.ctx(headers={"Authorization": f"Bearer {chain.access_token}"})
    assert TokenBroker(rig.services).before(api) is None and api.chain is None


async def test_an_oversize_chunked_token_request_gets_400_in_the_oauth_shape():
    form = {
        "grant_type": "refresh_token",
        "refresh_token": "x" * 70_000,
        "client_id": APP,
        "client_secret": SECRET,
    }
    rig = Rig()
    ctx = await rig.ctx(
        "POST", "/api/oauth2/token", body=urlencode(form).encode(), chunked=True, headers=FORM
    )
    reply = await TokenBroker(rig.services).before(ctx)
    assert reply.status == 400 and "error" in json.loads(reply.body)
