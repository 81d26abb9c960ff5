"""The after-answer work of a node: scripts run in the background, kept until the server has taken them.

Contract
- ``Later(link)``; ``add(script, keys, args, precious=False, then=None)`` queues one call and returns at
  once: the reply to the tool never waits for it. A background task runs the queue, up to ``BATCH``
  calls at a time (each one round trip; order between them is not kept, so each call must stand on its
  own). ``then()`` runs after the call succeeded (a waiter may look again).
- Every queued call must be **safe to run twice** (the server may have run it when its reply was lost):
  the scripts are ZREM/ZADD NX of one member, a max-SET, an INCR whose repeat is harmless.
- **Nothing is lost to an outage**: a call that meets ``StoreDown`` goes back to the queue and is tried
  again once the link is up (it probes every half second). The queue is bounded (``MAX``): when full,
  the oldest call that is not ``precious`` is dropped first (a lease that will expire by itself), a
  precious one (a counted error, Exact's block, a forget) only when nothing else is left; an ERROR line
  says so once per outage. A script that fails for another reason is logged and dropped.
- ``pending`` is the number queued; ``await drain()`` waits until the queue is empty (tests).
  ``close()`` (a clean stop) lets the task finish what is queued while the server still answers, and
  ends it at the first failure: results still queued then are lost (their leases expire by themselves).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.commands.core import AsyncScript

from proxy.cluster.link import Link, StoreDown

log = logging.getLogger("exact_proxy.cluster")

MAX = 10_000
BATCH = 32


@dataclass(slots=True)
class _Call:
    script: AsyncScript
    keys: Sequence[str]
    args: Sequence[str | int | float]
    precious: bool
    then: Callable[[], None] | None


class Later:
    def __init__(self, link: Link) -> None:
        self.link = link
        self._queue: deque[_Call] = deque()
        self._task: asyncio.Task[None] | None = None
        self._warned = False
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    def add(self, script: AsyncScript, keys: Sequence[str], args: Sequence[str | int | float] = (),
            precious: bool = False, then: Callable[[], None] | None = None) -> None:
        if len(self._queue) >= MAX:
            self._drop_one()
        self._queue.append(_Call(script, keys, args, precious, then))
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="cluster-later")

    def _drop_one(self) -> None:
        victim = next((c for c in self._queue if not c.precious), None)
        if not self._warned:
            self._warned = True
            log.error("cluster: %d results wait for the shared server; the oldest are dropped (in-flight "
                      "leases first; they expire by themselves)", len(self._queue))
        if victim is None:
            self._queue.popleft()
        else:
            self._queue.remove(victim)

    async def _run(self) -> None:
        while self._queue:
            if not self.link.up:
                if self._closed:
                    return
                await asyncio.sleep(0.5)
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            results = await asyncio.gather(*(self.link.run(c.script, c.keys, c.args) for c in batch),
                                           return_exceptions=True)
            back = []
            for call, result in zip(batch, results, strict=True):
                if isinstance(result, StoreDown):
                    back.append(call)
                elif isinstance(result, BaseException):
                    log.error("cluster: a background script failed and is dropped: %r", result)
                elif call.then is not None:
                    call.then()
            if back:
                self._queue.extendleft(reversed(back))
                if self._closed:
                    return
                await asyncio.sleep(0.05)  # the link turns down at once; never spin on it
            else:
                self._warned = False

    async def drain(self, timeout: float = 5.0) -> None:
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout)

    def close(self) -> None:
        self._closed = True
        if self._task is not None and not self._queue:
            self._task.cancel()
        self._task = None
