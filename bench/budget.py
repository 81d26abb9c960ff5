"""Does the call budget use what Exact allows, and does it scale with the number of divisions?

    python bench/budget.py [--factor 20] [--divisions 10] [--minutes 3] [--requests 3000] [--rounds 5]
                           [--part 1|2|both]

Part 1, utilisation: the emulator and the proxy share one clock sped up ``factor`` times. For each of
10 divisions a client offers twice the allowed rate (120 calls a minute against Exact's 60) for three
clock minutes, starting on a minute boundary. Prints utilisation = calls Exact accepted in those
minutes / calls Exact allowed (target >= 97%) and the upstream 429s (target 0).

Part 2, scale: two proxies (real ``exact-proxy run`` processes) in front of one emulator (``exact-proxy
emulate``) with limits wide open; one has seen 10,000 divisions, the baseline 10. Both serve the same
load over 10 divisions in alternating rounds; CPU per request (median) and RSS of each, and their
ratios. Target: CPU per request does not grow (ratio ~1.0), RSS < 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import ROOT, free_port, wait_up  # noqa: E402
from procstat import cpu_seconds, rss_mb

from proxy.clock import ScaledClock  # noqa: E402


async def utilisation(factor: float, divisions: int, minutes: int) -> None:
    from proxy.emulator.runner import start_emulator
    from proxy.http.server import ProxyServer
    from proxy.ops.logs import setup_logging
    from proxy.policy import load_policy
    from proxy.policy.watch import PolicyHolder

    clock = ScaledClock(factor)
    emu = await start_emulator(clock=clock)
    tmp = tempfile.mkdtemp(prefix="exact-proxy-bench-")
    path = os.path.join(tmp, "policies.yaml")
    with open(path, "w") as fh:
        fh.write(f"upstreams: {{emu: {{base_url: '{emu.base_url}'}}}}\n"
                 "listeners: [{name: b, port: 0, upstream: emu}]\n"
                 f"log: {{file: '{tmp}/proxy.log'}}\nstate: {{path: '{tmp}/s.sqlite'}}\n")
    policy = load_policy(path)
    setup_logging(policy.log, None, stream=open(os.devnull, "w"))  # noqa: SIM115
    proxy = ProxyServer(PolicyHolder(policy, path), clock)
    await proxy.start()
    token = emu.state.issue_tokens("test-app")["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    base = proxy.url("b")
    # start on a clock-minute boundary, so that `minutes` whole windows are measured
    await clock.sleep(math.ceil(clock.time() / 60) * 60 - clock.time() + 0.01)
    start = clock.time()
    end = start + minutes * 60
    interval = 60.0 / 120  # twice the allowed 60 a minute
    stats = {"ok": 0, "429": 0, "other": 0}

    async def client(session: aiohttp.ClientSession, div: int) -> None:
        tasks = []

        async def one() -> None:
            try:
                async with session.get(f"{base}/api/v1/{div}/crm/Contacts?$select=ID&$top=1", headers=headers) as r:
                    await r.read()
                    stats["ok" if r.status == 200 else "429" if r.status == 429 else "other"] += 1
            except aiohttp.ClientError:
                stats["other"] += 1

        while clock.time() < end:
            tasks.append(asyncio.ensure_future(one()))  # open loop: the tool does not wait for answers
            await clock.sleep(interval)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def accepted_now() -> int:
        return sum(n for (app, d, e, o), n in emu.state.counter.counts.items() if o == "ok" and d is not None)

    marks = {}

    async def mark() -> None:
        marks["start"] = accepted_now()
        await clock.sleep(end - clock.time())
        marks["end"] = accepted_now()  # calls still queued after the last window are not counted

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await asyncio.gather(mark(), *(client(s, 1000 + i) for i in range(divisions)))
    accepted = marks["end"] - marks["start"]
    upstream_429 = emu.state.count(outcome="minutely_429") + emu.state.count(outcome="daily_429")
    allowed = divisions * 60 * minutes
    await proxy.stop()
    await emu.stop()
    print(f"part 1: {divisions} divisions at twice the limit for {minutes} clock minutes (clock x{factor:g})")
    print(f"  offered {divisions * 120 * minutes}, Exact allowed {allowed}, Exact accepted {accepted}")
    print(f"  utilisation: {accepted / allowed:.1%}   (target >= 97%)")
    print(f"  upstream 429s: {upstream_429}   (target 0)")


async def _load(url: str, headers: dict, divisions: list[int], n: int, concurrency: int = 32) -> float:
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def one(i: int) -> None:
            async with sem, s.get(f"{url}/api/v1/{divisions[i % len(divisions)]}/crm/Contacts?$select=ID&$top=1",
                                  headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status

        await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0


async def _token(url: str) -> str:
    """A token the proxy learns as a chain, as a tool would get it."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{url}/api/oauth2/auth?client_id=test-app&response_type=code"
                         "&redirect_uri=http%3A%2F%2Flocalhost%2Fcb", allow_redirects=False) as r:
            code = r.headers["Location"].split("code=")[1].split("&")[0]
        async with s.post(f"{url}/api/oauth2/token", data={
                "grant_type": "authorization_code", "code": code, "redirect_uri": "http://localhost/cb",
                "client_id": "test-app", "client_secret": "test-secret"}) as r:
            return (await r.json())["access_token"]


def _start_proxy(tmp: str, name: str, emu_port: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    path = os.path.join(tmp, f"{name}.yaml")
    with open(path, "w") as fh:
        fh.write(f"upstreams: {{emu: {{base_url: 'http://127.0.0.1:{emu_port}'}}}}\n"
                 f"listeners: [{{name: b, port: {port}, upstream: emu}}]\n"
                 f"log: {{file: '{tmp}/{name}.log'}}\nstate: {{path: '{tmp}/{name}.sqlite'}}\n"
                 "limits: {minutely: 100000000, daily: 1000000000}\n"
                 "coalesce: {enabled: false}\n")  # the cost of each forwarded call, none shared
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", path], cwd=ROOT,
                            stdout=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


async def scale(requests: int, rounds: int = 5) -> None:
    """Two proxy processes in front of one emulator: the baseline tracks 10 divisions, the other 10,000.
    Both then serve the same load over the same 10 divisions, in alternating rounds (ABBA...), so drift
    and noise fall on both alike; the medians are compared."""
    tmp = tempfile.mkdtemp(prefix="exact-proxy-bench-")
    emu_port = free_port()
    with open(os.path.join(tmp, "emulator.yaml"), "w") as fh:
        fh.write("minutely_limit: 100000000\ndaily_limit: 1000000000\nrows: {crm/contacts: 5}\n")
    emu = subprocess.Popen([sys.executable, "-m", "proxy", "emulate", "--port", str(emu_port), "--config",
                            os.path.join(tmp, "emulator.yaml")], cwd=ROOT, stdout=subprocess.DEVNULL)
    procs = {label: _start_proxy(tmp, name, emu_port) for label, name in (("10", "base"), ("10,000", "many"))}
    ten = list(range(1, 11))
    cpu: dict[str, list[float]] = {label: [] for label in procs}
    rps: dict[str, list[float]] = {label: [] for label in procs}
    try:
        headers = {}
        for label, (_proc, url) in procs.items():
            await wait_up(url + "/_proxy/health")
            headers[label] = {"Authorization": f"Bearer {await _token(url)}", "Accept": "application/json"}
            await _load(url, headers[label], ten, 500)  # warm-up
        proc, url = procs["10,000"]
        await _load(url, headers["10,000"], list(range(100, 10100)), 10_000, 64)  # now it tracks 10,000
        await asyncio.sleep(2)  # the state store writes them behind; let that settle
        order = list(procs)
        for r in range(rounds):
            for label in (order if r % 2 == 0 else order[::-1]):
                proc, url = procs[label]
                cpu0 = cpu_seconds(proc.pid)
                took = await _load(url, headers[label], ten, requests)
                cpu[label].append((cpu_seconds(proc.pid) - cpu0) / requests * 1e6)
                rps[label].append(requests / took)
        rss = {label: rss_mb(proc.pid) for label, (proc, _) in procs.items()}
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        emu.terminate()
        for p in [proc for proc, _ in procs.values()] + [emu]:
            p.wait(10)
    med = {label: statistics.median(v) for label, v in cpu.items()}
    print(f"part 2: proxy CPU per request and RSS, two proxies, {rounds} alternating rounds of {requests} "
          "requests over 10 divisions (medians)")
    for label in procs:
        print(f"  tracking {label:>6} divisions  CPU {med[label]:6.0f} us/request  "
              f"{statistics.median(rps[label]):6.0f} req/s  RSS {rss[label]:5.1f} MB   "
              f"(rounds: {', '.join(f'{c:.0f}' for c in cpu[label])})")
    print(f"  CPU per request, 10,000 / 10 divisions: {med['10,000'] / med['10']:.2f}   (target ~1.0)")
    print(f"  RSS, 10,000 / 10 divisions: {rss['10,000'] / rss['10']:.2f}; with 10,000: {rss['10,000']:.1f} MB"
          "   (target < 150 MB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factor", type=float, default=20.0)
    parser.add_argument("--divisions", type=int, default=10)
    parser.add_argument("--minutes", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part", choices=("1", "2", "both"), default="both")
    args = parser.parse_args()
    if args.part in ("1", "both"):
        asyncio.run(utilisation(args.factor, args.divisions, args.minutes))
    if args.part in ("2", "both"):
        asyncio.run(scale(args.requests, args.rounds))
