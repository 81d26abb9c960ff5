"""Requests the HTTP parser refuses, answered in Exact's error envelope.

Contract: ``ExactServer`` is aiohttp's low-level ``web.Server`` whose connections answer a request that
cannot be parsed (conflicting ``Content-Length`` and ``Transfer-Encoding``, duplicate lengths, invalid
chunking, oversize headers: the shapes of request smuggling) with a JSON 400 in Exact's envelope that
names the cause, and close the connection. Nothing of such a request is ever forwarded. The proxy logs
one WARNING line (no traceback: a bad client is not a proxy fault). ``ExactServer(handler, settings=…)``
takes a callable that returns the policy's ``clients`` settings, read by each new connection for its
deadlines (``proxy.http.client_timeouts``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from proxy.errors import envelope
from proxy.http.client_settings import ClientSettings
from proxy.http.client_timeouts import TimedRequestHandler

log = logging.getLogger("exact_proxy.listen")


class _ExactRequestHandler(TimedRequestHandler):
    __slots__ = ()

    def handle_error(self, request, status=500, exc=None, message=None):  # noqa: D401 - aiohttp API
        if status == 500:
            return super().handle_error(request, status, exc, message)
        reason = " ".join((message or str(exc) or "bad request").split())
        reason = reason.replace("\\r\\n", " ")[:300]
        log.warning("refused a malformed request from %s: %s", request.remote, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already")
        body = envelope(f"malformed HTTP request, refused: {reason}")
        resp = web.Response(status=status, body=body, content_type="application/json", charset="utf-8",
                            headers={"X-Exact-Proxy": "local"})
        resp.force_close()
        return resp


class ExactServer(web.Server):
    def __init__(self, handler, *, settings: Callable[[], ClientSettings] = ClientSettings, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.settings = settings

    def __call__(self) -> RequestHandler:
        return _ExactRequestHandler(self, loop=self._loop, **self._kwargs)
