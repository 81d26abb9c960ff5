"""What does an open dashboard cost the proxy? The overhead benchmark's load, with and without pages open.

    python bench/dashboard.py [--seconds 2] [--rounds 7] [--concurrency 32] [--pages 3] [--divisions 20]

One upstream and one exact-proxy (every filter in place, as in ``bench/overhead.py``), each in its own
process. Each round measures the proxy twice, seconds apart: ``closed`` with no page open, then ``open``
with ``--pages`` dashboard pages following ``/_proxy/events`` (held by a separate process, so reading the
feed does not slow the load generator; each page's traffic after it loads is that one stream). The load
spreads over ``--divisions`` divisions and a few requests a round are errors and refusals, so the glance
the proxy builds every second has rows and recent decisions to carry.

Prints req/s at the given concurrency, p50 latency at concurrency 1 and the proxy's CPU per request for
both, their ratios (median of the rounds, lowest and highest: these machines are noisy; the ratio is the
figure, as in the overhead benchmark), the glance's size and the time ``/_proxy/glance`` takes to answer.
The goal: open/closed throughput within the rounds' own spread (noise), no more than a few percent.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import aiohttp
from overhead import ROOT, free_port, latency, throughput, wait_up, write_policy
from procstat import cpu_seconds


def hold_pages(url: str, pages: int) -> None:
    """A child process: ``pages`` streams of ``/_proxy/events``, read until killed."""

    async def page(s: aiohttp.ClientSession) -> None:
        async with s.get(url + "/_proxy/events") as r:
            async for _ in r.content:
                pass

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await asyncio.gather(*(page(s) for _ in range(pages)))

    asyncio.run(main())


async def first_message(url: str) -> None:
    async with aiohttp.ClientSession() as s, s.get(url + "/_proxy/events") as r:
        async for line in r.content:
            if line.startswith(b"data:"):
                return


async def glance_cost(url: str, n: int = 30) -> tuple[float, int]:
    samples, size = [], 0
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.get(url + "/_proxy/glance") as r:
                size = len(await r.read())
            samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples), size


async def variety(url: str, divisions: int) -> None:
    """Rows and decisions for the glance: every division read once, a few errors and refusals."""
    async with aiohttp.ClientSession() as s:
        for i in range(divisions):
            async with s.get(url.replace("/123456/", f"/{123456 + i}/")) as r:
                await r.read()
        for path in ("/api/v1/123456/crm/Accounts(guid'x')", "/api/v1/abc/crm/Accounts", "/api/v1/1/crm/Nope"):
            async with s.get(url.split("/api/")[0] + path) as r:
                await r.read()


async def main(args: argparse.Namespace) -> None:
    up_port, proxy_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    policy = write_policy(upstream, proxy_port)
    overhead = os.path.join(os.path.dirname(os.path.abspath(__file__)), "overhead.py")
    proxy = subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", policy], cwd=ROOT,
                             stdout=subprocess.DEVNULL)
    procs = [subprocess.Popen([sys.executable, overhead, "--serve-upstream", str(up_port)]), proxy]
    base = f"http://127.0.0.1:{proxy_port}"
    url = base + "/api/v1/123456/crm/Accounts?$select=ID,Name&$filter=Name%20eq%20%27Acme%27"
    rounds: dict[str, list[tuple[float, float, float]]] = {"closed": [], "open": []}
    try:
        await wait_up(upstream + "/")
        await wait_up(url)
        await variety(url, args.divisions)
        await throughput(url, 0.5, args.concurrency, args.divisions)  # warm-up
        build_ms, size = await glance_cost(base)
        for _ in range(args.rounds):
            for state in ("closed", "open"):
                pages = None
                if state == "open":
                    pages = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--hold-pages", base,
                                              str(args.pages)])
                    await first_message(base)
                    await asyncio.sleep(1.1)  # the pages are following the feed
                cpu0 = cpu_seconds(proxy.pid)
                rps = await throughput(url, args.seconds, args.concurrency, args.divisions)
                cpu_us = (cpu_seconds(proxy.pid) - cpu0) / (rps * args.seconds) * 1e6 if rps else 0.0
                p50, _ = await latency(url, args.latency_requests)
                rounds[state].append((rps, p50, cpu_us))
                if pages is not None:
                    pages.terminate()
                    pages.wait(10)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    med = {s: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for s, rs in rounds.items()}
    print(f"small JSON GET over {args.divisions} divisions, concurrency {args.concurrency}, {args.rounds} rounds "
          f"of {args.seconds:g} s each way (medians); {args.pages} pages open in 'open'")
    print(f"{'pages':8} {'req/s':>9} {'p50 ms':>8} {'CPU us/req':>11}")
    for state, (rps, p50, cpu_us) in med.items():
        print(f"{state:8} {rps:9.0f} {p50:8.3f} {cpu_us:11.0f}")
    tput = sorted(o[0] / c[0] for o, c in zip(rounds["open"], rounds["closed"], strict=True))
    cpu = sorted(o[2] / c[2] for o, c in zip(rounds["open"], rounds["closed"], strict=True) if c[2])
    closed = sorted(r[0] for r in rounds["closed"])
    spread = (closed[-1] - closed[0]) / statistics.median(closed) if closed else 0.0
    print(f"open/closed throughput: {statistics.median(tput):.2f}   (lowest {tput[0]:.2f}, highest {tput[-1]:.2f}; "
          f"the closed rounds alone spread {spread:.0%})")
    if cpu:
        print(f"open/closed CPU per request: {statistics.median(cpu):.2f}")
    print(f"open - closed p50: {med['open'][1] - med['closed'][1]:+.3f} ms")
    print(f"glance: {size} bytes, /_proxy/glance answers in {build_ms:.2f} ms (median, idle proxy); built once a "
          f"second while a page is open, whatever the number of pages")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--hold-pages":
        hold_pages(sys.argv[2], int(sys.argv[3]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("--seconds", type=float, default=2.0)
        parser.add_argument("--rounds", type=int, default=7)
        parser.add_argument("--concurrency", type=int, default=32)
        parser.add_argument("--latency-requests", type=int, default=300)
        parser.add_argument("--pages", type=int, default=3)
        parser.add_argument("--divisions", type=int, default=20)
        asyncio.run(main(parser.parse_args()))
