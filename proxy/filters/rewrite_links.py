"""Filter ``rewrite_links``: keep paging on the proxy by rewriting Exact's absolute links.

Contract
- For a JSON or XML (Atom) answer, every occurrence of the upstream base URL in the body (``__next``,
  ``__metadata.uri``, Atom ``link href``, ``xml:base``, entry ``id``) and in ``Location`` and
  ``Content-Location`` becomes the proxy's public base URL: the rule's ``base_url``, else the
  listener's ``public_base_url``, else ``http://`` + the request's ``Host``.
- Streams are rewritten chunk by chunk (``proxy.rewrite``); ``Content-Length`` is recomputed (small
  bodies) or dropped for chunked transfer (streams). gzip and deflate answers are decoded, rewritten
  and encoded again; to keep that possible the request asks Exact only for encodings the proxy can
  decode. A body without the upstream URL passes unchanged.
- Skipped when the policy (``links``) turns rewriting off for this listener or User-Agent, and when
  the tool addressed Exact's own host (forward-proxy mode): its links are already right.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

from ..rewrite import BodyCodec, LinkRewriter

REWRITABLE = ("json", "xml")  # content types whose bodies are rewritten


@functools.lru_cache(maxsize=256)
def _decodable(accept: str) -> str:
    """The client's ``Accept-Encoding`` cut to what the proxy can decode and encode again."""
    allowed = [e.strip() for e in accept.split(",")
               if e.split(";")[0].strip().lower() in ("gzip", "deflate", "identity", "*")]
    return ", ".join(allowed) if allowed else "identity"


class RewriteLinks:
    name = "rewrite_links"

    def __init__(self, services) -> None:
        self.services = services

    async def handle(self, ctx, call_next):
        enabled, base = ctx.policy.links.resolve(ctx.listener.name, ctx.request.headers)
        if not enabled or ctx.absolute_form:
            return await call_next(ctx)
        accept = ctx.request.headers.get("Accept-Encoding")
        if accept is not None:
            ctx.header_changes["Accept-Encoding"] = _decodable(accept)
        reply = await call_next(ctx)
        public = base or ctx.listener.public_base_url or _from_host(ctx)
        if public is None:
            return reply
        rw = LinkRewriter(ctx.upstream.base_url, public)
        for name in ("Location", "Content-Location"):
            if name in reply.headers:
                reply.headers[name] = rw.header(reply.headers[name])
        ctype = reply.headers.get("Content-Type", "").lower()
        if reply.local or ("json" not in ctype and "xml" not in ctype):
            return reply
        encoding = reply.headers.get("Content-Encoding", "").strip().lower()
        if not BodyCodec.supports(encoding):
            ctx.decide(f"links not rewritten (Content-Encoding {encoding})")
            return reply
        if reply.body is not None:
            new = _rewrite_whole(rw, reply.body, encoding)
            if rw.replaced:
                reply.body = new
                reply.length = len(new)
                ctx.decide("links rewritten")
            return reply
        if reply.stream is not None:
            reply.stream = _rewrite_stream(ctx, rw, reply.stream, BodyCodec(encoding))
            reply.length = None
        return reply


def _from_host(ctx) -> str | None:
    host = ctx.request.headers.get("Host")
    if not host:
        return None
    if ctx.upstream is not None and host.lower() in (ctx.upstream.host, ctx.upstream.authority):
        return None  # the tool already talks to Exact's host name through us
    scheme = "https" if getattr(ctx.listener, "tls", False) else "http"
    return f"{scheme}://{host}"


def _rewrite_whole(rw: LinkRewriter, body: bytes, encoding: str) -> bytes:
    if not encoding or encoding == "identity":
        return rw.rewrite_all(body)
    codec = BodyCodec(encoding)
    plain = codec.decode(body) + codec.decode_end()
    new = rw.rewrite_all(plain)
    if not rw.replaced:
        return body
    return codec.encode(new) + codec.encode_end()


async def _rewrite_stream(ctx, rw: LinkRewriter, stream: AsyncIterator[bytes], codec: BodyCodec
                          ) -> AsyncIterator[bytes]:
    async for chunk in stream:
        out = codec.encode(rw.feed(codec.decode(chunk)))
        if out:
            yield out
    tail = codec.encode(rw.feed(codec.decode_end()) + rw.close()) + codec.encode_end()
    if tail:
        yield tail
    if rw.replaced:
        ctx.decide("links rewritten")
