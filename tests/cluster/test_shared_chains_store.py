"""The shared chain records' atomic rules on a real valkey-server (``proxy.cluster.chains``, its scripts
``proxy.cluster.chains_lua``): the lease, the version CAS (a paused holder still commits; a rotation wins
over an annotation), the intent left by a holder, and the day's token calls reserved and given back."""

from __future__ import annotations

import pytest

from proxy.clock import ManualClock
from proxy.cluster import chains_lua  # noqa: F401 - the scripts ChainStore runs
from proxy.cluster.chains import ChainStore
from proxy.cluster.link import Link
from proxy.cluster.settings import ClusterSettings

APP, ID = "app", "c1"


@pytest.fixture
async def store(redis_server):
    clock = ManualClock()
    link = Link(ClusterSettings(redis_url=redis_server.url, node="n1"), clock)
    await link.open()
    s = ChainStore(link)
    s.clock = clock
    assert await s.seed(APP, ID, {"n": 0}, {"r:fp0": 600}, 3600)
    yield s
    await link.close()


async def test_one_lease_and_a_paused_holder_still_commits(store):
    a = await store.acquire(APP, ID, "n1:a", 1, 0, 60_000, 10, "u")
    assert a.state == "got" and a.prior == {}
    b = await store.acquire(APP, ID, "n2:b", 1, 0, 60_000, 10, "u")
    assert b.state == "held" and b.holder == "n1:a"
    await store.clock.advance(61)  # a is paused past its lease: b gets it, sees a's intent
    b = await store.acquire(APP, ID, "n2:b", 1, 0, 60_000, 10, "u")
    assert b.state == "got" and b.prior["node"] == "n1" and b.prior["ver"] == "1" and b.fence > a.fence
    ok, shared = await store.commit(APP, ID, "n1:a", 1, {"n": 1}, {"r:fp1": 600}, 3600)
    assert ok and shared.ver == 2  # Exact rotated for a: its pair is the valid one
    ok, shared = await store.commit(APP, ID, "n2:b", 1, {"n": 2}, {}, 3600)
    assert not ok and shared.rec == {"n": 1}
    assert (await store.find(APP, "r", "fp1")).id == ID


async def test_a_rotation_wins_over_an_annotation(store):
    ok, shared = await store.annotate(APP, ID, 1, {"n": "paused"}, 3600)
    assert ok and (shared.ver, shared.rev) == (1, 1)
    moved = await store.acquire(APP, ID, "n1:a", 1, 0, 60_000, 10, "u")
    assert moved.state == "moved" and moved.shared.rec == {"n": "paused"}
    assert (await store.acquire(APP, ID, "n1:a", 1, 1, 60_000, 10, "u")).state == "got"
    assert (await store.commit(APP, ID, "n1:a", 1, {"n": 1}, {}, 3600))[0]
    ok, shared = await store.annotate(APP, ID, 1, {"n": "late"}, 3600)  # written for the old version
    assert not ok and shared.ver == 2 and shared.rec == {"n": 1}
    assert await store.read(APP, ID, 2, 0) is None


async def test_token_calls_are_reserved_and_given_back(store):
    got = await store.acquire(APP, ID, "n1:a", 1, 0, 60_000, 1, "u")
    assert got.state == "got" and await store.calls_today(APP, "u") == 1
    await store.release(APP, ID, "n1:a", False, True, "u")  # never sent
    assert await store.calls_today(APP, "u") == 0
    assert (await store.acquire(APP, ID, "n1:a", 1, 0, 60_000, 1, "u")).state == "got"
    await store.release(APP, ID, "n1:a", False, False, "u")
    assert (await store.acquire(APP, ID, "n1:b", 1, 0, 60_000, 1, "u")).state == "spent"
    assert not await store.seed(APP, ID, {"n": "older"}, {}, 3600)  # never over a shared version

