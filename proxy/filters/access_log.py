"""Filter ``access_log``: one log line per request, written when the answer has been sent.

Contract: registers a finisher on ``ctx`` that logs method, target (secrets masked), status, division,
endpoint, app, upstream and total milliseconds, bytes in and out, and every decision the other filters
recorded. An exception from an inner filter becomes a 500 in Exact's envelope and an ERROR line with
the traceback; the proxy keeps running.
"""

from __future__ import annotations

import logging
import time

from ..errors import exact_error
from ..logs import log_access
from ..redact import redact_query

log = logging.getLogger("exact_proxy.pipeline")


class AccessLog:
    name = "access_log"

    def __init__(self, services) -> None:
        self.services = services

    async def handle(self, ctx, call_next):
        ctx.finishers.append(self._finish)
        try:
            return await call_next(ctx)
        except Exception as exc:  # an inner filter failed: answer, log, keep serving
            log.exception("request %s %s failed in the proxy: %s", ctx.method, ctx.raw_path,
                          type(exc).__name__)
            ctx.decide(f"proxy error ({type(exc).__name__})")
            return exact_error(500, f"internal proxy error ({type(exc).__name__}); see the proxy log")

    def _finish(self, ctx, status: int) -> None:
        clock = self.services.clock
        self.services.metrics.observe(ctx, status)
        cls = ctx.cls
        log_access({
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
        })
