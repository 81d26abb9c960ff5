"""A busy proxy for the dashboard: the real emulator and the real proxy on real sockets, on one
``ManualClock``, with traffic that queues, spends errors, gets an endpoint blocked and refreshes a chain.

``Scene(tmp_dir)``: ``await start()``; ``await traffic()`` drives the calls, ``await spend_errors()``
the errors (``busy()``: both); ``await stop()``. ``proxy_url``,
``emulator_url``, ``tokens`` (every token a tool was given: none may reach the page), ``queued`` (calls
still waiting for call budget when ``traffic`` returns; ``release()`` lets them through). Used by the
glance and browser tests and by ``scripts/dashboard-screenshot``. Nothing here is a mock: the figures
come from what the proxy did.

The traffic (division numbers are the scene's):
- three tools (Power Query, an Excel add-in and a Python script, by User-Agent) read divisions 101, 102
  and 103; the script also does the OAuth calls;
- division 102 has a minute limit of 6 at Exact; 9 calls: 6 pass, 3 wait in the queue;
- division 101 reads a deleted record until Exact (error limit 2 here) blocks the endpoint;
- the chain is refreshed upstream once (the clock is moved past 570 s), then the tools read on;
- two shares of the day (``limits.shares``) count the calls of Power Query (cap 40) and Excel (cap 500).
"""

from __future__ import annotations

import asyncio
import io
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web

from proxy.clock import ManualClock
from proxy.emulator import EmulatorConfig, create_app
from proxy.http.server import ProxyServer
from proxy.ops.logs import setup_logging
from proxy.policy import load_policy
from proxy.policy.watch import PolicyHolder

CLIENT, SECRET = "test-app", "test-secret"
START_CLOCK = 1_795_600_800.0  # 2026-11-25T10:00:00Z, where the scene's ManualClock starts
TOOLS = {"replicator": "Microsoft.Data.Mashup (https://go.microsoft.com/fwlink/?LinkID=304225)", "excel": "Microsoft Office Excel 2016 ExactAddin/1.9",
         "script": "python-requests/2.31.0"}
MISSING = "crm/Accounts(guid'00000000-0000-4000-8000-{:012d}')"  # deleted records, each read once
EMULATOR = {"error_limit": 2, "limits": [{"division": 102, "minutely": 6}],
            "rows": {"crm/contacts": 40, "logistics/items": 30}}
POLICY = """
limits:
  max_wait: 600
  shares:
    - {name: replication, match: {user_agent: "Microsoft.Data.Mashup*"}, cap: {day: 40}}
    - {name: interactive, match: {user_agent: "*Excel*"}, cap: {day: 500}}
coalesce: {enabled: false}
"""


class Scene:
    def __init__(self, tmp_dir: str | Path, clock: ManualClock | None = None) -> None:
        self.dir = Path(tmp_dir)
        self.clock = clock or ManualClock(START_CLOCK)
        self.tokens: list[str] = []
        self.queued: list[asyncio.Task[int]] = []
        self.log = io.StringIO()
        self._runner: web.AppRunner | None = None
        self.proxy: ProxyServer | None = None
        self.session: aiohttp.ClientSession | None = None
        self.access: dict[str, str] = {}

    async def start(self) -> Scene:
        app = create_app(EmulatorConfig.from_dict(EMULATOR), clock=self.clock)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.emulator_url = f"http://127.0.0.1:{port}"
        path = self.dir / "policies.yaml"
        path.write_text(f"upstreams:\n  exact: {{base_url: '{self.emulator_url}'}}\n"
                        "listeners:\n  - {name: default, port: 0, upstream: exact}\n"
                        f"state: {{path: '{self.dir / 'state.sqlite'}'}}\n" + textwrap.dedent(POLICY))
        policy = load_policy(str(path))
        setup_logging(policy.log, "text", stream=self.log)
        self.proxy = ProxyServer(PolicyHolder(policy, str(path)), self.clock)
        await self.proxy.start()
        self.proxy_url = self.proxy.url()
        self.session = aiohttp.ClientSession(headers={"User-Agent": TOOLS["script"]})
        return self

    async def stop(self) -> None:
        await self.release()
        if self.session is not None:
            await self.session.close()
        if self.proxy is not None:
            await self.proxy.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what a tool does ----------------------------------------------------------------------------
    async def authorize(self) -> dict[str, str]:
        assert self.session is not None
        async with self.session.get(f"{self.proxy_url}/api/oauth2/auth?client_id={CLIENT}&response_type=code"
                                    "&redirect_uri=http%3A%2F%2Flocalhost%2Fcb", allow_redirects=False) as r:
            code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
        return await self._token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": "http://localhost/cb"})

    async def refresh(self) -> dict[str, str]:
        return await self._token({"grant_type": "refresh_token", "refresh_token": self.access["refresh_token"]})

    async def _token(self, form: dict[str, str]) -> dict[str, str]:
        assert self.session is not None
        form = {**form, "client_id": CLIENT, "client_secret": SECRET}
        async with self.session.post(f"{self.proxy_url}/api/oauth2/token", data=form) as r:
            body = await r.json(content_type=None)
            assert r.status == 200, body
        self.access = body
        self.tokens += [body["access_token"], body["refresh_token"]]
        return body

    async def get(self, tool: str, division: int, endpoint: str) -> int:
        assert self.session is not None
        headers = {"Authorization": f"Bearer {self.access['access_token']}", "Accept": "application/json",
                   "User-Agent": TOOLS[tool]}
        async with self.session.get(f"{self.proxy_url}/api/v1/{division}/{endpoint}", headers=headers) as r:
            await r.read()
            return r.status

    # -- the traffic ---------------------------------------------------------------------------------
    async def traffic(self) -> None:
        await self.authorize()
        for tool, division, endpoint, n in (("replicator", 101, "crm/Contacts?$top=5", 7),
                                            ("excel", 103, "logistics/Items?$top=5&$filter=Code ne 'x'", 4),
                                            ("script", 103, "crm/Contacts?$top=1", 2)):
            for _ in range(n):
                assert await self.get(tool, division, endpoint) == 200
        await self.clock.advance(600)  # past 570 s: the next refresh goes to Exact
        await self.refresh()
        for _ in range(6):
            assert await self.get("replicator", 102, "crm/Contacts?$top=5") == 200
        for _ in range(3):  # Exact's minute limit of division 102 is spent: these wait in the queue
            self.queued.append(asyncio.create_task(self.get("excel", 102, "crm/Contacts?$top=5")))
        await self.wait_queued(3)

    async def spend_errors(self) -> None:
        for i in range(5):  # deleted records: Exact blocks the endpoint after its error limit (2 here)
            await self.get("script", 101, MISSING.format(i))

    async def busy(self) -> None:
        await self.traffic()
        await self.spend_errors()

    async def wait_queued(self, n: int, timeout: float = 5.0) -> None:
        """Until ``n`` calls wait in a queue of the proxy."""
        assert self.proxy is not None
        book = next(f for f in self.proxy.services.filters if f.name == "call_budget").book
        for _ in range(int(timeout / 0.01)):
            if sum(len(d.waiters) for d in book.divisions.values()) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{n} calls did not queue")

    async def release(self) -> None:
        """Let the queued calls through (the clock moves to the next minute)."""
        if self.queued:
            await self.clock.advance(61)
            await asyncio.gather(*self.queued, return_exceptions=True)
            self.queued.clear()


def division(glance: dict, number: int) -> dict:
    """The row of division ``number`` in a glance (``/_proxy/glance``)."""
    return next(d for d in glance["divisions"] if d["division"] == number)
