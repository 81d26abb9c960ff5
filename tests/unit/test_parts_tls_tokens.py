"""Minimal tests of ``proxy.tls`` and ``proxy.tokens`` parts no other test imports by name, each against
its module's contract (the broker's riskiest branches end to end are in ``tests/test_token_broker_branches``)."""

from __future__ import annotations

import argparse
import asyncio
import ssl

import pytest

from proxy.clock import ManualClock
from proxy.policy import PolicyError
from proxy.store import MemoryStore
from proxy.tls import commands
from proxy.tls.ca import CAMissing, LocalCA
from proxy.tls.contexts import ServerContexts
from proxy.tls.intercept import decide, parse_target
from proxy.tokens.answers import TokenAnswer, joined, no_client, oauth_error, ok_body
from proxy.tokens.broker import ChainBroker
from proxy.tokens.chains import ChainBook
from proxy.tokens.endpoint import TokenEndpoint
from proxy.tokens.keepalive import KeepAlive
from proxy.tokens.rejection import Rejections
from proxy.tokens.sealing import Sealer
from proxy.tokens.settings import TokenSettings
from proxy.tokens.vault import ChainVault
from tests.support import Rig, add_chain, capture_log, make_policy
from tests.support.tokens import APP


# -- proxy.tls ----------------------------------------------------------------------------------------
def test_connect_is_intercepted_for_exact_hosts_tunnelled_when_listed_and_refused_otherwise():
    policy = make_policy("forward_proxy: {tunnel_hosts: ['login.example.com']}\n")
    assert decide(policy, "start.exactonline.nl:443").action == "intercept"
    assert decide(policy, "login.example.com:443").action == "tunnel"
    refused = decide(policy, "evil.example.com:443")
    assert (refused.action, refused.status) == ("refuse", 403)
    assert decide(policy, "start.exactonline.nl:8443").action == "refuse"  # not the upstream's port
    assert decide(policy, "no-port").status == 400 and parse_target("user@host:443") is None
    off = make_policy("forward_proxy: {intercept: false}\n")
    assert decide(off, "start.exactonline.nl:443").action == "refuse"  # never tunnelled blind


def test_server_contexts_need_a_ca_and_serve_tls_12_or_newer_leaves(tmp_path):
    policy = make_policy(f"ca: {{dir: '{tmp_path / 'ca'}'}}\n")
    contexts = ServerContexts(lambda: policy, ManualClock())
    with pytest.raises(CAMissing):
        contexts.ca()
    LocalCA.create(str(tmp_path / "ca"), ManualClock())
    ctx = contexts.for_names(("localhost",))
    assert isinstance(ctx, ssl.SSLContext) and ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert contexts.for_names(("localhost",)) is ctx  # one context per set of names while its leaf lasts


def test_ca_init_creates_once_and_show_explains_how_to_trust_it(tmp_path, capsys):
    args = argparse.Namespace(dir=str(tmp_path / "ca"), config=None, force=False, permit=[])
    assert commands.cmd_init(args) == 0
    assert commands.cmd_init(args) == 1  # an existing CA is left untouched
    assert commands.cmd_show(args) == 0
    out = capsys.readouterr().out
    assert "SHA-256" in out and "Windows" in out
    missing = argparse.Namespace(dir=str(tmp_path / "none"), config=None)
    assert commands.cmd_show(missing) == 1


# -- proxy.tokens ---------------------------------------------------------------------------------------
def test_token_answers_have_exacts_shape():
    rig = Rig()
    chain = add_chain(rig.services, age=100)
    body = ok_body(chain, rig.clock.time())
    assert body == {
        "access_token": chain.access_token,
        "token_type": "bearer",
        "expires_in": "500",
        "refresh_token": chain.refresh_token,
    }
    assert oauth_error("invalid_grant", "why")["error_description"] == "exact-proxy: why"
    refused = no_client("no secret")
    assert (refused.status, refused.body["error"]) == (401, "invalid_client")
    shared = joined(TokenAnswer(200, body, {}, "refreshed upstream", upstream_calls=1), "refresh")
    assert shared.upstream_calls == 0 and shared.decision.endswith("(joined a concurrent refresh)")


def test_token_settings_refuse_a_keepalive_later_than_the_refresh_token_lives():
    assert TokenSettings().min_refresh_interval == 570.0 and TokenSettings().refresh_margin == 30.0
    with pytest.raises(PolicyError, match="keepalive_after"):
        make_policy("tokens: {keepalive_after: 3000000, refresh_token_lifetime: 2592000}\n")


async def test_the_endpoint_sends_nothing_while_the_apps_token_error_budget_is_spent():
    rig = Rig()
    endpoint = TokenEndpoint(rig.services)
    for _ in range(8):
        rig.services.error_book.add((APP, None, "oauth2/token"), rig.clock.time())
    call = await endpoint.post_token(rig.policy.upstreams["exact"], APP, {"grant_type": "refresh_token"})
    assert call.local and call.status == 429 and "Retry-After" in call.headers  # never a 401


async def test_rejections_test_a_refused_token_a_handful_of_times_then_accept_it_again():
    rig = Rig()
    broker = rig.services.tokens
    assert isinstance(broker, ChainBroker) and isinstance(broker, Rejections)
    chain = add_chain(rig.services, age=100)
    assert not broker.rejected(chain, "some-other-token")
    assert broker.rejected(chain, chain.access_token) and not broker.rejected(chain, chain.access_token)
    due = []
    for _ in range(40):
        await rig.clock.advance(10)
        due.append(broker.probe_due(chain))
    assert due.count(True) == 3  # after 5, 20 and 80 s within 400 s (the fourth comes 320 s later)
    broker.accepted(chain)
    assert chain.rejected_at == 0 and not broker.probe_due(chain)


async def test_the_vault_writes_chains_sealed_and_reads_them_back_into_a_book():
    rig = Rig()
    rig.services.store = store = MemoryStore()
    await store.open()
    chain = add_chain(rig.services, client_id="{" + APP.upper() + "}", access_token="acc-vault")
    await rig.services.tokens.vault.save_now(chain)
    rig.services.tokens.vault.count(chain.key)
    book = ChainBook(Sealer.from_env())
    await ChainVault(rig.services, book, book.sealer).load()
    (loaded,) = book.chains.values()
    assert loaded.access_token == "acc-vault" and loaded.client_id == APP  # brought to its normal form
    assert book.calls_today(chain.key, rig.clock.time()) == 1


async def test_keepalive_warns_before_an_unused_chain_expires_and_leaves_chains_that_need_a_person():
    rig = Rig("tokens: {keepalive: false}\n")
    out = capture_log("text", rig.policy)
    old = add_chain(rig.services, age=25 * 86400)  # its refresh token is 25 of its 30 days old
    add_chain(rig.services, client_id="other", age=25 * 86400, needs_reauth="refused")
    await KeepAlive(rig.services.tokens).once()
    await asyncio.sleep(0)
    lines = [ln for ln in out.getvalue().splitlines() if "expires at" in ln]
    assert len(lines) == 1 and old.id in lines[0] and "WARNING" in lines[0]
