"""A real headless Chromium for tests, driven over the DevTools protocol (CDP) with aiohttp's websocket client.

No Playwright, Selenium or pyppeteer: ``Browser`` launches the ``chromium`` binary (``chromium_binary()``:
``$EXACT_PROXY_CHROMIUM``, else the first of chromium, chromium-browser, google-chrome,
google-chrome-stable on PATH) headless, in a fresh temporary profile, with background networking off
(this machine's network is closed) and ``--remote-debugging-port=0``; the port comes from the profile's
``DevToolsActivePort`` file. Leaving the ``async with`` closes the websockets, terminates the browser's
whole process group (SIGKILL after 5 s) and removes the profile, also when the test failed.

``Page`` (``await browser.new_page(width, height)``) is one page target on its own websocket, with the
Page, Runtime and Log domains enabled:

- ``goto(url)``: navigate and wait for the load event;
- ``evaluate(expression)``: the value (by value, promises awaited); a thrown error raises ``BrowserError``
  with the JS exception text;
- ``wait_for(expression)``: poll until truthy (a throw counts as not yet); ``AssertionError`` on timeout,
  with the expression and the last value;
- ``screenshot(path, full_page=True)``: a PNG; full page = the viewport stretched to the document's scroll
  height for the shot, then restored;
- ``console``: console messages (``"error: text"``), uncaught exceptions (``"exception: ..."``) and log
  entries such as CSP violations (``"error: Refused to ..."``), in arrival order.

``require_chromium()`` gives the binary to a test, or skips it (fails it when ``$CI`` is set).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
         "--remote-debugging-port=0", "--remote-allow-origins=*")


class BrowserError(Exception):
    """Chromium did not start, a CDP command failed, or evaluated JS threw."""


def chromium_binary() -> str | None:
    if env := os.environ.get("EXACT_PROXY_CHROMIUM"):
        return env
    return next((found for name in NAMES if (found := shutil.which(name))), None)


def require_chromium() -> str:
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium on PATH (nor $EXACT_PROXY_CHROMIUM) and CI is set: apt-get install chromium")
        pytest.skip("no chromium: apt-get install chromium")
    return binary


class _Connection:
    """One CDP websocket: numbered commands answered through futures, events handed to ``on_event``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, on_event: Callable[[str, dict], None]) -> None:
        self.ws, self.on_event = ws, on_event
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if "id" in data:
                    future = self.pending.pop(data["id"], None)
                    if future is None or future.done():
                        continue
                    if "error" in data:
                        future.set_exception(BrowserError(f"CDP error: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                else:
                    self.on_event(data.get("method", ""), data.get("params", {}))
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(BrowserError("DevTools websocket closed"))

    async def send(self, method: str, params: dict | None = None, timeout: float = 10) -> dict:
        msg_id = next(self.ids)
        future = self.pending[msg_id] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise BrowserError(f"no answer to {method} in {timeout} s") from None
        finally:
            self.pending.pop(msg_id, None)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


class Page:
    def __init__(self, session: aiohttp.ClientSession, ws_url: str, width: int, height: int) -> None:
        self.session, self.ws_url, self.width, self.height = session, ws_url, width, height
        self.console: list[str] = []
        self.waiters: list[tuple[str, asyncio.Future[dict]]] = []
        self.conn: _Connection

    async def _open(self) -> Page:
        ws = await self.session.ws_connect(self.ws_url, max_msg_size=0)
        self.conn = _Connection(ws, self._on_event)
        for domain in ("Page", "Runtime", "Log"):
            await self.conn.send(f"{domain}.enable")
        await self._viewport(self.height)
        return self

    def _on_event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled":
            args = [str(a.get("value", a.get("description", a.get("type")))) for a in params.get("args", [])]
            self.console.append(f"{params.get('type')}: {' '.join(args)}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            self.console.append(f"{entry.get('level')}: {entry.get('text')}")
        for waited, future in list(self.waiters):
            if waited == method and not future.done():
                future.set_result(params)

    async def _viewport(self, height: int) -> None:
        await self.conn.send("Emulation.setDeviceMetricsOverride",
                             {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False})

    async def goto(self, url: str, timeout: float = 15) -> None:
        loaded: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self.waiters.append(("Page.loadEventFired", loaded))
        try:
            result = await self.conn.send("Page.navigate", {"url": url}, timeout)
            if result.get("errorText"):
                raise BrowserError(f"navigating to {url}: {result['errorText']}")
            await asyncio.wait_for(loaded, timeout)
        except TimeoutError:
            raise BrowserError(f"{url} did not load in {timeout} s") from None
        finally:
            self.waiters.remove(("Page.loadEventFired", loaded))

    async def evaluate(self, expression: str, timeout: float = 10) -> Any:
        result = await self.conn.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                           "awaitPromise": True}, timeout)
        if details := result.get("exceptionDetails"):
            raise BrowserError(details.get("exception", {}).get("description") or details.get("text"))
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 10, interval: float = 0.05) -> Any:
        probe = f"(async () => {{ const v = await (\n{expression}\n); return {{ok: !!v, value: v}}; }})()"
        deadline, last = time.monotonic() + timeout, None
        while True:
            try:
                answer = await self.evaluate(probe, timeout)
                if answer["ok"]:
                    return answer.get("value")
                last = answer.get("value")
            except BrowserError as e:
                last = f"threw {e}"
            if time.monotonic() >= deadline:
                raise AssertionError(f"still not truthy after {timeout} s: {expression!r}; last value: {last!r}")
            await asyncio.sleep(interval)

    async def screenshot(self, path: str, full_page: bool = True) -> None:
        if full_page:
            height = await self.evaluate("Math.max(document.documentElement.scrollHeight,"
                                         " document.body ? document.body.scrollHeight : 0)")
            await self._viewport(max(int(height or 0), self.height))
        try:
            shot = await self.conn.send("Page.captureScreenshot", {"format": "png"}, 30)
        finally:
            if full_page:
                await self._viewport(self.height)
        Path(path).write_bytes(base64.b64decode(shot["data"]))


class Browser:
    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or chromium_binary()
        self.process: asyncio.subprocess.Process | None = None
        self.pages: list[Page] = []
        self.conn: _Connection | None = None

    async def __aenter__(self) -> Browser:
        if self.binary is None:
            raise BrowserError("no chromium binary (set $EXACT_PROXY_CHROMIUM or apt-get install chromium)")
        self.profile = Path(tempfile.mkdtemp(prefix="exact-proxy-chromium-"))
        self.stderr_path = self.profile.parent / f"{self.profile.name}.stderr"
        self.session = aiohttp.ClientSession()
        try:
            with open(self.stderr_path, "wb") as stderr:
                self.process = await asyncio.create_subprocess_exec(
                    self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank",
                    stdin=asyncio.subprocess.DEVNULL, stdout=stderr, stderr=stderr, start_new_session=True)
            self.port = await self._port()
            async with self.session.get(f"http://127.0.0.1:{self.port}/json/version") as resp:
                ws_url = (await resp.json())["webSocketDebuggerUrl"]
            self.conn = _Connection(await self.session.ws_connect(ws_url, max_msg_size=0), lambda m, p: None)
        except BaseException:
            await self._close()
            raise
        return self

    async def _port(self) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.returncode is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}:\n{self._stderr_tail()}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(active.read_text().splitlines()[0])
            await asyncio.sleep(0.05)
        raise BrowserError(f"chromium wrote no {active} in 10 s:\n{self._stderr_tail()}")

    def _stderr_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:]) or "(empty stderr)"
        return "(no stderr file)"

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        assert self.conn is not None, "use Browser as `async with Browser() as browser`"
        target = await self.conn.send("Target.createTarget", {"url": "about:blank"})
        page = Page(self.session, f"ws://127.0.0.1:{self.port}/devtools/page/{target['targetId']}", width, height)
        self.pages.append(page)
        return await page._open()

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        for conn in [getattr(page, "conn", None) for page in self.pages] + [self.conn]:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        await self.session.close()
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
            with contextlib.suppress(ProcessLookupError, PermissionError):  # helpers left in the group
                os.killpg(self.process.pid, signal.SIGKILL)
        shutil.rmtree(self.profile, ignore_errors=True)
        self.stderr_path.unlink(missing_ok=True)
