"""What does exact-proxy cost? Throughput and latency of three paths, measured in the same run.

    python bench/overhead.py [--seconds 2] [--rounds 7] [--concurrency 32] [--latency-requests 400]

Paths, each server in its own process:
  direct   client -> upstream (a small aiohttp app answering an Exact-sized JSON page)
  bare     client -> a bare aiohttp pass-through (written here: the Python floor) -> upstream
  proxy    client -> exact-proxy (every filter in place) -> upstream

Prints requests/s at the given concurrency and p50/p99 latency at concurrency 1, and the ratios that
matter: proxy throughput / bare throughput (target >= 0.70) and proxy p50 - bare p50 (target <= 1 ms).
The machine is noisy; the ratios, not the absolute figures, are what the README records. The paths
take turns, round by round, so each round's ratio compares paths measured seconds apart; the figure
printed is the median of the rounds' ratios, with the lowest and highest. It also prints the CPU time
the bare pass-through and the proxy spend per request (from /proc, under the same load), a figure that
depends less on what else the machine is doing than throughput does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp
from aiohttp import web
from procstat import cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = json.dumps({"d": {"results": [{"ID": "8bc6f0b0-1a30-4b47-92bd-8a6f0c1f4f4e", "Name": "Acme B.V.",
                                        "City": "Delft", "Code": "     1001"}]}}).encode()


# --- servers (run in child processes) ----------------------------------------------------------------
def serve_upstream(port: int) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=SMALL, content_type="application/json", headers={
            "X-RateLimit-Minutely-Limit": "100000", "X-RateLimit-Minutely-Remaining": "99999"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_bare(port: int, upstream: str) -> None:
    """The floor: the least a correct streaming aiohttp pass-through does."""

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(auto_decompress=False)

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def handler(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "connection")}
        async with request.app["session"].request(request.method, upstream + request.raw_path,
                                                  headers=headers, data=request.content) as up:
            resp = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in ("transfer-encoding", "connection")})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- load ----------------------------------------------------------------------------------------------
async def throughput(url: str, seconds: float, concurrency: int, divisions: int = 1) -> float:
    count = 0
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def worker(i: int) -> None:
            nonlocal count
            mine = url.replace("/123456/", f"/{123456 + i % divisions}/")
            while time.perf_counter() < stop:
                async with s.get(mine, headers={"Accept": "application/json"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                count += 1

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return count / seconds


async def latency(url: str, n: int) -> tuple[float, float]:
    samples = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 20):
            t0 = time.perf_counter()
            async with s.get(url, headers={"Accept": "application/json"}) as r:
                await r.read()
            if i >= 20:  # warm-up
                samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url) as r:
                    await r.read()
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def write_policy(upstream: str, proxy_port: int) -> str:
    """The benchmarks' policies.yaml in a new temporary folder: every filter in place, with windows wide
    enough not to throttle the measurement, and no coalescing (the cost of each forwarded call)."""
    tmp = tempfile.mkdtemp(prefix="exact-proxy-bench-")
    policy = os.path.join(tmp, "policies.yaml")
    with open(policy, "w") as fh:
        fh.write(f"upstreams: {{bench: {{base_url: '{upstream}'}}}}\n"
                 f"listeners: [{{name: bench, port: {proxy_port}, upstream: bench}}]\n"
                 f"log: {{file: '{os.path.join(tmp, 'proxy.log')}'}}\nstate: {{path: '{tmp}/s.sqlite'}}\n"
                 "limits: {minutely: 100000000, daily: 1000000000}\n"
                 "coalesce: {enabled: false}\n")
    return policy


async def main(args: argparse.Namespace) -> None:
    up_port, bare_port, proxy_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    policy = write_policy(upstream, proxy_port)
    me = os.path.abspath(__file__)
    procs = [
        subprocess.Popen([sys.executable, me, "--serve-upstream", str(up_port)]),
        subprocess.Popen([sys.executable, me, "--serve-bare", str(bare_port), upstream]),
        subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", policy], cwd=ROOT,
                         stdout=subprocess.DEVNULL),
    ]
    path = "/api/v1/123456/crm/Accounts?$select=ID,Name&$filter=Name%20eq%20%27Acme%27"
    targets = {"direct": upstream + path, "bare": f"http://127.0.0.1:{bare_port}" + path,
               "proxy": f"http://127.0.0.1:{proxy_port}" + path}
    middle = {"bare": procs[1].pid, "proxy": procs[2].pid}  # whose CPU per request is measured
    try:
        for url in targets.values():
            await wait_up(url)
        rounds: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in targets}
        for url in targets.values():
            await throughput(url, 0.5, args.concurrency)  # warm-up
        for _ in range(args.rounds):  # interleaved, so drift in the machine's load hits every path alike
            for name, url in targets.items():
                cpu0 = cpu_seconds(middle[name]) if name in middle else 0.0
                rps = await throughput(url, args.seconds, args.concurrency, args.divisions)
                cpu_us = ((cpu_seconds(middle[name]) - cpu0) / (rps * args.seconds) * 1e6
                          if name in middle and rps else 0.0)
                p50, p99 = await latency(url, args.latency_requests)
                rounds[name].append((rps, p50, p99, cpu_us))
        results = {name: tuple(statistics.median(r[i] for r in rs) for i in range(4))
                   for name, rs in rounds.items()}
        ratios = sorted(p[0] / b[0] for p, b in zip(rounds["proxy"], rounds["bare"], strict=True))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    print(f"small JSON GET over {args.divisions} division(s), concurrency {args.concurrency}, {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s (medians); latency at concurrency 1")
    print(f"{'path':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}")
    for name, (rps, p50, p99, cpu_us) in results.items():
        cpu = f"{cpu_us:11.0f}" if name in middle else f"{'-':>11}"
        print(f"{name:8} {rps:9.0f} {p50:8.3f} {p99:8.3f} {cpu}")
    bare, proxy = results["bare"], results["proxy"]
    print(f"proxy/bare throughput: {statistics.median(ratios):.2f}   (target >= 0.70; median of "
          f"{len(ratios)} rounds, lowest {ratios[0]:.2f}, highest {ratios[-1]:.2f})")
    if bare[3] and proxy[3]:
        print(f"proxy/bare CPU per request: {proxy[3] / bare[3]:.2f}")
    print(f"proxy/direct throughput: {proxy[0] / results['direct'][0]:.2f}")
    print(f"proxy p50 added over bare: {proxy[1] - bare[1]:+.3f} ms   (target <= 1 ms)")
    print(f"proxy p50 added over direct: {proxy[1] - results['direct'][1]:+.3f} ms")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-upstream":
        serve_upstream(int(sys.argv[2]))
    elif len(sys.argv) > 3 and sys.argv[1] == "--serve-bare":
        serve_bare(int(sys.argv[2]), sys.argv[3])
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("--seconds", type=float, default=2.0)
        parser.add_argument("--rounds", type=int, default=7)
        parser.add_argument("--concurrency", type=int, default=32)
        parser.add_argument("--latency-requests", type=int, default=400)
        parser.add_argument("--divisions", type=int, default=1, help="spread the load over this many "
                            "divisions (the error headroom lets at most error_budget.budget calls per "
                            "endpoint and division be in flight at once)")
        asyncio.run(main(parser.parse_args()))
