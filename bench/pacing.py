"""Does a tool get its answers in time, and does a backlog still use every window? Pacing on and off.

    python bench/pacing.py [--factor 20] [--burst-divisions 18]

Each job runs twice in the same run, against the emulator, on one clock sped up ``factor`` times:
with ``limits.pace: 0.2`` (the default) and with ``pace: 0`` (the baseline, the old behaviour).

- **in a row**: one tool reads 70 times in a row with a 30 s read timeout (a common client default),
  starting on a minute boundary. Longest wait for one call, calls that would have timed out.
- **hammer**: 300 calls by 40 workers over two divisions, starting 30 s into a minute: done in 90 s is
  the physical limit (60 + 60 + 30 calls per division). Time to finish, share of each full window used
  (target >= 97%), upstream 429s (target 0).
- **release burst**: ``burst-divisions`` divisions with a full minute and 50 calls queued each; at the
  boundary they are all released while ``/_proxy/health`` is asked every 10 ms (real time). p50/p99 of
  health (target p99 < 100 ms), with the release spread over loop turns (default) and with every queue
  released at once (baseline).
Ratios are printed against the baseline of the same run; figures in clock seconds unless marked real.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from proxy.clock import ScaledClock  # noqa: E402

URL = "/api/v1/{div}/crm/Contacts?$select=ID&$top=1"


async def _proxy(clock, emu, extra: str):
    from proxy.http.server import ProxyServer
    from proxy.ops.logs import setup_logging
    from proxy.policy import load_policy
    from proxy.policy.watch import PolicyHolder

    tmp = tempfile.mkdtemp(prefix="exact-proxy-bench-")
    path = os.path.join(tmp, "policies.yaml")
    with open(path, "w") as fh:
        fh.write(f"upstreams: {{emu: {{base_url: '{emu.base_url}'}}}}\n"
                 "listeners: [{name: b, port: 0, upstream: emu}]\n"
                 f"log: {{file: '{tmp}/proxy.log'}}\nstate: {{path: '{tmp}/s.sqlite'}}\n" + extra)
    policy = load_policy(path)
    setup_logging(policy.log, None, stream=open(os.devnull, "w"))  # noqa: SIM115
    proxy = ProxyServer(PolicyHolder(policy, path), clock)
    await proxy.start()
    return proxy


async def _setup(factor: float, extra: str):
    """The emulator and the proxy on one clock sped up ``factor`` times; headers with a valid token."""
    from proxy.emulator.runner import start_emulator

    clock = ScaledClock(factor)
    emu = await start_emulator(clock=clock)
    proxy = await _proxy(clock, emu, extra)
    token = emu.state.issue_tokens("test-app")["access_token"]
    return clock, emu, proxy, {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def _until_minute(clock, offset: float) -> float:
    await clock.sleep(math.ceil(clock.time() / 60) * 60 - clock.time() + offset)
    return clock.time()


async def in_a_row(factor: float, pace: float) -> dict:
    clock, emu, proxy, h = await _setup(factor, f"limits: {{pace: {pace}, probe: false}}\ncoalesce: {{enabled: false}}\n")
    waits = []
    async with aiohttp.ClientSession() as s:
        await _until_minute(clock, 0.05)
        t0 = clock.time()
        for _ in range(70):
            t = clock.time()
            async with s.get(proxy.url("b") + URL.format(div=11), headers=h) as r:
                await r.read()
                assert r.status == 200, r.status
            waits.append(clock.time() - t)
    await proxy.stop()
    await emu.stop()
    return {"longest": max(waits), "timed_out": sum(w > 30 for w in waits), "total": clock.time() - t0}


async def hammer(factor: float, pace: float) -> dict:
    clock, emu, proxy, h = await _setup(factor, f"limits: {{pace: {pace}, max_wait: 600}}\ncoalesce: {{enabled: false}}\n")
    done: list[tuple[int, float]] = []
    calls = [21 + i % 2 for i in range(300)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        t0 = await _until_minute(clock, 30)

        async def worker() -> None:
            while calls:
                div = calls.pop()
                async with s.get(proxy.url("b") + URL.format(div=div), headers=h) as r:
                    await r.read()
                    assert r.status == 200, r.status
                done.append((div, clock.time()))

        await asyncio.gather(*(worker() for _ in range(40)))
    # windows that the backlog filled completely: the first (30 s) and the second (60 s) of each division
    first_end = math.floor(t0 / 60) * 60 + 60
    used = [sum(1 for d, t in done if d == div and first_end <= t < first_end + 60) for div in (21, 22)]
    result = {"total": max(t for _, t in done) - t0, "full_window_used": min(used) / 60,
              "upstream_429": emu.state.count(outcome="minutely_429")}
    await proxy.stop()
    await emu.stop()
    return result


async def release_burst(factor: float, divisions: int, spread: bool) -> dict:
    # a slow clock, so that filling and queueing fit in one minute
    clock, emu, proxy, h = await _setup(factor, "limits: {pace: 0, probe: false, max_wait: 600}\ncoalesce: {enabled: false}\n")
    book = next(f for f in proxy.services.filters if f.name == "call_budget").book
    if not spread:
        book.turns.per_turn = 10 ** 9  # the baseline: every queue released at once
        book.turns.left = book.turns.per_turn
    base = proxy.url("b")
    health: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await _until_minute(clock, 1)

        async def call(div: int) -> None:
            async with s.get(base + URL.format(div=div), headers=h) as r:
                await r.read()

        for d in range(divisions):  # fill each division's minute
            await asyncio.gather(*(call(500 + d) for _ in range(60)))
        queued = [asyncio.ensure_future(call(500 + d)) for d in range(divisions) for _ in range(50)]
        while sum(len(x.waiters) for x in book.divisions.values()) < len(queued):
            assert not any(q.done() for q in queued), "a call meant to queue was answered at once"
            await asyncio.sleep(0.01)
        boundary = math.ceil(clock.time() / 60) * 60

        async def probe() -> None:
            async with aiohttp.ClientSession() as hs:
                while not all(q.done() for q in queued):
                    t = time.perf_counter()
                    async with hs.get(base + "/_proxy/health") as r:
                        await r.read()
                    if clock.time() >= boundary - 0.5:
                        health.append((time.perf_counter() - t) * 1000)
                    await asyncio.sleep(0.01)

        await asyncio.gather(probe(), *queued)
    await proxy.stop()
    await emu.stop()
    health.sort()
    return {"p50": statistics.median(health), "p99": health[min(len(health) - 1, int(len(health) * 0.99))],
            "released": len(queued)}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factor", type=float, default=20)
    ap.add_argument("--burst-divisions", type=int, default=18)  # 900 queued: below clients.max_connections
    a = ap.parse_args()
    on, off = await in_a_row(a.factor, 0.2), await in_a_row(a.factor, 0)
    print(f"in a row (70 reads, 30 s timeout; clock x{a.factor:g})")
    print(f"  paced:   longest wait {on['longest']:.1f} s, timed out {on['timed_out']}, total {on['total']:.0f} s")
    print(f"  unpaced: longest wait {off['longest']:.1f} s, timed out {off['timed_out']}, total {off['total']:.0f} s")
    print(f"  longest wait paced/unpaced: {on['longest'] / off['longest']:.2f}")
    on, off = await hammer(a.factor, 0.2), await hammer(a.factor, 0)
    print("hammer (300 calls, 40 workers, 2 divisions, from 30 s into a minute; physical limit 90 s)")
    for name, r in (("paced", on), ("unpaced", off)):
        print(f"  {name + ':':9}done in {r['total']:.0f} s, full window used {r['full_window_used']:.0%}, "
              f"upstream 429s {r['upstream_429']}")
    print(f"  time paced/unpaced: {on['total'] / off['total']:.2f}   (target: full windows >= 97%, 0 429s)")
    on, off = (await release_burst(2, a.burst_divisions, True),
               await release_burst(2, a.burst_divisions, False))
    print(f"release burst ({on['released']} queued calls in {a.burst_divisions} divisions at one boundary; "
          "clock x2; health every 10 ms, real ms)")
    print(f"  spread over loop turns: health p50 {on['p50']:.1f} ms, p99 {on['p99']:.1f} ms   (target p99 < 100)")
    print(f"  all at once:            health p50 {off['p50']:.1f} ms, p99 {off['p99']:.1f} ms")
    print(f"  p99 spread/at once: {on['p99'] / off['p99']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
