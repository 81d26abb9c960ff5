"""``/_proxy/events``: the dashboard's live feed, as Server-Sent Events.

Contract
- ``Events.stream(request, produce)`` answers one page: ``text/event-stream``, first ``retry: 2000``
  (the browser reconnects after 2 s), then an ``event: glance`` message whose ``data`` is the glance JSON
  (``proxy.ops.glance``) at once and then every ``INTERVAL`` seconds, with an ``id`` that counts the
  builds. A comment line (``: idle``) goes out when nothing was built for 15 s, so proxies in between
  keep the stream open.
- One producer serves every open page: ``produce()`` runs once per interval however many pages are open,
  and only while at least one is; each page gets the newest build (a slow page skips builds, it never
  holds the others up or makes the proxy buffer for it). A failing ``produce`` is logged once per
  kind and retried at the next interval; it never ends the streams.
- At most ``MAX_STREAMS`` pages at once; one more gets a 503 with ``Retry-After``.
- ``close()`` ends every stream (the proxy's stop calls it first, so a page left open never holds the
  shutdown up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("exact_proxy.admin")

INTERVAL = 1.0
IDLE = 15.0
MAX_STREAMS = 32
Produce = Callable[[], Awaitable[dict[str, Any]]]


class Events:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.pages: set[asyncio.Queue[bytes | None]] = set()
        self.builds = 0
        self.newest: bytes | None = None
        self._task: asyncio.Task[None] | None = None
        self._failed: str | None = None

    async def stream(self, request: web.BaseRequest, produce: Produce) -> web.StreamResponse:
        if len(self.pages) >= MAX_STREAMS:
            return web.json_response({"error": f"{MAX_STREAMS} dashboard pages are open already; "
                                               "close one or poll /_proxy/glance"},
                                     status=503, headers={"Retry-After": "5"})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no",
                                           "X-Content-Type-Options": "nosniff"})
        await resp.prepare(request)
        page: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)
        self.pages.add(page)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._produce(produce), name="dashboard events")
        try:
            await resp.write(b"retry: 2000\n\n")
            if self.newest is not None:
                await resp.write(self.newest)
            while True:
                try:
                    message = await asyncio.wait_for(page.get(), IDLE)
                except TimeoutError:
                    await resp.write(b": idle\n\n")
                    continue
                if message is None:  # close()
                    break
                await resp.write(message)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the page went away (or the proxy stops)
        finally:
            self.pages.discard(page)
        return resp

    def _offer(self, message: bytes | None) -> None:
        for page in self.pages:
            if page.full():
                page.get_nowait()  # a slow page skips to the newest build
            page.put_nowait(message)

    async def _produce(self, produce: Produce) -> None:
        while self.pages:
            try:
                body = json.dumps(await produce(), separators=(",", ":"))
                self.builds += 1
                self.newest = f"id: {self.builds}\nevent: glance\ndata: {body}\n\n".encode()
                self._failed = None
                self._offer(self.newest)
            except Exception as exc:  # the feed must outlive a broken build
                if self._failed != type(exc).__name__:
                    self._failed = type(exc).__name__
                    log.exception("the dashboard's glance could not be built; retrying every %g s", self.interval)
            await asyncio.sleep(self.interval)
        self.newest = None  # nobody watches: the next page starts from a fresh build

    async def close(self) -> None:
        self._offer(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _ in range(50):  # let the streams see the end and return (a few loop turns)
            if not self.pages:
                break
            await asyncio.sleep(0.01)
