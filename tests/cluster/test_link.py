"""The link to a real valkey-server: the injected clock rules scripts, nothing is resent, an outage
fails closed at once and ends by itself, and a server that lost its data is noticed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from proxy.clock import ManualClock, SystemClock
from proxy.cluster.link import Link, StoreDown
from proxy.cluster.node import ClusterNode
from proxy.cluster.probe import reach
from proxy.cluster.settings import ClusterSettings


def _settings(url: str, **kw) -> ClusterSettings:
    return ClusterSettings(redis_url=url, node="n1", **kw)


async def test_scripts_take_the_injected_clock(redis_server):
    clock = ManualClock()
    link = Link(_settings(redis_server.url), clock)
    await link.open()
    now = link.script("return now_ms()")
    assert await link.run(now, []) == int(clock.time() * 1000)
    await clock.advance(61)
    assert await link.run(now, []) == int(clock.time() * 1000)
    await link.close()


async def test_the_servers_clock_rules_on_a_real_clock(redis_server):
    link = Link(_settings(redis_server.url), SystemClock())
    await link.open()
    server_ms = await link.run(link.script("return now_ms()"), [])
    assert abs(server_ms / 1000 - SystemClock().time()) < 2
    await link.close()


async def test_a_script_runs_once_even_when_its_reply_is_lost(redis_server):
    """redis-py resends after a timeout by default; a resent reservation is a second one."""
    link = Link(_settings(redis_server.url, timeout_ms=100), ManualClock())
    await link.open()
    # busy for far longer than the 100 ms timeout (TIME stands still inside a script: count instead)
    slow = link.script("redis.call('INCR', KEYS[1]); local x = 0; for i = 1, 100000000 do x = x + i end; "
                       "return 1")
    with pytest.raises(StoreDown):
        await link.run(slow, [link.key("count")])
    assert not link.up
    for _ in range(100):  # the probe finds it again once the script is done
        if link.up:
            break
        await asyncio.sleep(0.1)
    assert link.up
    assert await link.command("GET", link.key("count")) == b"1"
    await link.close()


async def test_an_outage_fails_closed_then_recovers(redis_server, caplog):
    caplog.set_level(logging.INFO, "exact_proxy.cluster")
    link = Link(_settings(redis_server.url), ManualClock())
    await link.open()
    script = link.script("return redis.call('INCR', KEYS[1])")
    # several pooled connections: after the outage every one of them is stale
    assert sorted(await asyncio.gather(*(link.run(script, [link.key("k")]) for _ in range(8)))) == list(range(1, 9))
    redis_server.stop()
    with pytest.raises(StoreDown):
        await link.run(script, [link.key("k")])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(StoreDown):  # down: refused at once, no timeout per call
        await link.run(script, [link.key("k")])
    assert loop.time() - t0 < 0.05
    lost = []
    link.on_up.append(lambda was_lost: _record(lost, was_lost))
    redis_server.start()
    for _ in range(40):
        if link.up:
            break
        await asyncio.sleep(0.1)
    assert link.up
    counts = await asyncio.gather(*(link.run(script, [link.key("k")]) for _ in range(8)))
    assert sorted(counts) == list(range(1, 9))  # a fresh server (no persistence), and no stale connection
    assert lost == [True]
    downs = [r for r in caplog.records if "unreachable" in r.getMessage()]
    ups = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(downs) == 1 and len(ups) == 1
    await link.close()


async def _record(into: list, value: bool) -> None:
    into.append(value)


async def test_a_node_started_without_its_server_opens_when_it_appears(redis_server):
    redis_server.stop()
    node = ClusterNode(_settings(redis_server.url), ManualClock())
    await node.open()
    ok, why = node.healthy()
    assert not ok and "unreachable" in why
    assert node.refused().status == 503 and node.refused().headers["Retry-After"] == "5"
    redis_server.start()
    for _ in range(40):
        if node.healthy()[0]:
            break
        await asyncio.sleep(0.1)
    assert node.healthy()[0]
    await node._beat_once()
    view = await node.view()
    assert view["reachable"] and [n["node"] for n in view["nodes"]] == ["n1"]
    await node.close()


async def test_reach_says_what_answers(redis_server):
    ok, text = await reach(_settings(redis_server.url))
    assert ok and "ping" in text
    redis_server.stop()
    ok, text = await reach(_settings(redis_server.url))
    assert not ok and "unreachable" in text


async def test_the_password_comes_from_the_environment(tmp_path, monkeypatch, caplog):
    from tests.support.valkey import Server

    server = Server(tmp_path, extra=("--requirepass", "s3cret-pw")).start()
    try:
        monkeypatch.delenv("EXACT_PROXY_REDIS_PASSWORD", raising=False)
        link = Link(_settings(server.url), ManualClock())
        await link.open()
        assert not link.up
        assert "auth" in link.why.lower(), link.why
        await link.close()
        monkeypatch.setenv("EXACT_PROXY_REDIS_PASSWORD", "s3cret-pw")
        link = Link(_settings(server.url), ManualClock())
        await link.open()
        assert link.up
        assert "s3cret-pw" not in caplog.text
        await link.close()
    finally:
        server.stop()


async def test_scripts_of_one_loop_turn_share_a_round_trip_and_keep_their_own_answers(redis_server):
    link = Link(_settings(redis_server.url), ManualClock())
    await link.open()
    incr = link.script("return redis.call('INCR', KEYS[1])")
    broken = link.script("return redis.call('NO_SUCH_COMMAND')")
    calls = [link.run(incr, [link.key("n")]) for _ in range(100)] + [link.run(broken, [])]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sorted(results[:100]) == list(range(1, 101))  # each script once, each its own reply
    assert isinstance(results[100], Exception) and not isinstance(results[100], StoreDown)
    assert link.up  # a script's error is not an outage
    info = await link.command("INFO", "clients")
    assert info["connected_clients"] <= 4  # a pipeline per turn, not a connection per call
    await link.close()


async def test_a_cancelled_caller_leaves_no_reply_for_the_next_one(redis_server):
    """redis-py once handed a cancelled command's reply to the next caller (CVE-2023-28858): tools that
    disconnect cancel their waiting requests here all the time."""
    link = Link(_settings(redis_server.url, timeout_ms=2000), ManualClock())
    await link.open()
    slow = link.script("local x = 0; for i = 1, 20000000 do x = x + i end; return 'slow'")
    echo = link.script("return ARGV[2]")
    task = asyncio.ensure_future(link.run(slow, []))
    await asyncio.sleep(0.01)
    task.cancel()
    answers = await asyncio.gather(*(link.run(echo, [], [f"mine-{i}"]) for i in range(5)))
    assert answers == [f"mine-{i}".encode() for i in range(5)]
    assert link.up
    await link.close()
