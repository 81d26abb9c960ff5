"""Three nodes share one app's minute and day windows through a real valkey-server: together they
never grant more than the windows allow, they queue in one global order, they see each other's 429s
and learned limits, probe once, and a dead node's tickets and probe expire. Each node is its own
``Book`` of ``SharedDivision``s on its own link; one ManualClock (passed to the scripts) rules the
windows, and the emulator's own limiter plays Exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from proxy.clock import ManualClock
from proxy.cluster.node import ClusterNode
from proxy.cluster.queue import SharedDivision
from proxy.cluster.settings import ClusterSettings
from proxy.cluster.windows import SharedWindows
from proxy.emulator.config import EmulatorConfig
from proxy.emulator.windows import CallLimits
from proxy.limits.book import Book
from proxy.limits.division import Refusal
from proxy.limits.settings import LimitSettings

START = 1_790_000_080.0  # 40 s into a clock minute
APP = "app"


class Node:
    def __init__(self, url: str, name: str, clock: ManualClock, settings: LimitSettings) -> None:
        self.cluster = ClusterNode(ClusterSettings(redis_url=url, node=name), clock)
        self.windows = SharedWindows(self.cluster, clock, lambda: self.settings)
        self.windows.poll = 0.02
        self.book = Book(clock, self.windows.division)
        self.settings = settings

    def div(self, division: int = 1) -> SharedDivision:
        d = self.book.division(APP, division, self.settings)
        assert isinstance(d, SharedDivision)
        return d


class Cluster:
    """N nodes and an Exact (the emulator's limiter) on one ManualClock."""

    def __init__(self, url: str, n: int = 3, **limits) -> None:
        self.clock = ManualClock(start=START)
        self.settings = LimitSettings(**{"max_wait": 600.0, **limits})
        self.nodes = [Node(url, f"n{i}", self.clock, self.settings) for i in range(n)]
        self.exact = CallLimits(EmulatorConfig.from_dict({}), self.clock)
        self.sent: list[tuple[int, float]] = []   # (node, clock time) of each call Exact saw
        self.granted: list[str] = []
        self.exact_429 = 0
        self.inflight = 0

    async def open(self) -> Cluster:
        for n in self.nodes:
            await n.cluster.open()
        return self

    async def close(self) -> None:
        for n in self.nodes:
            await n.cluster.close()

    async def call(self, i: int, label: str = "", rank: int = 0, division: int = 1, hold: float = 0.0):
        """One call through node i as call_budget makes it: reserve, send, tell what Exact said."""
        d = self.nodes[i].div(division)
        got = await d.acquire(rank, self.clock.time() + self.settings.max_wait)
        if isinstance(got, Refusal):
            return got
        self.granted.append(label)
        self.inflight += 1
        if hold:
            await asyncio.sleep(hold)
        self.inflight -= 1
        kind, headers = self.exact.admit(APP, division)
        self.sent.append((i, self.clock.time()))
        if kind is None:
            d.answered(headers, True)
            return 200
        self.exact_429 += 1
        d.upstream_429(headers, 1.0, 300.0)
        return 429

    def queued(self) -> int:
        return sum(len(d.waiters) for n in self.nodes for d in n.book.divisions.values())

    async def settle(self, seconds: float = 0.15) -> None:
        await asyncio.sleep(seconds)

    async def until(self, cond, timeout: float = 3.0) -> None:
        """Wait (real time) until cond() holds; the clock stands still meanwhile."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not cond():
            assert loop.time() < end, "timed out"
            await asyncio.sleep(0.005)


@pytest.fixture
async def cluster(redis_server):
    made: list[Cluster] = []

    async def make(n: int = 3, **limits) -> Cluster:
        c = await Cluster(redis_server.url, n, **limits).open()
        made.append(c)
        return c

    yield make
    for c in made:
        await c.close()


def per_minute(sent) -> dict[int, int]:
    out: dict[int, int] = {}
    for _, t in sent:
        out[int(t // 60)] = out.get(int(t // 60), 0) + 1
    return out


async def test_three_nodes_never_grant_more_than_the_minute_together(cluster):
    c = await cluster(probe=False, pace=0)
    calls = [asyncio.ensure_future(c.call(i % 3)) for i in range(120)]
    await c.until(lambda: len(c.sent) + c.queued() == 120)
    await c.settle(0.05)
    assert len(c.sent) == 60 and c.queued() == 60  # the other half waits, on all three nodes
    assert {i for i, _ in c.sent} == {0, 1, 2}
    await c.clock.advance(20)  # the next clock minute
    results = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert results == [200] * 120 and c.exact_429 == 0
    assert per_minute(c.sent) == {int(START // 60): 60, int(START // 60) + 1: 60}  # each minute used fully


async def test_without_the_server_each_node_would_grant_its_own_minute(cluster):
    """The control: three single-node books grant 180 in a minute, and Exact refuses 120."""
    from proxy.limits.division import Division

    c = await cluster(probe=False, pace=0)
    books = [Book(c.clock) for _ in range(3)]
    granted = 0
    for i in range(180):
        d = books[i % 3].division(APP, 1, c.settings)
        assert type(d) is Division
        if d.acquire_now():
            granted += 1
            c.exact.admit(APP, 1)
    assert granted == 180


async def test_grants_follow_global_arrival_order_priority_first(cluster):
    c = await cluster(probe=False, pace=0, divisions={1: (5, None)})
    first = [asyncio.ensure_future(c.call(i % 3, f"a{i}")) for i in range(5)]
    await c.settle()
    assert len(c.sent) == 5
    waiting = []
    for i in range(9):  # one at a time, so that arrival order is well defined, across the nodes
        waiting.append(asyncio.ensure_future(c.call(i % 3, f"w{i}")))
        await c.settle(0.03)
    waiting.append(asyncio.ensure_future(c.call(1, "vip", rank=1)))
    await c.settle()
    assert c.queued() == 10
    await c.clock.advance(20)
    await c.settle()
    # the next minute: priority, then arrival order across the nodes (within one minute the nodes'
    # tasks resume in any order)
    assert set(c.granted[5:]) == {"vip", "w0", "w1", "w2", "w3"}
    await c.clock.advance(60)
    await asyncio.wait_for(asyncio.gather(*first, *waiting), 5)
    assert set(c.granted[10:]) == {"w4", "w5", "w6", "w7", "w8"}


async def test_a_429_on_one_node_pauses_the_others(cluster):
    c = await cluster(probe=False, pace=0)
    assert await c.call(0) == 200
    for _ in range(59):  # another tool, elsewhere, spends the division at Exact
        c.exact.admit(APP, 1)
    assert await c.call(1) == 429  # node 1 meets Exact's 429
    await c.settle(0.05)
    other = asyncio.ensure_future(c.call(2))
    await c.settle()
    assert not other.done() and len(c.sent) == 2  # node 2 waits for Exact's minute: it sends nothing
    await c.clock.advance(20)
    assert await asyncio.wait_for(other, 5) == 200 and c.exact_429 == 1


async def test_what_one_node_learns_the_others_know(cluster):
    c = await cluster(probe=False, pace=0)
    c.exact.set_limits(APP, 1, minutely=10)
    assert await c.call(0) == 200
    await c.settle(0.05)
    calls = [asyncio.ensure_future(c.call(1 + i % 2)) for i in range(20)]
    await c.settle()
    assert len(c.sent) == 10 and c.exact_429 == 0  # nodes 1 and 2 stopped at Exact's 10
    assert c.nodes[2].div().minute_limit == 10
    await c.clock.advance(20)
    await c.settle()
    assert len(c.sent) == 20
    await c.clock.advance(60)
    assert await asyncio.wait_for(asyncio.gather(*calls), 5) == [200] * 20 and c.exact_429 == 0


async def test_an_unseen_division_is_probed_once_cluster_wide(cluster):
    c = await cluster(pace=0)
    c.exact.set_limits(APP, 1, minutely=4)
    calls = [asyncio.ensure_future(c.call(i % 3, hold=0.2)) for i in range(12)]
    await c.settle(0.1)
    assert len(c.granted) == 1  # the probe is out; nobody else goes, on any node
    await c.until(lambda: len(c.sent) == 4 and c.inflight == 0)
    await c.settle()
    assert c.exact_429 == 0 and len(c.sent) == 4
    for _ in range(2):  # never while a call is on its way (it would reach Exact in the next minute)
        await c.clock.advance(60 if c.clock.time() % 60 else 20)
        await c.until(lambda: len(c.sent) in (8, 12) and c.inflight == 0)
    assert await asyncio.wait_for(asyncio.gather(*calls), 5) == [200] * 12 and c.exact_429 == 0


async def test_a_dead_nodes_tickets_and_probe_expire(cluster):
    c = await cluster(pace=0)
    for n in c.nodes:
        n.windows.ticket_ttl, n.windows.probe_lease = 0.5, 0.5
    dead = c.nodes[0]
    d = dead.div()
    probe = asyncio.ensure_future(d.acquire(0, c.clock.time() + 600))
    assert await asyncio.wait_for(probe, 2) == 0.0  # node 0 holds the probe, then dies with tickets
    queued = [asyncio.ensure_future(d.acquire(0, c.clock.time() + 600)) for _ in range(3)]
    await c.settle(0.1)
    assert d.pump is not None
    d.pump.cancel()  # dead: no heartbeat, no answer, no cleanup
    for q in queued:
        q.cancel()
    d.tickets.clear()
    t0 = time.monotonic()
    alive = asyncio.ensure_future(c.call(1))
    assert await asyncio.wait_for(alive, 5) == 200
    assert 0.4 < time.monotonic() - t0 < 2.5


async def test_a_cancelled_waiter_consumes_nothing(cluster):
    c = await cluster(probe=False, pace=0, divisions={1: (2, None)})
    assert [await c.call(i) for i in range(2)] == [200, 200]
    gone = asyncio.ensure_future(c.call(0, "gone"))
    stays = asyncio.ensure_future(c.call(1, "stays"))
    await c.settle()
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    await c.settle(0.1)
    await c.clock.advance(20)
    assert await asyncio.wait_for(stays, 5) == 200
    d = c.nodes[2].div()
    assert await d.acquire(0, c.clock.time() + 1) == 0.0  # the cancelled one took no slot
    assert c.granted == ["", "", "stays"]


async def test_server_down_refuses_at_once_then_recovers(cluster, redis_server):
    c = await cluster(probe=False, pace=0)
    assert await c.call(0) == 200
    redis_server.stop()
    got = await c.call(1)
    assert isinstance(got, Refusal) and got.reason == "down" and got.headers["Retry-After"] == "5"
    assert len(c.sent) == 1
    redis_server.start()
    await c.until(lambda: all(n.cluster.link.up for n in c.nodes))
    later = asyncio.ensure_future(c.call(1))
    await c.settle()
    assert not later.done()  # the server forgot: node 0 wrote its minute back as spent
    await c.clock.advance(20)
    assert await asyncio.wait_for(later, 5) == 200 and len(c.sent) == 2


async def test_a_server_that_lost_its_data_gets_the_minute_back_as_spent(cluster, redis_server):
    c = await cluster(probe=False, pace=0)
    assert [await c.call(0) for _ in range(5)] == [200] * 5
    redis_server.stop()
    redis_server.start()
    for n in c.nodes:
        with contextlib.suppress(Exception):
            await n.cluster.link.command("PING")
    await c.until(lambda: all(n.cluster.link.up for n in c.nodes))
    await c.settle(0.1)
    got = await c.nodes[1].div().acquire(0, c.clock.time() + 1)
    assert isinstance(got, Refusal) and got.reason == "max_wait"  # node 0's minute counts as spent
    rows = await c.nodes[2].windows.view()
    assert rows[0]["minute"] == "60/60"


async def test_a_reloaded_policy_applies_at_once_and_daily_refuses(cluster):
    """The scripts compute the effective limits from the policy each call brings (windows_lua)."""
    from proxy.cluster import windows_lua

    for name in ("RESERVE", "ADMIT", "LEARN", "PAUSE", "RELEASE", "SEED", "PEEK"):
        assert getattr(windows_lua, name).startswith(windows_lua.COMMON)
    c = await cluster(probe=False, pace=0, divisions={1: (3, 5)})
    d = c.nodes[0].div()
    assert [await c.call(0) for _ in range(3)] == [200] * 3
    assert isinstance(await d.acquire(0, c.clock.time() + 1), Refusal)  # the cap of 3
    wider = LimitSettings(probe=False, pace=0, max_wait=600.0, divisions={1: (4, 5)})
    for n in c.nodes:
        n.settings = wider
    assert await c.call(1) == 200  # the reload's cap of 4, on another node
    await c.clock.advance(20)
    assert await c.call(2) == 200  # the fifth call of the day
    got = await c.nodes[2].div().acquire(0, c.clock.time() + 600)
    assert isinstance(got, Refusal) and got.reason == "daily"
    assert got.headers["X-RateLimit-Limit"] == "5" and got.headers["X-RateLimit-Remaining"] == "0"


async def test_a_busy_division_never_delays_another(cluster):
    c = await cluster(probe=False, pace=0, divisions={1: (5, None)})
    busy = [asyncio.ensure_future(c.call(i % 3, division=1)) for i in range(30)]
    await c.until(lambda: c.queued() == 25)
    assert [await asyncio.wait_for(c.call(i % 3, division=2), 1) for i in range(6)] == [200] * 6
    for b in busy:
        b.cancel()
    await asyncio.gather(*busy, return_exceptions=True)


async def test_a_queued_call_is_refused_at_its_deadline(cluster):
    c = await cluster(probe=False, pace=0, divisions={1: (2, None)})
    assert [await c.call(0) for _ in range(2)] == [200, 200]
    d = c.nodes[1].div()
    waiting = asyncio.ensure_future(d.acquire(0, c.clock.time() + 30))  # 20 s to the next minute: it queues
    await c.until(lambda: len(d.waiters) == 1)
    c.nodes[2].div().upstream_429({"Retry-After": "120"}, 1.0, 300.0)  # Exact told node 2 to wait 2 minutes
    await c.settle(0.1)
    await c.clock.advance(15)
    await c.clock.advance(16)  # the minute turned, but the pause holds it past the deadline
    got = await asyncio.wait_for(waiting, 2)
    assert isinstance(got, Refusal) and got.reason == "max_wait" and not d.tickets
    await c.settle(0.1)
    assert await c.nodes[0].cluster.link.command("ZCARD", d.keys[1]) == 0  # its ticket left the queue


async def test_a_queued_call_outlives_a_server_restart(cluster, redis_server):
    c = await cluster(probe=False, pace=0, divisions={1: (2, None)})
    assert [await c.call(0) for _ in range(2)] == [200, 200]
    waiting = asyncio.ensure_future(c.call(1, "waited"))
    await c.until(lambda: c.queued() == 1)
    redis_server.stop()
    await c.settle(0.1)
    redis_server.start()  # without its data: the tickets come back with the next heartbeat
    await c.until(lambda: all(n.cluster.link.up for n in c.nodes))
    await c.settle(0.1)
    assert not waiting.done()
    await c.clock.advance(20)
    assert await asyncio.wait_for(waiting, 5) == 200 and len(c.sent) == 3
