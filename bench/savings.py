"""Fewer calls for the same answers: three tools polling the same three lists, coalescing and the
cache on against off.

    python bench/savings.py [--factor 20] [--minutes 10] [--every 5] [--tools 3]

The emulator and the proxy share one clock sped up ``factor`` times; Exact's answers take 0.5 s of
that clock (a ``slow`` fault). ``tools`` tools start together and each polls the same three lists
every ``every`` seconds (plus up to 0.3 s of jitter) for ``minutes`` clock minutes: ``current/Me``,
``system/Divisions`` and ``crm/Contacts`` (60 rows). Run twice in the same run: with coalescing on and
``cache: [{endpoint: system/divisions, ttl: 3600}, {endpoint: current/me, ttl: 300}]`` (crm/Contacts is
only coalesced), and the baseline with ``coalesce: {enabled: false}`` and no cache. Prints the answers
the tools got per call Exact received, per list and in all, and the ratio on / off. Exit status 1 when
answers per Exact call with both on is below 3 (the goal with three tools).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pacing import _proxy  # noqa: E402

from proxy.clock import ScaledClock  # noqa: E402

DIVISION = 101
LISTS = {"current/me": "/api/v1/current/Me",
         "system/divisions": f"/api/v1/{DIVISION}/system/Divisions",
         "crm/contacts": f"/api/v1/{DIVISION}/crm/Contacts?$select=ID,FullName&$top=60"}
ON = ("coalesce: {enabled: true}\n"
      "cache: [{endpoint: system/divisions, ttl: 3600}, {endpoint: current/me, ttl: 300}]\n")
OFF = "coalesce: {enabled: false}\n"
GOAL = 3.0


async def run(factor: float, minutes: float, every: float, tools: int, extra: str) -> dict[str, tuple[int, int]]:
    """(answers to the tools, calls Exact received) per list."""
    from proxy.emulator import EmulatorConfig
    from proxy.emulator.runner import start_emulator

    clock = ScaledClock(factor)
    emu = await start_emulator(EmulatorConfig.from_dict({"minutely_limit": 1000, "faults": [
        {"path": "/api/v1/*", "kind": "slow", "delay": 0.5, "every": 1}]}), clock=clock)
    proxy = await _proxy(clock, emu, "limits: {minutely: 1000}\n" + extra)
    token = emu.state.issue_tokens("test-app")["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    base = proxy.url("b")
    answers = dict.fromkeys(LISTS, 0)
    rng = random.Random(1)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async with s.get(base + LISTS["crm/contacts"] + "&warm=up", headers=headers) as r:
            assert r.status == 200, r.status  # the division's first call is the probe: not measured
        emu.state.counter.counts.clear()
        end = clock.time() + minutes * 60

        async def poll(name: str, path: str) -> None:
            await clock.sleep(rng.uniform(0, 0.3))
            async with s.get(base + path, headers=headers) as r:
                await r.read()
                if r.status == 200:
                    answers[name] += 1

        async def tool() -> None:
            tasks = []
            while clock.time() < end:
                tasks += [asyncio.ensure_future(poll(n, p)) for n, p in LISTS.items()]
                await clock.sleep(every)
            await asyncio.gather(*tasks)

        await asyncio.gather(*(tool() for _ in range(tools)))
    calls = {name: emu.state.count(endpoint=name) for name in LISTS}
    await proxy.stop()
    await emu.stop()
    return {name: (answers[name], calls[name]) for name in LISTS}


def _ratio(answers: int, calls: int) -> float:
    return answers / calls if calls else float("inf")


async def main(args: argparse.Namespace) -> int:
    on = await run(args.factor, args.minutes, args.every, args.tools, ON)
    off = await run(args.factor, args.minutes, args.every, args.tools, OFF)
    print(f"{args.tools} tools polling {len(LISTS)} lists every {args.every:g} s for {args.minutes:g} clock minutes "
          f"(clock x{args.factor:g}; Exact answers in 0.5 s)")
    print(f"  {'list':18} {'on: answers/calls':>20} {'off: answers/calls':>20}")
    for name in LISTS:
        (a1, c1), (a0, c0) = on[name], off[name]
        print(f"  {name:18} {a1:6} / {c1:4} = {_ratio(a1, c1):5.1f} {a0:6} / {c0:4} = {_ratio(a0, c0):5.1f}")
    a1, c1 = sum(a for a, _ in on.values()), sum(c for _, c in on.values())
    a0, c0 = sum(a for a, _ in off.values()), sum(c for _, c in off.values())
    with_on, with_off = _ratio(a1, c1), _ratio(a0, c0)
    print(f"  answers per Exact call: on {with_on:.2f} ({a1} / {c1}), off {with_off:.2f} ({a0} / {c0}); "
          f"ratio on / off {with_on / with_off:.2f}   (goal: on >= {GOAL:g})")
    if with_on < GOAL:
        print(f"  GOAL MISSED: {with_on:.2f} answers per Exact call < {GOAL:g}")
        return 1
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factor", type=float, default=20.0)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--tools", type=int, default=3)
    sys.exit(asyncio.run(main(parser.parse_args())))
