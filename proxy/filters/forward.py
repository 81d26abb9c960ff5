"""Filter ``forward``: the end of the road. Sends the request to Exact and streams the answer back.

Contract
- Method, path and query go upstream byte for byte as the client sent them (no re-encoding); headers
  pass ``hop.to_upstream``; the body is ``ctx.body.payload()`` (buffered or streamed).
- The upstream answer comes back as a ``Reply``. A body declared at most 64 KiB is read whole into
  ``body``; any other body stays a ``stream`` that yields chunks as they arrive, undecoded (``Content-Encoding`` passes through with the bytes it describes). The connection
  returns to the pool when the stream ends or the reply is discarded.
- An upstream that cannot be reached, resets, or is too slow gives a local 502 or 504 in Exact's
  envelope naming the cause, with ``reply.failure`` set to ``connect`` (nothing was sent: safe to
  retry), ``timeout`` or ``reset`` (the request may have reached Exact: never replay a write).
- A streamed body that ends in ``BodyTooLarge`` (413) or ``BodyStalled`` (408) is never completed
  upstream (no last chunk, fewer bytes than declared; the connection is dropped) and gets that local
  answer (``proxy.http.body.refusal``), not a 502.
- Each call increments ``ctx.attempt``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from proxy.context import Context, Next, Reply
from proxy.errors import exact_error
from proxy.http import hop
from proxy.http.body import BodyConsumed, BodyStalled, BodyTooLarge, refusal

if TYPE_CHECKING:
    from proxy.policy.sections import Forwarding
    from proxy.services import Services

SKIP_AUTO = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
SMALL_BODY = 64 * 1024  # answers up to this size (declared) are read whole: one write to the client
NO_BODY_STATUS = frozenset({204, 304})


class Forward:
    name = "forward"

    def __init__(self, services: Services) -> None:
        self.services = services
        self._fwd: Forwarding | None = None
        self._client_timeout: aiohttp.ClientTimeout | None = None

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        up = ctx.upstream
        assert up is not None  # route chose it (or answered)
        fwd = ctx.policy.forwarding
        session = self.services.http
        if session is None:
            raise RuntimeError("the upstream HTTP session is not open (Services.start opens it)")
        url = URL(up.base_url + ctx.raw_path + ("?" + ctx.raw_query if ctx.raw_query else ""), encoded=True)
        headers = hop.to_upstream(ctx.request.headers, up.authority)
        for name, value in ctx.header_changes.items():
            headers.popall(name, None)
            if value is not None:
                headers[name] = value
        try:
            data = ctx.body.payload() if ctx.body is not None else None
        except BodyConsumed:
            return ctx.answer(self.name, exact_error(502, "the request body was streamed once already and "
                                                     "cannot be sent again"))
        if ctx.body is not None and not ctx.body.replayable and ctx.body.declared is not None:
            headers["Content-Length"] = str(ctx.body.declared)
        if fwd is not self._fwd:  # the policy changed (or first call): its timeouts, made once
            self._fwd, self._client_timeout = fwd, _timeout(fwd)
        timeout = self._client_timeout
        ctx.attempt += 1
        t0 = time.perf_counter()
        try:
            try:
                resp = await session.request(ctx.method, url, headers=headers, data=data,
                                             allow_redirects=False, skip_auto_headers=SKIP_AUTO,
                                             timeout=timeout, ssl=self.services.ssl_for(up))
            except (TimeoutError, aiohttp.ClientError):
                # the HTTP client wraps what the body stream raised: the body's own failure is the cause
                if ctx.body is not None and ctx.body.failure is not None:
                    raise ctx.body.failure from None
                raise
        except (BodyTooLarge, BodyStalled) as exc:
            # the stream stopped before its end: Exact got no complete request, and the HTTP client
            # closed that connection (a request body it could not finish is never reused)
            ctx.upstream_failure = None
            decision, reply = refusal(exc)
            ctx.decide(decision)
            ctx.bytes_in = ctx.body.size if ctx.body is not None else 0
            return ctx.answer(self.name, reply)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            return self._failed(ctx, t0, 504, "timeout", f"Exact did not answer within the timeout "
                                f"({_timeout_text(exc, fwd)}) at {up.base_url}")
        except aiohttp.ClientConnectorError as exc:
            return self._failed(ctx, t0, 502, "connect", f"cannot connect to {up.base_url}: "
                                f"{exc.os_error.strerror or exc.os_error}")
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            return self._failed(ctx, t0, 502, "reset", f"connection to {up.base_url} was reset "
                                f"before an answer came: {exc}")
        except aiohttp.ClientResponseError as exc:
            return self._failed(ctx, t0, 502, "reset", f"{up.base_url} sent an invalid answer: {exc.message}")
        except aiohttp.ClientError as exc:
            return self._failed(ctx, t0, 502, "reset", f"upstream error from {up.base_url}: "
                                f"{type(exc).__name__}")
        ctx.upstream_ms += (time.perf_counter() - t0) * 1000
        ctx.upstream_failure = None
        self.services.metrics.upstream(resp.status)
        out_headers = hop.to_client(resp.headers)
        bodyless = ctx.method == "HEAD" or resp.status in NO_BODY_STATUS or 100 <= resp.status < 200
        if bodyless:
            resp.release()
            return _reply(resp.status, out_headers, resp.reason, b"", None, None)
        length = resp.content_length
        if length is not None and length <= SMALL_BODY:
            try:
                body = await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                resp.release()
                return self._failed(ctx, t0, 502, "reset", f"{up.base_url} broke off its answer: "
                                    f"{type(exc).__name__}")
            finally:
                resp.release()
            return _reply(resp.status, out_headers, resp.reason, body, None, len(body))
        if length is None:
            out_headers.popall("Content-Length", None)
        return _reply(resp.status, out_headers, resp.reason, None, _chunks(resp), length, resp)

    def _failed(self, ctx: Context, t0: float, status: int, failure: str, message: str) -> Reply:
        ctx.upstream_ms += (time.perf_counter() - t0) * 1000
        ctx.decide(f"upstream {failure}")
        ctx.upstream_failure = failure
        self.services.metrics.upstream_failure(failure)
        reply = exact_error(status, message)
        reply.failure = failure
        return ctx.answer(self.name, reply)


def _reply(status: int, headers: CIMultiDict[str], reason: str | None, body: bytes | None,
           stream: AsyncIterator[bytes] | None, length: int | None, resp: aiohttp.ClientResponse | None = None
           ) -> Reply:
    if resp is None:
        return Reply(status, headers, body, stream, length, reason=reason)

    async def release() -> None:
        resp.release()

    return Reply(status, headers, body, stream, length, release=release, reason=reason)


async def _chunks(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
    finally:
        resp.release()


def _timeout(fwd: Forwarding) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=fwd.total_timeout, connect=fwd.connect_timeout, sock_read=fwd.read_timeout)


def _timeout_text(exc: BaseException, fwd: Forwarding) -> str:
    text = str(exc)
    if "connect" in text.lower():
        return f"connect_timeout {fwd.connect_timeout:g} s"
    return f"read_timeout {fwd.read_timeout:g} s / total_timeout {fwd.total_timeout:g} s"
