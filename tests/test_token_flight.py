"""Single flight and remembered refusals (``proxy.tokens.flight``), without sockets."""

from __future__ import annotations

import asyncio

import pytest

from proxy.tokens.flight import Flights, Refusals, Refused, remembered


async def test_concurrent_callers_share_one_flight():
    calls = 0
    gate = asyncio.Event()

    async def make():
        nonlocal calls
        calls += 1
        await gate.wait()
        return calls

    flights: Flights[int] = Flights()
    tasks = [asyncio.ensure_future(flights.run("k", make)) for _ in range(5)]
    await asyncio.sleep(0)
    assert flights.running("k")
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1
    assert [r[0] for r in results] == [1] * 5
    assert [r[1] for r in results] == [False] + [True] * 4
    assert not flights.running("k")
    assert (await flights.run("k", make)) == (2, False)  # a new flight after the last one ended


async def test_a_flight_finishes_when_its_caller_goes_away():
    done = asyncio.Event()
    gate = asyncio.Event()

    async def make():
        await gate.wait()
        done.set()  # the rotation is recorded although nobody waits any more
        return "rotated"

    flights: Flights[str] = Flights()
    first = asyncio.ensure_future(flights.run("k", make))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    joined = asyncio.ensure_future(flights.run("k", make))
    gate.set()
    assert await joined == ("rotated", True)
    assert done.is_set()


def test_refusals_expire_and_keep_the_newest():
    r = Refusals(ttl=10, limit=2)
    for i in range(3):
        r.put((f"t{i}", "c"), Refused(400, {"error": "invalid_grant"}, {}, 100.0))
    assert len(r) == 2 and r.get(("t0", "c"), 101) is None
    assert r.get(("t2", "c"), 105).status == 400
    assert r.get(("t2", "c"), 111) is None


@pytest.mark.parametrize("status,body,kept", [
    (400, {"error": "invalid_grant"}, True),
    (401, {"error": "unauthorized_client", "error_description": "Old refresh token used."}, True),
    (400, {"error": "access_denied", "error_description": "Rate limit exceeded: access_token not expired"}, False),
    (400, {"error": "invalid_request", "error_description": "Rate limit exceeded: access_token not expired"}, False),
    (429, {"error": "access_denied"}, False),
    (503, {}, False),
])
def test_only_final_refusals_are_remembered(status, body, kept):
    assert remembered(status, body) is kept
