"""What does cluster mode cost, and does it keep Exact's limits? Measured in one run, against baselines
measured in the same run.

    python bench/cluster.py [--seconds 2] [--rounds 5] [--concurrency 32] [--latency-requests 300]
                            [--minutes 3] [--factor 30]

1. Per-call cost: a single-node proxy (SQLite) against a cluster-mode proxy (one node on a real
   valkey-server), in front of a fast upstream, in interleaved rounds: p50 at concurrency 1 (target: at
   most 1 ms added per forwarded call) and requests/s at ``--concurrency`` over 8 divisions.
2. Three nodes against one: the same load spread round robin over three cluster nodes, against one
   cluster node (on this 2-core machine the nodes share the CPU: this shows the coordination does not
   serialise them).
3. Utilisation at twice the limit: three nodes in front of the emulator (60 calls a minute, on a clock
   sped up ``--factor`` times), 40 tools asking for twice what Exact allows for ``--minutes`` minutes:
   upstream 429s (target 0) and the share of each full minute used (target at least 97 %).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web
from overhead import free_port, latency, serve_upstream, throughput, wait_up

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.clock import ScaledClock  # noqa: E402
from proxy.emulator import EMULATOR, EmulatorConfig, create_app  # noqa: E402
from proxy.tokens.sealing import new_key  # noqa: E402
from tests.support.valkey import Server  # noqa: E402

KEY = new_key()
WIDE = "limits: {minutely: 100000000, daily: 1000000000, max_wait: 900}\ncoalesce: {enabled: false}\n"  # per call


def _policy(tmp: str, name: str, port: int, upstream: str, redis_url: str | None, extra: str = WIDE) -> str:
    path = os.path.join(tmp, f"{name}.yaml")
    cluster = f"cluster: {{redis_url: '{redis_url}', node: {name}}}\n" if redis_url else ""
    with open(path, "w") as fh:
        fh.write(f"upstreams: {{up: {{base_url: '{upstream}'}}}}\n"
                 f"listeners: [{{name: l, port: {port}, upstream: up}}]\n"
                 f"log: {{file: '{tmp}/{name}.log'}}\nstate: {{path: '{tmp}/{name}.sqlite'}}\n" + extra + cluster)
    return path


def _proxy(policy: str, clock: ScaledClock | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EXACT_PROXY_TOKEN_KEY": KEY}
    if clock is not None:
        env["EXACT_PROXY_CLOCK"] = clock.text()
    return subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", policy], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL)


async def spread(urls: list[str], seconds: float, concurrency: int) -> float:
    """Requests/s with the workers spread round robin over ``urls`` (8 divisions)."""
    rates = await asyncio.gather(*(throughput(u, seconds, max(1, concurrency // len(urls)), 8) for u in urls))
    return sum(rates)


async def cost(args: argparse.Namespace, tmp: str, redis_url: str) -> None:
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    ports = {name: free_port() for name in ("single", "c1", "c2", "c3")}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "bench" / "overhead.py"), "--serve-upstream", str(up_port)])]
    procs.append(_proxy(_policy(tmp, "single", ports["single"], upstream, None)))
    for name in ("c1", "c2", "c3"):
        procs.append(_proxy(_policy(tmp, name, ports[name], upstream, redis_url)))
    path = "/api/v1/123456/crm/Accounts?$select=ID,Name&$filter=Name%20eq%20%27Acme%27"
    url = {name: f"http://127.0.0.1:{port}{path}" for name, port in ports.items()}
    rows: dict[str, list[tuple[float, float]]] = {"single": [], "cluster": [], "three": []}
    try:
        for u in url.values():
            await wait_up(u)
        for u in url.values():
            await throughput(u, 0.5, args.concurrency, 8)  # warm-up
        for _ in range(args.rounds):
            for name, targets in (("single", [url["single"]]), ("cluster", [url["c1"]]),
                                  ("three", [url["c1"], url["c2"], url["c3"]])):
                rps = await spread(targets, args.seconds, args.concurrency)
                p50 = (await latency(targets[0], args.latency_requests))[0] if name != "three" else 0.0
                rows[name].append((rps, p50))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    med = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for name, rs in rows.items()}
    added = sorted(c[1] - s[1] for c, s in zip(rows["cluster"], rows["single"], strict=True))
    tput = sorted(c[0] / s[0] for c, s in zip(rows["cluster"], rows["single"], strict=True))
    three = sorted(t[0] / c[0] for t, c in zip(rows["three"], rows["cluster"], strict=True))
    print(f"1. per-call cost, {args.rounds} interleaved rounds of {args.seconds:g} s (medians)")
    print(f"   single node:  {med['single'][0]:7.0f} req/s at c={args.concurrency}, p50 {med['single'][1]:.3f} ms at c=1")
    print(f"   cluster node: {med['cluster'][0]:7.0f} req/s at c={args.concurrency}, p50 {med['cluster'][1]:.3f} ms at c=1")
    print(f"   cluster p50 added per forwarded call: {statistics.median(added):+.3f} ms (target <= 1 ms; "
          f"rounds {added[0]:+.3f} .. {added[-1]:+.3f})")
    print(f"   cluster/single throughput: {statistics.median(tput):.2f} (rounds {tput[0]:.2f} .. {tput[-1]:.2f})")
    print(f"2. three nodes / one node throughput: {statistics.median(three):.2f} (rounds {three[0]:.2f} .. "
          f"{three[-1]:.2f}; {med['three'][0]:.0f} against {med['cluster'][0]:.0f} req/s, one 2-core machine)")


async def utilisation(args: argparse.Namespace, tmp: str, redis_url: str) -> None:
    start = (int(time.time() // 60) + 1) * 60 + 2  # just after a clock minute
    clock = ScaledClock(args.factor, start, time.time())
    log = os.path.join(tmp, "exact.jsonl")
    app = create_app(EmulatorConfig.from_dict({"request_log": log}), clock=clock)
    runner = web.AppRunner(app)
    await runner.setup()
    emu_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", emu_port).start()
    emu = app[EMULATOR]
    token = emu.issue_tokens("test-app")["access_token"]
    upstream = f"http://127.0.0.1:{emu_port}"
    ports = [free_port() for _ in range(3)]
    procs = [_proxy(_policy(tmp, f"u{i}", p, upstream, redis_url, "limits: {max_wait: 900}\ncoalesce: {enabled: false}\n"), clock)
             for i, p in enumerate(ports)]
    total = 2 * 60 * args.minutes
    statuses: Counter[int] = Counter()
    try:
        for p in ports:
            await wait_up(f"http://127.0.0.1:{p}/_proxy/health")
        jobs = list(range(total))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as s:
            async def tool(i: int) -> None:
                while jobs:
                    n = jobs.pop()
                    url = f"http://127.0.0.1:{ports[n % 3]}/api/v1/7/crm/Contacts?$top=1"
                    async with s.get(url, headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/json"}) as r:
                        await r.read()
                        statuses[r.status] += 1

            await asyncio.gather(*(tool(i) for i in range(40)))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        await runner.cleanup()
    rows = [json.loads(line) for line in Path(log).read_text().splitlines()]
    minutes = Counter(int(r["ts"] // 60) for r in rows if r["status"] == 200)
    full = [minutes[m] for m in sorted(minutes)][:-1]  # the last minute is the tail of the backlog
    used = min(full) / 60 if full else 0.0
    print(f"3. utilisation at twice the limit: 3 nodes, 40 tools asking at once for {total} calls, twice what "
          f"Exact allows in {args.minutes} minutes (clock x{args.factor:g})")
    print(f"   upstream 429s: {emu.count(outcome='minutely_429')} (target 0); answers at the tools: {dict(statuses)}")
    print(f"   calls per full minute: {full} -> least used minute {used:.0%} (target >= 97 %)")


async def main(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="exact-proxy-cluster-bench-")
    server = Server(Path(tmp)).start()
    try:
        await cost(args, tmp, server.url)
        server.stop()
        server.start()  # a fresh server for the scenario
        await utilisation(args, tmp, server.url)
    finally:
        server.stop()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-upstream":
        serve_upstream(int(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("--seconds", type=float, default=2.0)
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--concurrency", type=int, default=32)
        parser.add_argument("--latency-requests", type=int, default=300)
        parser.add_argument("--minutes", type=int, default=3)
        parser.add_argument("--factor", type=float, default=30.0)
        asyncio.run(main(parser.parse_args()))
