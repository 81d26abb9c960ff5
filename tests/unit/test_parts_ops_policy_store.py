"""Minimal tests of ``proxy.ops``, ``proxy.policy`` and ``proxy.store`` parts no other test imports by
name, each against its module's contract."""

from __future__ import annotations

import json
import os
import stat
from unittest import mock

import aiosqlite
import pytest
from aiohttp.test_utils import make_mocked_request

from proxy.clock import ManualClock
from proxy.ops import admin, admin_access
from proxy.ops.metrics import Metrics
from proxy.policy.document import Policy, load_policy, parse_policy
from proxy.policy.matching import Match
from proxy.policy.reader import PolicyError, Reader, parse
from proxy.store.base import Store
from proxy.store.fit import write_what_fits
from proxy.store.memory import MemoryStore
from proxy.store.sqlite import SCHEMA, SqliteStore
from proxy.store.sqlite_file import Identity, move_aside, prepare
from tests.support import Rig, add_chain, make_policy


# -- proxy.ops ----------------------------------------------------------------------------------------
def _request(host: str | None, peer):
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: peer if key == "peername" else default
    headers = {"Host": host} if host is not None else {}
    return make_mocked_request("GET", "/_proxy/status", headers=headers, transport=transport)


@pytest.mark.parametrize(
    "host, peer, allowed",
    [
        ("localhost:8080", ("127.0.0.1", 5000), True),
        ("[::1]:8080", ("::1", 5000, 0, 0), True),
        ("127.0.0.1", ("::ffff:127.0.0.1", 5000, 0, 0), True),
        ("rebind.example:8080", ("127.0.0.1", 5000), False),  # DNS rebinding: its own name on loopback
        ("localhost", ("10.0.0.7", 5000), False),
        ("localhost", None, False),  # no peer address: nothing says it is local
        (None, ("127.0.0.1", 5000), False),
    ],
)
async def test_admin_access_needs_a_loopback_peer_that_names_this_machine(host, peer, allowed):
    assert (admin_access.refusal(_request(host, peer), make_policy()) is None) is allowed
    anyone = make_policy("admin: {allow_remote: true}\n")
    assert admin_access.refusal(_request("rebind.example", ("10.0.0.7", 1)), anyone) is None


async def test_the_status_page_has_every_filters_snapshot_and_no_token():
    rig = Rig()
    chain = add_chain(rig.services, access_token="acc-secret-token", refresh_token="Gcp7!IAAArefresh-secret")
    page = json.dumps(admin.status(rig.services))
    assert chain.id in page and "acc-secret-token" not in page and "refresh-secret" not in page
    snapshot = admin.status(rig.services)
    assert {"call_budget", "error_budget", "token_chains"} <= set(snapshot)


async def test_health_is_ok_with_a_store_that_writes_and_503_naming_why_when_it_cannot():
    rig = Rig()
    rig.services.store = MemoryStore()
    assert admin.health(rig.services)[0] == 200
    rig.services.store.healthy = False
    code, body = admin.health(rig.services)
    assert code == 503 and body["status"] == "degraded" and "cannot write" in body["reason"]


async def test_metrics_count_requests_by_outcome_and_the_summary_resets_each_time():
    rig = Rig()
    metrics = Metrics()
    ctx = await rig.ctx()
    ctx.attempt = 1
    metrics.observe(ctx, 200)
    metrics.upstream(200)
    text = metrics.render().decode()
    assert 'exact_proxy_requests_total{outcome="upstream",status="2xx"} 1.0' in text
    assert metrics.summary_line().startswith("summary (last minute): calls 1, upstream 1,")
    assert metrics.summary_line() is None


# -- proxy.policy -------------------------------------------------------------------------------------
def test_an_empty_policy_file_is_refused_and_the_defaults_are_those_of_braces(tmp_path):
    path = tmp_path / "policies.yaml"
    path.write_text("  \n")
    with pytest.raises(PolicyError, match="empty"):
        load_policy(str(path))
    assert Policy.defaults() == parse_policy("{}", "<defaults>") and isinstance(Policy.defaults(), Policy)


def test_every_problem_is_reported_with_its_file_line_and_key():
    with pytest.raises(PolicyError) as err:
        parse_policy("limits:\n  minutely: many\nnonsense: 1\n", "p.yaml")
    text = str(err.value)
    assert "p.yaml:2" in text and "limits.minutely" in text and "nonsense" in text


def test_the_reader_knows_the_line_of_every_key():
    data, lines = parse("a:\n  b: 1\n  c: [1, 2]\n", "x.yaml")
    assert data == {"a": {"b": 1, "c": [1, 2]}} and lines[("a", "c")] == 3
    problems: list = []
    r = Reader(data, (), lines, "x.yaml", problems).mapping("a")
    assert r.integer("b", 0, minimum=2) == 0 and problems and problems[0].line == 2


def test_a_match_holds_when_every_condition_given_holds_case_insensitively():
    m = Match(listener="default", user_agent="python-exact-online*", headers=(("X-Job", "nightly*"),))
    assert m.matches("default", {"User-Agent": "Python-Exact-Online/1.2", "X-Job": "Nightly-sync"})
    assert not m.matches("other", {"User-Agent": "python-exact-online/1", "X-Job": "nightly"})
    assert not m.matches("default", {"User-Agent": "python-exact-online/1"})
    assert Match().matches("any", {})


# -- proxy.store --------------------------------------------------------------------------------------
async def test_every_store_shows_writes_at_once_before_they_are_flushed():
    store: Store = MemoryStore()
    await store.open()
    store.put("ns", "a", {"n": 1})
    store.put("ns", "b", 2)
    store.delete("ns", "b")
    assert await store.load("ns") == {"a": {"n": 1}} and await store.get("ns", "b", "gone") == "gone"
    await store.close()


async def test_the_sqlite_store_is_owner_only_and_keeps_what_was_flushed(tmp_path):
    path = str(tmp_path / "state" / "s.sqlite")
    store = SqliteStore(path, ManualClock())
    await store.open()
    store.put("windows", "app|101", {"minute": 3})
    await store.flush()
    await store.close()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = SqliteStore(path, ManualClock())
    await again.open()
    try:
        assert await again.load("windows") == {"app|101": {"minute": 3}} and again.healthy
    finally:
        await again.close()


async def test_what_fits_is_written_and_a_value_that_is_not_json_is_dropped():
    async with aiosqlite.connect(":memory:") as db:
        await db.execute(SCHEMA)
        left, error = await write_what_fits(
            db, {("ns", "a"): {"x": 1}, ("ns", "bad"): {1, 2}, ("ns", "c"): None}, 1000.0
        )
        assert (left, error) == ({}, None)
        async with db.execute("SELECT namespace, key, value FROM state") as cur:
            assert await cur.fetchall() == [("ns", "a", '{"x":1}')]


def test_the_state_file_is_made_owner_only_moved_aside_and_recognised(tmp_path):
    path = str(tmp_path / "d" / "s.sqlite")
    prepare(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    me = Identity.of(path)
    assert me.lost() is None and me.foreign() == ()
    aside = move_aside(path, "corrupt")
    assert os.path.exists(aside) and not os.path.exists(path) and ".corrupt-" in aside
    assert me.lost() == "it was deleted or moved away"
    prepare(path)  # another file now at the path: ours is gone, that one is foreign
    assert me.lost() == "it was replaced by another file" and me.foreign() == ("",)


def test_sections_read_their_settings_with_defaults_and_problems():
    from proxy.policy.reader import PolicyError
    from proxy.policy.sections import Forwarding, StateSettings

    policy = parse_policy("forwarding: {read_timeout: 12}\nstate: {flush_interval: 0.5}\n", "p.yaml")
    assert policy.forwarding.read_timeout == 12 and isinstance(policy.forwarding, Forwarding)
    assert policy.state.flush_interval == 0.5 and isinstance(policy.state, StateSettings)
    with pytest.raises(PolicyError, match="p.yaml:1"):
        parse_policy("forwarding: {read_timeout: soon}\n", "p.yaml")
