"""The shared error budget through three real proxies on one real valkey-server, in front of the real
emulator: together they spend one budget, honour one block, share one negative cache and the learned
mandatory filters, and refuse (503, nothing sent) while the server is down."""

from __future__ import annotations

import asyncio
import textwrap

import aiohttp
import pytest

import proxy.cluster.later
import proxy.cluster.mandatory
from proxy.clock import ManualClock
from proxy.cluster.errors import SharedErrors
from proxy.cluster.later import Later
from proxy.cluster.negative import SharedNegative
from proxy.cluster.node import ClusterNode
from proxy.cluster.settings import ClusterSettings
from proxy.errorbudget.book import ErrorBook
from proxy.http.server import ProxyServer
from proxy.policy import load_policy
from proxy.policy.watch import PolicyHolder
from proxy.tokens.sealing import ENV, new_key

START = 1_790_000_000.0
MISSING = "crm/Accounts(guid'{:08d}-0000-0000-0000-000000000000')"


@pytest.fixture
async def nodes(tmp_path, monkeypatch, redis_server):
    """``await nodes(base_url, n, clock, extra="")`` -> n proxies in cluster mode, stopped after the test."""
    monkeypatch.setenv(ENV, new_key())
    servers: list[ProxyServer] = []

    async def start(base_url: str, n: int, clock, extra: str = "", first: int = 1) -> list[ProxyServer]:
        out = []
        for i in range(first, first + n):
            d = tmp_path / f"n{i}"
            d.mkdir(exist_ok=True)
            (d / "policies.yaml").write_text(
                f"upstreams:\n  test: {{base_url: '{base_url}'}}\n"
                "listeners:\n  - {name: default, port: 0, upstream: test}\n"
                f"state: {{path: '{d / 'state.sqlite'}'}}\n"
                f"cluster: {{redis_url: '{redis_server.url}', node: n{i}}}\n" + textwrap.dedent(extra))
            holder = PolicyHolder(load_policy(str(d / "policies.yaml")), str(d / "policies.yaml"))
            server = ProxyServer(holder, clock)
            await server.start()
            servers.append(server)
            out.append(server)
        return out

    yield start
    for server in servers:
        await server.stop()


async def setup(emulator, nodes, n=3, extra="", emu_config=None):
    clock = ManualClock(start=START)
    emu = await emulator(config=emu_config, clock=clock)
    proxies = await nodes(emu.base, n, clock, extra)
    token = emu.state.issue_tokens("test-app")["access_token"]
    return clock, emu, proxies, {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def get(s, url, h):
    async with s.get(url, headers=h) as r:
        return r.status, r.headers, await r.read()


async def settle(proxies) -> None:
    """The answers' background work (done, negative-cache puts) has reached the server."""
    for p in proxies:
        errors = p.services.error_book.shared
        assert isinstance(errors, SharedErrors)
        await errors.later.drain()
        if errors.negative is not None:
            await errors.negative.later.drain()
            for task in list(errors.negative._tasks):
                await task


async def test_thirty_bad_requests_over_three_nodes_spend_one_budget(emulator, nodes):
    clock, emu, proxies, h = await setup(emulator, nodes)
    async with aiohttp.ClientSession() as s:
        statuses = []
        for i in range(30):
            status, _, _ = await get(s, f"{proxies[i % 3].url()}/api/v1/21/{MISSING.format(i)}", h)
            statuses.append(status)
            await clock.advance(1)
        ok = await get(s, f"{proxies[1].url()}/api/v1/21/crm/Contacts?$top=1", h)
    assert statuses[:8] == [404] * 8 and set(statuses[8:]) == {429}, statuses
    assert emu.state.count(division=21, endpoint="crm/accounts") == 8  # not 8 per node
    assert emu.state.count(outcome="error_block") == 0 and ok[0] == 200
    view = await proxies[2].services.cluster.view()
    rows = [r for r in view["errors"] if r["division"] == 21]
    assert [(r["endpoint"], r["errors_this_hour"], r["in_flight"]) for r in rows] == [("crm/accounts", 8, 0)]


async def test_simultaneous_bad_requests_on_three_nodes_cannot_pass_the_budget(emulator, nodes):
    """Reserve before forward, across nodes: the room taken by calls in flight is shared too."""
    clock, emu, proxies, h = await setup(emulator, nodes)
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(*(get(s, f"{proxies[i % 3].url()}/api/v1/22/{MISSING.format(i)}", h)
                                         for i in range(30)))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(404) == 8 and statuses.count(429) == 22, statuses
    assert emu.state.count(division=22, endpoint="crm/accounts") == 8
    assert emu.state.count(outcome="error_block") == 0


async def test_a_block_seen_on_one_node_is_honoured_by_the_others(emulator, nodes):
    clock, emu, proxies, h = await setup(emulator, nodes, emu_config={"error_limit": 2})
    async with aiohttp.ClientSession() as s:
        for i in range(4):  # Exact blocks after 2 errors (its limit here): node 1 sees the block
            status, _, body = await get(s, f"{proxies[0].url()}/api/v1/23/{MISSING.format(i)}", h)
        assert status == 429 and b"Exact blocked" in body
        await settle(proxies)
        seen = emu.state.count(division=23, endpoint="crm/accounts")
        for p in proxies[1:]:  # the others do not send it again, bad or good
            for url in (MISSING.format(99), "crm/Accounts?$top=1&$filter=Name%20eq%20'x'"):
                status, _, body = await get(s, f"{p.url()}/api/v1/23/{url}", h)
                assert status == 429 and b"Exact blocked" in body, body
    assert emu.state.count(division=23, endpoint="crm/accounts") == seen


async def test_the_negative_cache_is_shared_and_a_write_anywhere_clears_it(emulator, nodes):
    clock, emu, proxies, h = await setup(emulator, nodes)
    gone = emu.state.deleted_account_id(24)
    url = f"/api/v1/24/crm/Accounts(guid'{gone}')"
    async with aiohttp.ClientSession() as s:
        assert (await get(s, proxies[0].url() + url, h))[0] == 404
        await settle(proxies)
        for p in (proxies[1], proxies[2], proxies[1]):  # by take on first sight, then by the hint
            status, headers, _ = await get(s, p.url() + url, h)
            assert status == 404 and headers.get("X-Exact-Proxy") == "negative-cache"
        assert emu.state.count(division=24, endpoint="crm/accounts") == 1
        async with s.post(f"{proxies[2].url()}/api/v1/24/crm/Accounts", json={"Name": "New"}, headers=h) as r:
            assert r.status == 201
        await settle(proxies)
        status, headers, _ = await get(s, proxies[1].url() + url, h)
    assert status == 404 and "X-Exact-Proxy" not in headers  # asked Exact again after the write
    assert emu.state.count(division=24, endpoint="crm/accounts") == 3


async def test_a_mandatory_filter_learned_on_one_node_costs_the_others_no_400(emulator, nodes, monkeypatch):
    monkeypatch.setattr(proxy.cluster.mandatory, "REFRESH", 0.0)
    clock = ManualClock(start=START)
    emu = await emulator(config={"mandatory_filter_endpoints": ["crm/contacts"]}, clock=clock)
    proxies = await nodes(emu.base, 2, clock)
    h = {"Authorization": "Bearer " + emu.state.issue_tokens("test-app")["access_token"],
         "Accept": "application/json"}
    async with aiohttp.ClientSession() as s:
        assert (await get(s, f"{proxies[0].url()}/api/v1/25/crm/Contacts?$select=ID", h))[0] == 200
        assert emu.state.count(outcome="mandatory_filter") == 1  # learned, replayed
        assert (await get(s, f"{proxies[1].url()}/api/v1/25/crm/Contacts?$select=ID", h))[0] == 200
        late = (await nodes(emu.base, 1, clock, first=3))[0]  # started after: loads it at start
        assert late.services.filters and (await get(s, f"{late.url()}/api/v1/25/crm/Contacts?$top=2", h))[0] == 200
    assert emu.state.count(outcome="mandatory_filter") == 1


async def test_server_down_refuses_with_503_and_sends_nothing_then_recovers(emulator, nodes, redis_server):
    clock, emu, proxies, h = await setup(emulator, nodes, n=2)
    async with aiohttp.ClientSession() as s:
        assert (await get(s, f"{proxies[0].url()}/api/v1/current/Me", h))[0] == 200
        before = emu.state.requests
        redis_server.stop()
        for p in proxies:
            for url in ("/api/v1/current/Me", f"/api/v1/26/{MISSING.format(1)}"):
                status, headers, body = await get(s, p.url() + url, h)
                assert status == 503 and headers["Retry-After"] == "5" and b"nothing was sent" in body
        assert emu.state.requests == before
        redis_server.start()
        for _ in range(50):
            if all(p.services.cluster.link.up for p in proxies):
                break
            await asyncio.sleep(0.1)
        assert (await get(s, f"{proxies[1].url()}/api/v1/current/Me", h))[0] == 200
        assert (await get(s, f"{proxies[0].url()}/api/v1/26/{MISSING.format(2)}", h))[0] == 404


async def test_the_leases_of_a_dead_node_expire(emulator, nodes, redis_server):
    """A node that died with calls in flight holds their room only until its leases expire."""
    clock, emu, proxies, h = await setup(emulator, nodes, n=1, extra="default_app: test-app\nforwarding: {total_timeout: 10}\n")
    dead = ClusterNode(ClusterSettings(redis_url=redis_server.url, node="dead"), clock)
    await dead.link.open()
    shared = SharedErrors(dead, lambda: 15.0, lambda: 3600.0)
    book = ErrorBook()
    book.share(shared)
    key = ("test-app", 27, "crm/accounts")
    for _ in range(8):  # the whole budget in flight, never answered
        assert await book.take(key, 8, clock.time) is not None
    await dead.link.close()
    async with aiohttp.ClientSession() as s:
        call = asyncio.create_task(get(s, f"{proxies[0].url()}/api/v1/27/{MISSING.format(1)}", h))
        await asyncio.sleep(0.6)
        assert not call.done()  # waits for the room the dead node holds
        await clock.advance(16)
        status, _, _ = await asyncio.wait_for(call, 5)
    assert status == 404 and emu.state.count(division=27, endpoint="crm/accounts") == 1


async def test_results_told_during_an_outage_reach_the_server_afterwards(redis_server):
    """``done`` runs in the background and is kept while the server is down; a resend changes nothing."""
    clock = ManualClock(start=START)
    node = ClusterNode(ClusterSettings(redis_url=redis_server.url, node="n1"), clock)
    await node.link.open()
    shared = SharedErrors(node, lambda: 60.0, lambda: 3600.0, SharedNegative(node))
    book = ErrorBook()
    book.share(shared)
    key = ("app", 28, "crm/accounts")
    taken = await book.take(key, 8, clock.time)
    assert taken is not None and taken.lease
    e, i, _ = shared.keys(key)
    assert await node.link.command("ZCARD", i) == 1
    redis_server.stop()
    assert book.done(taken, clock.time(), True) == 1  # the node's own copy counts it at once
    await asyncio.sleep(0.1)
    assert shared.later.pending == 1
    redis_server.start()
    await asyncio.wait_for(shared.later.drain(10), 10)
    assert shared.later.pending == 0 and await node.link.command("ZCARD", e) == 1
    shared.done(taken, clock.time())  # told twice: still one error
    await shared.later.drain()
    assert await node.link.command("ZCARD", e) == 1
    shared.close()
    await node.link.close()


async def test_the_token_endpoints_reserve_release_add_is_one_shared_result(redis_server):
    """The broker's calls (``proxy.tokens.endpoint``) use reserve/release/add: in cluster mode the add
    right after a release rides on that release's ``done``."""
    clock = ManualClock(start=START)
    node = ClusterNode(ClusterSettings(redis_url=redis_server.url, node="n1"), clock)
    await node.link.open()
    shared = SharedErrors(node, lambda: 60.0, lambda: 3600.0)
    book = ErrorBook()
    book.share(shared)
    key = ("app", None, "oauth2/token")
    assert not book.reserve_now(key, 2, clock.time())
    assert await book.reserve(key, 2, clock.time) == 0
    assert await book.reserve(key, 2, clock.time) == 0
    waiter = asyncio.create_task(book.reserve(key, 2, clock.time))
    await asyncio.sleep(0.1)
    assert not waiter.done()  # 0 counted + 2 in flight: no room
    book.release(key)
    assert book.add(key, clock.time()) == 1
    book.release(key)
    assert await asyncio.wait_for(waiter, 2) == 1  # woken when the release reached the server
    await shared.later.drain()
    e, i, _ = shared.keys(key)
    assert await node.link.command("ZCARD", e) == 1 and await node.link.command("ZCARD", i) == 1
    book.release(key)
    await asyncio.sleep(0.01)
    await shared.later.drain()
    assert await node.link.command("ZCARD", i) == 0
    assert book.refusal(key, 2, clock.time()) is None and book.count(key, clock.time()) == 1
    shared.close()
    await node.link.close()


async def test_the_background_queue_is_bounded_and_drops_leases_before_errors(redis_server, monkeypatch):
    monkeypatch.setattr(proxy.cluster.later, "MAX", 3)
    node = ClusterNode(ClusterSettings(redis_url=redis_server.url, node="n1"), ManualClock(start=START))
    await node.link.open()
    later = Later(node.link)
    incr = node.link.script("return redis.call('INCRBY', KEYS[1], ARGV[2])")
    redis_server.stop()
    for value, precious in ((1, True), (10, False), (100, True), (1000, True)):
        later.add(incr, [node.link.key("sum")], [value], precious=precious)
    assert later.pending == 3  # the lease-like call went first
    redis_server.start()
    await asyncio.wait_for(later.drain(10), 10)
    assert await node.link.command("GET", node.link.key("sum")) == b"1101"
    later.close()
    await node.link.close()
