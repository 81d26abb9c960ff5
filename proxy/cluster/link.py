"""The one connection of a node to the shared server (Valkey or Redis), failing closed.

Contract
- ``Link(settings, clock)``; ``await open()`` connects (a server that is down at start is not fatal:
  the node starts closed and opens when the server answers); ``await close()``.
- ``script(lua)`` registers a Lua script. Every script starts with ``now_ms()``: the server's ``TIME``,
  or, when the node runs on an injected clock (tests, the demo), that clock's time passed as ``ARGV[1]``,
  so that every node agrees on Exact's clock minute. ``await run(script, keys, args)`` prepends that
  argument and returns the script's reply.
- **One round trip per loop turn.** Scripts run in the same event-loop turn (the concurrent requests
  of a burst) go to the server together in one pipeline (not a transaction: each script is still
  its own atomic decision), which cuts the client's CPU per call several times over. A script the
  server does not know (``NOSCRIPT``: it restarted) did not run; it is loaded and sent again.
- **No automatic resend.** redis-py resends a command after a lost reply by default; a resent
  reservation is a second reservation. Here every call is tried once, with ``timeout_ms``, from a pool
  that waits when all its connections are busy (it never fails for being full).
- **Fail closed.** When a call cannot reach the server, ``run`` raises ``StoreDown`` and the link turns
  *down*: later calls raise at once, without waiting for a timeout, until a probe (every half second)
  gets an answer. The log says so once when it goes down and once when it is back. ``up`` tells;
  ``on_up`` callbacks run after each recovery (with ``lost=True`` when the server forgot its data:
  its random ``epoch`` key changed).
- ``key(*parts)`` is a key under ``key_prefix``; ``tag(...)`` a hash tag that keeps the keys of one
  decision in one slot (Redis Cluster).
- ``offset``: the server's clock minus the node's, learned from replies that carry the server time
  (``saw_time``); a WARNING once when it exceeds a second.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript

from proxy.clock import Clock, SystemClock
from proxy.cluster.settings import ClusterSettings

log = logging.getLogger("exact_proxy.cluster")

PRELUDE = """
local function now_ms()
  if ARGV[1] ~= nil and ARGV[1] ~= '' then return tonumber(ARGV[1]) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# what a lost server looks like to redis-py (a script error is a bug, not an outage)
DOWN_ERRORS: tuple[type[BaseException], ...] = (
    rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError, rx.ReadOnlyError, OSError,
    asyncio.TimeoutError)

RETRY_AFTER = 5  # seconds a tool is told to wait while the server is unreachable


BATCH = 64  # scripts per pipeline


def _fail(batch: Sequence[tuple[Any, Any, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, _, fut in batch:
        if not fut.done():
            fut.set_exception(exc)


class StoreDown(Exception):
    """The shared server did not answer: nothing was decided, nothing may be sent to Exact."""


class Link:
    def __init__(self, settings: ClusterSettings, clock: Clock) -> None:
        self.settings, self.clock = settings, clock
        self.node = settings.node_name
        self.prefix = settings.key_prefix
        self.up = False
        self.why = "not connected yet"
        self.offset = 0.0
        self.epoch: str | None = None
        self.on_up: list[Callable[[bool], Awaitable[None]]] = []
        self.client: Redis | None = None
        self._probe: asyncio.Task[None] | None = None
        self._warned_offset = False
        self._closing = False
        self._server_clock = isinstance(clock, SystemClock)
        self._batch: list[tuple[AsyncScript, list[Any], asyncio.Future[Any]]] = []
        self._senders: set[asyncio.Task[None]] = set()

    # -- life ------------------------------------------------------------------------------------
    def _pool(self) -> BlockingConnectionPool:
        timeout = self.settings.timeout_ms / 1000
        return BlockingConnectionPool.from_url(
            self.settings.redis_url or "", max_connections=self.settings.pool_size, timeout=max(1.0, timeout * 4),
            socket_timeout=timeout, socket_connect_timeout=max(timeout, 0.5),
            retry=Retry(NoBackoff(), 0), retry_on_error=[], password=self.settings.password(),
            health_check_interval=0, client_name=f"exact-proxy {self.node}"[:60].replace(" ", "_"))

    async def open(self) -> None:
        self.client = Redis(connection_pool=self._pool())
        try:
            await self._check()
        except DOWN_ERRORS as exc:
            self._went_down(exc)

    async def close(self) -> None:
        self._closing = True
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    # -- calls -----------------------------------------------------------------------------------
    def key(self, *parts: object) -> str:
        return ":".join((self.prefix, *(str(p) for p in parts)))

    @staticmethod
    def tag(*parts: object) -> str:
        return "{" + "|".join(str(p) for p in parts) + "}"

    def script(self, lua: str) -> AsyncScript:
        assert self.client is not None, "open() first"
        return self.client.register_script(PRELUDE + lua)

    def now_arg(self) -> str:
        """``ARGV[1]`` of every script: empty (the server's clock) unless the node runs on an injected
        clock, whose time then rules."""
        return "" if self._server_clock else str(int(self.clock.time() * 1000))

    def time(self) -> float:
        """The cluster's time as this node best knows it (epoch seconds)."""
        return self.clock.time() + self.offset

    def saw_time(self, server_ms: float) -> None:
        offset = server_ms / 1000 - self.clock.time()
        self.offset = offset if self._server_clock else 0.0
        if self._server_clock and abs(offset) > 1.0 and not self._warned_offset:
            self._warned_offset = True
            log.warning("this node's clock differs from the cluster server's by %.1f s; the server's "
                        "clock rules Exact's minute (fix the node's NTP)", offset)

    async def run(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int | float] = ()) -> Any:
        if not self.up or self.client is None:
            raise StoreDown(self.why)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._batch.append((script, [len(keys), *keys, self.now_arg(), *args], fut))
        if len(self._batch) == 1:  # the first of this loop turn: send them all when the turn ends
            asyncio.get_running_loop().call_soon(self._send_batch)
        return await fut

    def _send_batch(self) -> None:
        batch, self._batch = self._batch[:BATCH], self._batch[BATCH:]
        if self._batch:
            asyncio.get_running_loop().call_soon(self._send_batch)
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._senders.add(task)  # our own task, never cancelled by a caller: no reply is left unread
        task.add_done_callback(self._senders.discard)

    async def _send(self, batch: list[tuple[AsyncScript, list[Any], asyncio.Future[Any]]]) -> None:
        try:
            if self.client is None or not self.up:
                raise StoreDown(self.why)
            pipe = self.client.pipeline(transaction=False)
            for script, args, _ in batch:
                pipe.execute_command("EVALSHA", script.sha, *args)
            replies = await pipe.execute(raise_on_error=False)
            for i, reply in enumerate(replies):
                if isinstance(reply, rx.NoScriptError):  # not run: load it and send it once more
                    script, args, _ = batch[i]
                    await self.client.script_load(script.script)
                    try:
                        replies[i] = await self.client.execute_command("EVALSHA", script.sha, *args)
                    except rx.ResponseError as exc:  # the script's own error, for its caller only
                        replies[i] = exc
        except DOWN_ERRORS as exc:
            self._went_down(exc)
            _fail(batch, StoreDown(self.why))
            return
        except StoreDown as exc:
            _fail(batch, exc)
            return
        except Exception as exc:  # a bug or a refused command: every caller of this batch hears it
            _fail(batch, exc)
            return
        for (_, _, fut), reply in zip(batch, replies, strict=True):
            if fut.done():
                continue  # the caller went away (the script ran: safe to over-count)
            if isinstance(reply, Exception):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    async def command(self, *args: object) -> Any:
        """One plain command (reads for the status page, heartbeats), failing closed like ``run``."""
        if not self.up or self.client is None:
            raise StoreDown(self.why)
        try:
            return await self.client.execute_command(*args)
        except DOWN_ERRORS as exc:
            self._went_down(exc)
            raise StoreDown(self.why) from exc

    # -- down and up -----------------------------------------------------------------------------
    def _went_down(self, exc: BaseException) -> None:
        why = f"cluster state server {self.settings.safe_url()} unreachable ({type(exc).__name__}: {exc})"
        if self.up or self._probe is None:
            log.error("%s: calls that count against Exact's limits and token refreshes are refused with "
                      "503 until it answers again", why)
        self.up, self.why = False, why
        if not self._closing and (self._probe is None or self._probe.done()):
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_up(), name="cluster-probe")

    async def _probe_until_up(self) -> None:
        while not self._closing:
            await asyncio.sleep(0.5)
            if self.client is not None:  # pooled connections to the lost server are dead: drop them all
                await self.client.connection_pool.disconnect()
            try:
                lost = await self._check()
            except DOWN_ERRORS:
                continue
            except rx.RedisError as exc:  # an auth or config problem: say it, keep probing
                log.error("cluster state server answers with an error: %s", exc)
                continue
            self._probe = None
            log.info("cluster state server %s reachable again: service resumes", self.settings.safe_url())
            for callback in self.on_up:
                try:
                    await callback(lost)
                except StoreDown:
                    return
                except Exception:  # a callback's bug must not keep the node closed
                    log.exception("after the cluster server came back")
            return

    async def _check(self) -> bool:
        """PING and read the server's epoch; True when the server forgot its data since last seen."""
        assert self.client is not None
        await self.client.ping()
        key = self.key("epoch")
        await self.client.set(key, secrets.token_hex(8), nx=True)
        epoch = await self.client.get(key)
        text = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
        lost = self.epoch is not None and text != self.epoch
        if lost:
            log.warning("the cluster state server lost its data (a restart without persistence?): the "
                        "windows this node knows are written back as spent")
        self.epoch = text
        self.up, self.why = True, ""
        return lost
