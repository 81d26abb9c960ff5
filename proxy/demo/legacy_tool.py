"""The demo's "legacy tool": a naive concurrent script that knows nothing of Exact's limits.

Contract: ``LegacyTool(base_url, clock, ...).run(duration)`` works against ``base_url`` (the emulator
directly, or the proxy) for ``duration`` seconds of ``clock`` time and returns a ``ToolReport`` of what
the tool itself saw. It never looks at rate-limit headers. Its habits are the ones the public issue
trackers report:
- readers hit several divisions at ``rate_factor`` times the allowed rate, and on a 429 just try again
  a moment later;
- several token workers share one refresh token, each with its own copy read at start-up, and refresh
  whenever they like; a reader refreshes only after a 401;
- one worker lists Accounts without a ``$filter`` and follows ``__next``;
- one worker loops over a record that was deleted.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import aiohttp

READ_PATHS = (
    "crm/Accounts?$select=ID,Name&$filter=Name%20ne%20'x'",
    "logistics/Items?$select=ID,Code&$filter=ID%20ne%20guid'00000000-0000-0000-0000-000000000000'",
    "financial/GLAccounts?$select=ID,Code",
    "salesinvoice/SalesInvoices?$select=InvoiceID,InvoiceNumber&$top=20",
    "crm/Contacts?$select=ID,FullName",
)


@dataclass
class ToolReport:
    calls: int = 0
    ok: int = 0
    statuses: Counter = field(default_factory=Counter)
    token_calls: int = 0
    token_errors: Counter = field(default_factory=Counter)
    failures: int = 0
    longest_call_s: float = 0.0
    rows_listed_unfiltered: int = 0
    pages_unfiltered: int = 0
    links_seen: set[str] = field(default_factory=set)

    def record(self, status: int, seconds: float) -> None:
        self.calls += 1
        self.statuses[status] += 1
        if 200 <= status < 300:
            self.ok += 1
        self.longest_call_s = max(self.longest_call_s, seconds)


class LegacyTool:
    def __init__(self, base_url: str, clock, *, client_id: str = "demo-app", client_secret: str = "demo-secret",
                 divisions: tuple[int, ...] = (101, 102, 103), per_minute: int = 60, rate_factor: float = 2.0,
                 readers_per_division: int = 3, token_workers: int = 3, deleted_id: str | None = None,
                 seed: int = 7) -> None:
        self.base = base_url.rstrip("/")
        self.clock = clock
        self.client_id, self.client_secret = client_id, client_secret
        self.divisions = divisions
        self.per_minute = per_minute
        self.rate_factor = rate_factor
        self.readers_per_division = readers_per_division
        self.token_workers = token_workers
        self.deleted_id = deleted_id
        self.random = random.Random(seed)
        self.report = ToolReport()
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        self._stop = asyncio.Event()

    async def run(self, duration: float) -> ToolReport:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self.session = session
            await self._authorize()
            tasks = []
            for div in self.divisions:
                for n in range(self.readers_per_division):
                    tasks.append(self._reader(div, n))
            shared = self.refresh_token
            for n in range(self.token_workers):
                tasks.append(self._token_worker(n, shared))
            tasks.append(self._unfiltered_lister(self.divisions[0]))
            if self.deleted_id:
                tasks.append(self._deleted_looper(self.divisions[0]))
            running = [asyncio.ensure_future(t) for t in tasks]
            await self.clock.sleep(duration)
            self._stop.set()
            await asyncio.wait(running, timeout=5)
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        return self.report

    # -- the habits -------------------------------------------------------------------------------

    async def _authorize(self) -> None:
        """The code flow, once, as a person would click through it."""
        url = (f"{self.base}/api/oauth2/auth?client_id={self.client_id}&response_type=code"
               "&redirect_uri=http%3A%2F%2Flocalhost%2Fcallback")
        async with self.session.get(url, allow_redirects=False) as r:
            code = parse_qs(urlsplit(r.headers.get("Location", "")).query).get("code", [""])[0]
        body = await self._token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": "http://localhost/callback"})
        if body is None:
            raise RuntimeError("the demo tool could not authorize against " + self.base)
        self.access_token, self.refresh_token = body["access_token"], body["refresh_token"]

    async def _token(self, form: dict[str, str]) -> dict | None:
        form = {**form, "client_id": self.client_id, "client_secret": self.client_secret}
        self.report.token_calls += 1
        t0 = time.perf_counter()
        try:
            async with self.session.post(f"{self.base}/api/oauth2/token", data=form) as r:
                self.report.record(r.status, time.perf_counter() - t0)
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.report.failures += 1
            self.report.token_errors["no answer"] += 1
            return None
        if r.status != 200 or not isinstance(body, dict) or "access_token" not in body:
            text = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            self.report.token_errors[str(text or r.status)] += 1
            return None
        return body

    async def _get(self, url: str) -> tuple[int, dict | None]:
        t0 = time.perf_counter()
        try:
            async with self.session.get(url, headers={"Authorization": f"Bearer {self.access_token}",
                                                      "Accept": "application/json"}) as r:
                data = await r.read()
                self.report.record(r.status, time.perf_counter() - t0)
                if r.status == 200 and data[:1] == b"{":
                    import json

                    return r.status, json.loads(data)
                return r.status, None
        except (aiohttp.ClientError, TimeoutError):
            self.report.failures += 1
            return 0, None

    async def _reader(self, division: int, n: int) -> None:
        interval = 60.0 * self.readers_per_division / (self.per_minute * self.rate_factor)
        await self.clock.sleep(interval * n / self.readers_per_division)
        i = n
        while not self._stop.is_set():
            path = READ_PATHS[i % len(READ_PATHS)]
            i += 1
            status, _ = await self._get(f"{self.base}/api/v1/{division}/{path}")
            if status == 401:  # the classic: refresh only after a 401
                await self._refresh_shared()
            elif status == 429:
                await self.clock.sleep(1)
                continue
            await self.clock.sleep(interval)

    async def _refresh_shared(self) -> None:
        body = await self._token({"grant_type": "refresh_token", "refresh_token": self.refresh_token or ""})
        if body:
            self.access_token, self.refresh_token = body["access_token"], body["refresh_token"]

    async def _token_worker(self, n: int, my_refresh_token: str | None) -> None:
        """A job that keeps its own copy of the refresh token it was configured with."""
        while not self._stop.is_set():
            await self.clock.sleep(self.random.uniform(60, 240))
            if self._stop.is_set():
                return
            body = await self._token({"grant_type": "refresh_token", "refresh_token": my_refresh_token or ""})
            if body:
                my_refresh_token = body["refresh_token"]
                self.access_token = body["access_token"]

    async def _unfiltered_lister(self, division: int) -> None:
        while not self._stop.is_set():
            url: str | None = f"{self.base}/api/v1/{division}/crm/Accounts?$select=ID,Name"
            rows = 0
            while url and not self._stop.is_set():
                status, body = await self._get(url)
                if status != 200 or body is None:
                    break
                d = body.get("d", {})
                rows += len(d.get("results", []))
                self.report.pages_unfiltered += 1
                url = d.get("__next")
                if url:
                    self.report.links_seen.add(url.split("/api/")[0])
            self.report.rows_listed_unfiltered = max(self.report.rows_listed_unfiltered, rows)
            await self.clock.sleep(30)

    async def _deleted_looper(self, division: int) -> None:
        while not self._stop.is_set():
            await self._get(f"{self.base}/api/v1/{division}/crm/Accounts(guid'{self.deleted_id}')")
            await self.clock.sleep(10)
