"""What does link rewriting cost on a big page? A 1000-row bulk page (about 1.5 MB) three ways.

    python bench/rewrite.py [--seconds 3] [--rounds 3] [--concurrency 8]

Paths, each server in its own process, measured in interleaved rounds (medians):
  bare       client -> a bare aiohttp pass-through (the Python floor) -> upstream
  proxy      client -> exact-proxy, links rewritten (__next and 1000 __metadata.uri) -> upstream
  no-rewrite client -> exact-proxy with links.rewrite off -> upstream
  gzip       client -> exact-proxy, links rewritten, upstream answer gzip-compressed

The upstream is a small aiohttp app answering one pre-built page whose every row carries an absolute
``__metadata.uri`` on the upstream's base URL, as Exact's bulk endpoints do. Prints pages/s, MB/s and
the ratio that matters: proxy (rewriting) / bare (target >= 0.50).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid

import aiohttp
from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import ROOT, free_port, wait_up  # noqa: E402

# No call budget in the way of a throughput figure (the upstream here is not Exact).
LIMITS = "limits: {minutely: 100000000, daily: 1000000000}\ncoalesce: {enabled: false}\n"  # every page its own call


def build_page(base: str, rows: int = 1000) -> bytes:
    results = []
    for i in range(rows):
        gid = str(uuid.UUID(int=i + 1))
        results.append({
            "__metadata": {"uri": f"{base}/api/v1/123456/bulk/Financial/TransactionLines(guid'{gid}')",
                           "type": "Exact.Web.Api.Models.Bulk.Financial.TransactionLine"},
            "ID": gid, "AccountCode": f"{i:>18}", "AccountName": f"Account {i} B.V.",
            "AmountDC": i * 1.25, "AmountFC": i * 1.25, "Date": f"/Date({1641034800000 + i * 86400000})/",
            "Description": f"Invoice {100000 + i} for services rendered in period {i % 12 + 1}",
            "EntryNumber": 100000 + i, "FinancialPeriod": i % 12 + 1, "FinancialYear": 2026,
            "GLAccountCode": f"{8000 + i % 50:>8}", "GLAccountDescription": "Revenue services",
            "JournalCode": "70", "JournalDescription": "Sales journal", "Notes": None,
            "VATCode": "2  ", "VATPercentage": 0.21, "Type": 20, "Status": 20, "Currency": "EUR",
            "CostCenter": f"CC{i % 7:03d}", "CostCenterDescription": "Head office, Amsterdam",
            "CostUnit": f"CU{i % 5:03d}", "CostUnitDescription": "Consulting services",
            "InvoiceNumber": 500000 + i, "OrderNumber": 700000 + i, "YourRef": f"PO-{i:08d}",
            "Account": str(uuid.UUID(int=10**6 + i % 97)), "GLAccount": str(uuid.UUID(int=10**7 + i % 50)),
            "Item": str(uuid.UUID(int=10**8 + i % 300)), "ItemCode": f"ITEM-{i % 300:05d}",
            "ItemDescription": "Monthly subscription, standard tier", "Quantity": 1 + i % 3,
            "Project": None, "ProjectCode": None, "ProjectDescription": None,
            "Document": str(uuid.UUID(int=10**9 + i)), "DocumentNumber": 900000 + i,
            "DocumentSubject": f"Sales invoice {500000 + i}",
            "Modified": f"/Date({1641034800000 + i})/", "Timestamp": 1000000 + i,
        })
    nxt = f"{base}/api/v1/123456/bulk/Financial/TransactionLines?$select=ID&$skiptoken=guid'{results[-1]['ID']}'"
    return json.dumps({"d": {"results": results, "__next": nxt}}).encode()


def serve_upstream(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    page = build_page(base)
    page_gz = gzip.compress(page, 6)

    async def handler(request: web.Request) -> web.Response:
        headers = {"X-RateLimit-Minutely-Limit": "100000", "X-RateLimit-Minutely-Remaining": "99999",
                   "X-RateLimit-Limit": "10000000", "X-RateLimit-Remaining": "9999999"}
        if "gzip" in request.headers.get("Accept-Encoding", "") and "gz" in request.query:
            return web.Response(body=page_gz, content_type="application/json",
                                headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=page, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def throughput(url: str, seconds: float, concurrency: int, gz: bool = False) -> tuple[float, float]:
    pages = 0
    size = 0
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    headers = {"Accept": "application/json", "Accept-Encoding": "gzip" if gz else "identity"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker() -> None:
            nonlocal pages, size
            while loop.time() < stop:
                async with s.get(url, headers=headers) as r:
                    body = await r.read()
                    assert r.status == 200, r.status
                pages += 1
                size = len(body)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return pages / seconds, size


async def main(args: argparse.Namespace) -> None:
    up_port, bare_port, p1, p2 = free_port(), free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    tmp = tempfile.mkdtemp(prefix="exact-proxy-bench-")
    me = os.path.abspath(__file__)
    procs = [subprocess.Popen([sys.executable, me, "--serve-upstream", str(up_port)]),
             subprocess.Popen([sys.executable, os.path.join(os.path.dirname(me), "overhead.py"),
                               "--serve-bare", str(bare_port), upstream])]
    for port, rewrite in ((p1, "true"), (p2, "false")):
        policy = os.path.join(tmp, f"policies-{port}.yaml")
        with open(policy, "w") as fh:
            fh.write(f"upstreams: {{bench: {{base_url: '{upstream}'}}}}\n"
                     f"listeners: [{{name: bench, port: {port}, upstream: bench}}]\n"
                     f"links: {{rewrite: {rewrite}}}\n"
                     f"log: {{file: '{tmp}/proxy-{port}.log'}}\nstate: {{path: '{tmp}/s-{port}.sqlite'}}\n"
                     + LIMITS)
        procs.append(subprocess.Popen([sys.executable, "-m", "proxy", "run", "--config", policy], cwd=ROOT,
                                      stdout=subprocess.DEVNULL))
    path = "/api/v1/123456/bulk/Financial/TransactionLines?$select=ID,AmountDC"
    targets = {"bare": (f"http://127.0.0.1:{bare_port}" + path, False),
               "proxy": (f"http://127.0.0.1:{p1}" + path, False),
               "no-rewrite": (f"http://127.0.0.1:{p2}" + path, False),
               "gzip": (f"http://127.0.0.1:{p1}" + path + "&gz=1", True)}
    try:
        await wait_up(upstream + path)
        for url, _ in targets.values():
            await wait_up(url)
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for url, gz in targets.values():
            await throughput(url, 0.5, args.concurrency, gz)  # warm-up
        for _ in range(args.rounds):
            for name, (url, gz) in targets.items():
                rounds[name].append(await throughput(url, args.seconds, args.concurrency, gz))
        results = {name: (statistics.median(r[0] for r in rs), rs[-1][1]) for name, rs in rounds.items()}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    print(f"1000-row bulk page, concurrency {args.concurrency}, {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s (medians)")
    print(f"{'path':11} {'pages/s':>8} {'MB/s':>7} {'page bytes':>11}")
    for name, (pps, size) in results.items():
        print(f"{name:11} {pps:8.1f} {pps * size / 1e6:7.1f} {size:11d}")
    bare = results["bare"][0]
    print(f"proxy (rewriting) / bare: {results['proxy'][0] / bare:.2f}   (target >= 0.50)")
    print(f"proxy (no rewrite) / bare: {results['no-rewrite'][0] / bare:.2f}")
    print(f"proxy (rewriting, gzip) / bare: {results['gzip'][0] / bare:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-upstream":
        serve_upstream(int(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
        parser.add_argument("--seconds", type=float, default=3.0)
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--concurrency", type=int, default=8)
        asyncio.run(main(parser.parse_args()))
