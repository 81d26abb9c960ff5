"""Turns: how many queued calls all divisions together release in one event-loop iteration.

Contract: ``Turns(per_turn)`` is shared by every division's queue pump. ``take()`` is True while this
iteration has admissions left (and uses one); when it says False the pump stops admitting and
``await wait()`` resumes it in a later iteration, after the loop has polled its sockets. So a minute
boundary that frees thousands of queued calls at once releases them ``per_turn`` at a time, and
``/_proxy/health``, admin pages and new requests are answered in between instead of after all of them.
Admission order within a division is unchanged; the pumps take turns in the order they asked.
"""

from __future__ import annotations

import asyncio


class Turns:
    def __init__(self, per_turn: int = 16) -> None:
        self.per_turn = per_turn
        self.left = per_turn
        self._waiting: list[asyncio.Future[None]] = []
        self._refill_due = False

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        self._schedule()
        return True

    async def wait(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        self._schedule()
        await fut

    def _schedule(self) -> None:
        if not self._refill_due:
            self._refill_due = True
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        self._refill_due = False
        self.left = self.per_turn
        waiting, self._waiting = self._waiting, []
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)
