"""Filter ``access_log``: one log line per request, written when the answer has been sent.

Contract: a step (``proxy.pipeline``) that registers a finisher on ``ctx``; the finisher logs method,
target (secrets masked), status, division, endpoint, app, upstream and total milliseconds, bytes in and
out, and every decision the other filters recorded, and counts the request in the metrics and in the
usage of its day, app, division, tool and endpoint (``proxy.ops.usage``); a request with a decision that
is not routine is kept for the dashboard (``proxy.ops.recent``). (An
exception from a filter becomes a 500 in Exact's envelope and an ERROR line in ``proxy.http.handler.handle``.)
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from proxy.context import Context
from proxy.ops.logs import log_access
from proxy.ops.redact import redact_query

if TYPE_CHECKING:
    from proxy.services import Services


class AccessLog:
    name = "access_log"

    def __init__(self, services: Services) -> None:
        self.services = services

    def before(self, ctx: Context) -> None:
        ctx.finishers.append(self._finish)

    def _finish(self, ctx: Context, status: int) -> None:
        clock = self.services.clock
        self.services.metrics.observe(ctx, status)
        self.services.usage.count(ctx, status)
        cls = ctx.cls
        fields = {
            "ts": clock.time(),
            "id": ctx.id,
            "listener": ctx.listener.name,
            "method": ctx.method,
            "path": ctx.client_path,
            "query": redact_query(ctx.client_query),
            "status": status,
            "app": cls.app if cls else None,
            "division": cls.division if cls else None,
            "endpoint": cls.endpoint if cls else None,
            "kind": cls.kind if cls else None,
            "upstream": ctx.upstream.name if ctx.upstream else None,
            "attempts": ctx.attempt,
            "upstream_ms": round(ctx.upstream_ms, 2) if ctx.attempt else None,
            "total_ms": round((time.perf_counter() - ctx.started) * 1000, 2),
            "bytes_in": ctx.bytes_in,
            "bytes_out": ctx.bytes_out,
            "decision": list(ctx.decisions),
        }
        log_access(fields)
        if ctx.decisions:
            self.services.recent.note(fields, ctx.request.headers.get("User-Agent"))
