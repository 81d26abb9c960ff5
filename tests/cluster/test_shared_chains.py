"""Token chains shared by three in-process proxies through a real valkey-server, in front of the real
emulator (Exact's rules: rotation, the 570 s rule, 200 token calls a day). One ManualClock for all, so
the scripts, the emulator and the proxies agree on every minute and a lease can run out at once.

Without the sharing (``proxy.cluster.chains``, ``proxy.cluster.chain_flow`` with ``chain_refresh`` and
``chain_start``) each node would send its own refresh: the emulator would count several token calls per
interval, TooEarly and "Old refresh token used"; each test checks the counts at the emulator.
"""

from __future__ import annotations

import asyncio
import logging
import textwrap

import aiohttp
import pytest

from proxy.clock import ManualClock
from proxy.cluster import chain_answers, chain_refresh, chain_start  # noqa: F401 - what SharedChains runs
from proxy.cluster.chain_flow import SharedChains
from proxy.cluster.chains import ChainStore
from proxy.cluster.link import Link
from proxy.cluster.settings import ClusterSettings
from proxy.http.server import ProxyServer
from proxy.ops.logs import setup_logging
from proxy.policy import load_policy
from proxy.policy.watch import PolicyHolder
from proxy.tokens.chains import Chain
from proxy.tokens.refresh import Refresher
from proxy.tokens.sealing import ENV, new_key
from tests.test_token_broker_e2e import CLIENT, SECRET, START, api_call, authorize, refresh, token_calls

KEY = new_key()


@pytest.fixture
async def nodes(tmp_path, redis_server, log_output, monkeypatch):
    """``await nodes(emu, clock, n=3, extra="") -> [ProxyServer]``: one policy and state file each."""
    monkeypatch.setenv(ENV, KEY)
    started: list[ProxyServer] = []

    async def start(emu, clock, n: int = 3, extra: str = "") -> list[ProxyServer]:
        for i in range(len(started), len(started) + n):
            path = tmp_path / f"node{i}.yaml"
            path.write_text(f"upstreams:\n  test: {{base_url: '{emu.base}'}}\n"
                            "listeners:\n  - {name: default, port: 0, upstream: test}\n"
                            f"state: {{path: '{tmp_path / f'node{i}.sqlite'}'}}\n"
                            f"cluster: {{redis_url: '{redis_server.url}', node: n{i}}}\n" + textwrap.dedent(extra))
            policy = load_policy(str(path))
            setup_logging(policy.log, "text", stream=log_output)
            server = ProxyServer(PolicyHolder(policy, str(path)), clock)
            await server.start()
            started.append(server)
        return started

    yield start
    for server in started:
        await server.stop()


def shared(server: ProxyServer) -> SharedChains:
    got = server.services.tokens.shared
    assert got is not None
    return got


async def dead_node(redis_url: str, clock: ManualClock, name: str = "n9") -> ChainStore:
    link = Link(ClusterSettings(redis_url=redis_url, node=name), clock)
    await link.open()
    return ChainStore(link)


async def test_five_tools_on_three_nodes_share_one_refresh_token(emulator, nodes, log_output):
    """The acceptance test: a refresh token the proxy never saw, presented by five tools on three nodes
    at once, and again each interval: one upstream call per interval for the whole cluster."""
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxies = await nodes(emu, clock)
    first = emu.state.issue_tokens(CLIENT, "user-1")
    tools = [dict(first) for _ in range(5)]
    statuses: list[int] = []
    async with aiohttp.ClientSession() as s:
        async def tool(i: int, t: dict) -> None:
            base = proxies[i % 3].url("default")
            status, body = await refresh(s, base, t["refresh_token"])
            assert status == 200, body
            if i != 4:  # tool 4 keeps presenting the refresh token it was configured with
                t.update(body)
            else:
                t["access_token"] = body["access_token"]
            statuses.append(await api_call(s, proxies[(i + 1) % 3].url("default"), t["access_token"]))

        for rounds in range(1, 5):
            await clock.advance(600)
            await asyncio.gather(*(tool(i, t) for i, t in enumerate(tools)))
            assert token_calls(emu) == rounds, emu.state.stats()
            await clock.advance(30)  # and once more within the interval: answered from the chain
            await asyncio.gather(*(tool(i, t) for i, t in enumerate(tools)))
            assert token_calls(emu) == rounds
    assert set(statuses) == {200}
    assert token_calls(emu, "too_early") == 0 and token_calls(emu, "old_refresh_token") == 0
    assert len({t["refresh_token"] for t in tools[:4]}) == 1
    assert first["refresh_token"] not in log_output.getvalue()


async def test_a_chain_started_on_one_node_is_served_by_the_others(emulator, nodes):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    n0, n1, n2 = await nodes(emu, clock)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, n0.url("default"))
        assert await api_call(s, n1.url("default"), tok["access_token"]) == 200
        assert n1.services.tokens.book.by_access(tok["access_token"]) is not None  # found in the shared index
        await clock.advance(600)
        status, body = await refresh(s, n1.url("default"), tok["refresh_token"])
        assert status == 200 and body["refresh_token"] != tok["refresh_token"]
        assert token_calls(emu) == 2
        # node 0 still holds the old version: it reads the new one before answering
        status, again = await refresh(s, n0.url("default"), tok["refresh_token"])
        assert status == 200 and again["refresh_token"] == body["refresh_token"]
        status, third = await refresh(s, n2.url("default"), body["refresh_token"])
        assert status == 200 and third["access_token"] == body["access_token"]
        assert await api_call(s, n2.url("default"), body["access_token"]) == 200
    assert token_calls(emu) == 2
    assert token_calls(emu, "old_refresh_token") == 0


async def test_the_daily_token_calls_are_counted_for_the_cluster(emulator, nodes):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxies = await nodes(emu, clock, extra="tokens: {daily_token_calls: 3}\n")
    answers = []
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, proxies[0].url("default"))
        for i in range(1, 4):
            await clock.advance(600)
            status, body = await refresh(s, proxies[i % 3].url("default"), tok["refresh_token"])
            answers.append(status)
            if status == 200:
                tok = body
    assert answers == [200, 200, 429]
    assert token_calls(emu) == 3
    view = await proxies[2].services.cluster.view()
    [chain] = view["token_chains"]
    assert chain["token_calls_today"] == 3 and chain["user"] and "access_token" not in str(view)


async def test_a_dead_nodes_lease_runs_out_and_another_node_refreshes(emulator, nodes, redis_server):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    n0, n1, _n2 = await nodes(emu, clock)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, n0.url("default"))
        chain = n0.services.tokens.book.by_access(tok["access_token"])
        ver, rev = shared(n0).seen[chain.id]
        dead = await dead_node(redis_server.url, clock)
        await clock.advance(600)
        got = await dead.acquire(CLIENT, chain.id, "n9:dead", ver, rev, 60_000, 190, chain.user)
        assert got.state == "got"  # n9 took the lease and died before sending
        waiting = asyncio.ensure_future(refresh(s, n1.url("default"), tok["refresh_token"]))
        await asyncio.sleep(0.5)
        assert not waiting.done() and token_calls(emu) == 1  # held: nobody presents the token
        await clock.advance(61)  # the dead node's lease runs out
        status, body = await asyncio.wait_for(waiting, 5)
        await dead.link.close()
    assert status == 200 and body["refresh_token"] != tok["refresh_token"]
    assert token_calls(emu) == 2 and token_calls(emu, "ok") == 2


async def test_a_node_that_died_after_exact_rotated_is_named(emulator, nodes, redis_server, log_output):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    n0, n1, n2 = await nodes(emu, clock, extra="tokens: {loop_delay: 0}\n")
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, n0.url("default"))
        chain = n0.services.tokens.book.by_access(tok["access_token"])
        ver, rev = shared(n0).seen[chain.id]
        dead = await dead_node(redis_server.url, clock)
        await clock.advance(600)
        assert (await dead.acquire(CLIENT, chain.id, "n9:dead", ver, rev, 60_000, 190, chain.user)).state == "got"
        # n9's refresh reached Exact, which rotated; n9 died before its commit
        status, *_ = emu.state.oauth.token({"grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
                                            "client_id": CLIENT, "client_secret": SECRET}, None)
        assert status == 200
        await dead.link.close()
        await clock.advance(61)
        status, body = await refresh(s, n1.url("default"), tok["refresh_token"])
        assert status == 400 and body["error"] == "invalid_grant"
        assert "n9" in body["error_description"], body
        calls = token_calls(emu)
        # the verdict is the cluster's: another node answers it without asking Exact
        status, again = await refresh(s, n2.url("default"), tok["refresh_token"])
        assert status == 400 and "n9" in again["error_description"]
    assert token_calls(emu) == calls
    assert token_calls(emu, "old_refresh_token") == 1
    errors = [line for line in log_output.getvalue().splitlines() if "NEEDS A NEW AUTHORIZATION" in line]
    assert errors and "Node n9 started a refresh" in errors[0]


async def test_the_server_down_answers_from_the_valid_chain_then_503_then_recovers(emulator, nodes, redis_server,
                                                                                caplog):
    caplog.set_level(logging.INFO)
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    n0, n1 = await nodes(emu, clock, n=2)
    async with aiohttp.ClientSession() as s:
        tok = await authorize(s, n0.url("default"))
        status, _ = await refresh(s, n1.url("default"), tok["refresh_token"])  # node 1 reads the chain
        assert status == 200
        redis_server.stop()
        await clock.advance(60)
        for node in (n0, n1):  # the access token is valid: answered from the last-read chain
            status, body = await refresh(s, node.url("default"), tok["refresh_token"])
            assert status == 200 and body["access_token"] == tok["access_token"]
        await clock.advance(600)
        async with s.post(n1.url("default") + "/api/oauth2/token", data={
                "grant_type": "refresh_token", "refresh_token": tok["refresh_token"], "client_id": CLIENT,
                "client_secret": SECRET}) as r:
            assert r.status == 503 and r.headers["Retry-After"] == "5"
            body = await r.json()
        assert body["error"] == "temporarily_unavailable" and "nothing was sent to Exact" in body["error_description"]
        assert token_calls(emu) == 1
        redis_server.start()  # empty: it lost every chain; the nodes seed theirs again
        for _ in range(50):
            if shared(n0).node.link.up and shared(n1).node.link.up:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        results = await asyncio.gather(*(refresh(s, node.url("default"), tok["refresh_token"]) for node in (n0, n1)))
    assert [r[0] for r in results] == [200, 200]
    assert results[0][1]["refresh_token"] == results[1][1]["refresh_token"] != tok["refresh_token"]
    assert token_calls(emu) == 2 and token_calls(emu, "old_refresh_token") == 0


async def test_an_unknown_token_refused_by_exact_is_not_sent_twice(emulator, nodes):
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxies = await nodes(emu, clock)
    async with aiohttp.ClientSession() as s:
        answers = await asyncio.gather(*(refresh(s, p.url("default"), "Gcp7!IAAAnot-a-token") for p in proxies))
    assert {a[0] for a in answers} == {400}
    assert token_calls(emu) == 1
    assert len({a[1]["error_description"] for a in answers}) == 1


def test_the_refresh_form_carries_the_secret():
    """``proxy.tokens.refresh`` is the single node's refresh too; its form is the cluster's."""
    chain = Chain(id="c1", client_id=CLIENT, upstream="x", access_token="a", access_expires_at=0,
                  refresh_token="r", issued_at=0, refresh_issued_at=0, client_secret="s")
    assert Refresher._refresh_form(chain) == {"grant_type": "refresh_token", "refresh_token": "r",
                                              "client_id": CLIENT, "client_secret": "s"}
