"""How long a tool waits for an answer before it gives up, learned from the calls it abandons.

Contract: ``Patience()`` keeps, per tool (listener and User-Agent), the waits after which queued calls
were abandoned (the tool closed the connection: a 499 in the log). ``observe(tool, waited)`` records
one; waits shorter than ``MIN_SECONDS`` are not patience (a tool that was stopped, a user's Ctrl-C)
and are ignored. ``limit(tool)`` is ``SHARE`` of the shortest of the last ``KEEP`` abandoned waits,
once at least ``EVIDENCE`` were seen, else None. The call budget waits no longer than that for the
tool, so it gets a 429 with ``Retry-After`` while it still listens instead of a dropped connection.
At most ``TOOLS`` tools are remembered (the least recently seen go first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

MIN_SECONDS = 3.0
KEEP = 3
EVIDENCE = 2
SHARE = 0.8
TOOLS = 1000

Tool = tuple[str, str]


class Patience:
    def __init__(self) -> None:
        self._seen: OrderedDict[Tool, deque[float]] = OrderedDict()

    def observe(self, tool: Tool, waited: float) -> None:
        if waited < MIN_SECONDS:
            return
        q = self._seen.get(tool)
        if q is None:
            q = self._seen[tool] = deque(maxlen=KEEP)
        q.append(waited)
        self._seen.move_to_end(tool)
        while len(self._seen) > TOOLS:
            self._seen.popitem(last=False)

    def limit(self, tool: Tool) -> float | None:
        q = self._seen.get(tool)
        if q is None or len(q) < EVIDENCE:
            return None
        return SHARE * min(q)

    def snapshot(self) -> list[dict[str, Any]]:
        return [{"listener": t[0], "user_agent": t[1], "gives_up_after_s": round(min(q), 1),
                 "waits_at_most_s": round(SHARE * min(q), 1) if len(q) >= EVIDENCE else None}
                for t, q in self._seen.items()]
