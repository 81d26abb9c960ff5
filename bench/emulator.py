"""Is the emulator ever the bottleneck? Throughput of small authenticated GETs, against a bare aiohttp floor.

    python bench/emulator.py [--seconds 2] [--rounds 5] [--concurrency 8]

Two servers, each in its own process:
  emulator  the Exact Online emulator (limits raised so no call gets a 429), answering
            GET /api/v1/1/crm/Accounts(guid'…') with Accept: application/json (token checked, minute and
            day windows counted, error limit consulted, statistics recorded, headers added)
  bare      a bare aiohttp handler returning the very bytes the emulator returned for that call
One client process (this one) with one aiohttp ClientSession and ``--concurrency`` coroutines hits each
server in turn, interleaved for ``--rounds`` rounds of ``--seconds`` each. Prints the median req/s of each
and the ratio emulator / bare. On a small machine the client itself may be the limit; so it also prints the
server process's CPU time per request (from /proc, Linux) and the req/s one core would give at that cost,
which is what says whether the emulator could become a benchmark's bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import time
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from procstat import cpu_seconds

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_emulator(port: int) -> None:
    from proxy.emulator import EmulatorConfig, create_app

    config = EmulatorConfig(minutely_limit=10**9, daily_limit=10**9)
    web.run_app(create_app(config), host="127.0.0.1", port=port, print=None, access_log=None)


def serve_bare(port: int, body: bytes, content_type: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(200):
            try:
                async with s.get(url) as r:
                    await r.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
    raise SystemExit(f"{url} did not come up")


async def get_token(base: str) -> str:
    async with aiohttp.ClientSession() as s:
        q = "client_id=demo-app&redirect_uri=http://localhost/cb&response_type=code"
        async with s.get(f"{base}/api/oauth2/auth?{q}", allow_redirects=False) as r:
            code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
        async with s.post(f"{base}/api/oauth2/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost/cb",
                "client_id": "demo-app", "client_secret": "demo-secret"}) as r:
            return (await r.json())["access_token"]


async def load(session: aiohttp.ClientSession, url: str, headers: dict, seconds: float, concurrency: int) -> float:
    done = 0
    bad = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, bad
        while time.perf_counter() < end:
            async with session.get(url, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    bad += 1
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if bad:
        raise SystemExit(f"{bad} answers were not 200 on {url}")
    return done / (time.perf_counter() - t0)


async def main(args: argparse.Namespace) -> None:
    ctx = multiprocessing.get_context("spawn")
    eport, bport = free_port(), free_port()
    emu = ctx.Process(target=serve_emulator, args=(eport,), daemon=True)
    emu.start()
    bare = None
    try:
        ebase = f"http://127.0.0.1:{eport}"
        await wait_up(ebase + "/_emulator/stats")
        token = await get_token(ebase)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{ebase}/api/v1/1/crm/Accounts", headers=headers, params={
                    "$filter": "ID ne guid'00000000-0000-0000-0000-000000000000'", "$top": "1",
                    "$select": "ID"}) as r:
                gid = (await r.json())["d"]["results"][0]["ID"]
            path = f"/api/v1/1/crm/Accounts(guid'{gid}')"
            async with s.get(ebase + path, headers=headers) as r:
                sample, ctype = await r.read(), r.headers["Content-Type"]
        bare = ctx.Process(target=serve_bare, args=(bport, sample, ctype), daemon=True)
        bare.start()
        bbase = f"http://127.0.0.1:{bport}"
        await wait_up(bbase + "/")
        print(f"GET {path}  ({len(sample)} bytes JSON), concurrency {args.concurrency}, "
              f"{args.rounds} rounds of {args.seconds:g} s")
        results: dict[str, list[float]] = {"emulator": [], "bare": []}
        cpu: dict[str, list[float]] = {"emulator": [], "bare": []}
        pids = {"emulator": emu.pid, "bare": bare.pid}
        connector = aiohttp.TCPConnector(limit=args.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await load(session, ebase + path, headers, 0.5, args.concurrency)   # warm-up
            await load(session, bbase + path, headers, 0.5, args.concurrency)
            for i in range(args.rounds):
                order = [("emulator", ebase), ("bare", bbase)]
                for name, base in order if i % 2 == 0 else order[::-1]:
                    c0, t0 = cpu_seconds(pids[name]), time.perf_counter()
                    rate = await load(session, base + path, headers, args.seconds, args.concurrency)
                    used = cpu_seconds(pids[name]) - c0
                    results[name].append(rate)
                    cpu[name].append(used / (rate * (time.perf_counter() - t0)) * 1e6 if used else 0.0)
        em, bm = statistics.median(results["emulator"]), statistics.median(results["bare"])
        for name, vals in results.items():
            us = statistics.median(cpu[name])
            per_core = f"  (~{1e6 / us:.0f} req/s per core)" if us else ""
            print(f"  {name:9s} median {statistics.median(vals):8.0f} req/s   server CPU {us:5.0f} us/request"
                  f"{per_core}   rounds: " + " ".join(f"{v:.0f}" for v in vals))
        print(f"  ratio emulator / bare: {em / bm:.2f} (throughput)"
              + (f", {statistics.median(cpu['bare']) / statistics.median(cpu['emulator']):.2f} (CPU per request)"
                 if statistics.median(cpu["emulator"]) else ""))
    finally:
        for p in (emu, bare):
            if p is not None:
                p.terminate()
                p.join(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
