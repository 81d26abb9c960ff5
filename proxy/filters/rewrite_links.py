"""Filter ``rewrite_links``: keep paging on the proxy by rewriting Exact's absolute links.

Contract
- For a JSON or XML (Atom) answer, every occurrence of the upstream base URL in the body (``__next``,
  ``__metadata.uri``, Atom ``link href``, ``xml:base``, entry ``id``) and in ``Location`` and
  ``Content-Location`` becomes the proxy's public base URL: the rule's ``base_url``, else the
  listener's ``public_base_url``, else ``http://`` + the request's ``Host``.
- Streams are rewritten chunk by chunk (``proxy.exact.links``); ``Content-Length`` is recomputed (small
  bodies) or dropped for chunked transfer (streams). gzip and deflate answers are decoded, rewritten
  and encoded again; to keep that possible the request asks Exact only for encodings the proxy can
  decode. A body without the upstream URL passes unchanged.
- Skipped when the policy (``links``) turns rewriting off for this listener or User-Agent, and when
  the tool addressed Exact's own host (forward-proxy mode): its links are already right.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from proxy.context import Context, Next, Reply
from proxy.exact.links import BodyCodec, LinkRewriter, plan, replace_all

if TYPE_CHECKING:
    from proxy.services import Services

REWRITABLE = ("json", "xml")  # content types whose bodies are rewritten
UNSUPPORTED = "unsupported"


@functools.lru_cache(maxsize=256)
def _body_encoding(content_type: str, content_encoding: str) -> str | None:
    """How a body of this type and encoding is rewritten: ``""`` as it is, ``gzip``/``deflate`` decoded
    first, ``UNSUPPORTED`` (an encoding the proxy cannot decode), None when the type holds no links."""
    ctype = content_type.lower()
    if not any(k in ctype for k in REWRITABLE):
        return None
    encoding = content_encoding.strip().lower()
    if not BodyCodec.supports(encoding):
        return UNSUPPORTED
    return "" if encoding == "identity" else encoding


@functools.lru_cache(maxsize=256)
def _decodable(accept: str) -> str:
    """The client's ``Accept-Encoding`` cut to what the proxy can decode and encode again."""
    allowed = [e.strip() for e in accept.split(",")
               if e.split(";")[0].strip().lower() in ("gzip", "deflate", "identity", "*")]
    return ", ".join(allowed) if allowed else "identity"


class RewriteLinks:
    name = "rewrite_links"

    def __init__(self, services: Services) -> None:
        self.services = services

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        enabled, base = ctx.policy.links.resolve(ctx.listener.name, ctx.request.headers)
        if not enabled or ctx.absolute_form:
            return await call_next(ctx)
        accept = ctx.request.headers.get("Accept-Encoding")
        if accept is not None:
            ctx.header_changes["Accept-Encoding"] = _decodable(accept)
        reply = await call_next(ctx)
        if reply.local:  # the proxy's own answer: no link of Exact's in it
            return reply
        public = base or ctx.listener.public_base_url or _from_host(ctx)
        if public is None:
            return reply
        upstream = ctx.upstream  # set by route whenever Exact answered
        headers = reply.headers
        if "Location" in headers or "Content-Location" in headers:
            assert upstream is not None
            rw = LinkRewriter(upstream.base_url, public)
            for name in ("Location", "Content-Location"):
                if name in headers:
                    headers[name] = rw.header(headers[name])
        encoding = _body_encoding(headers.get("Content-Type", ""), headers.get("Content-Encoding", ""))
        if encoding is None:
            return reply
        if encoding is UNSUPPORTED:
            ctx.decide(f"links not rewritten (Content-Encoding "
                       f"{headers.get('Content-Encoding', '').strip().lower()})")
            return reply
        if reply.body is not None:
            assert upstream is not None
            new, replaced = _rewrite_whole(plan(upstream.base_url, public), reply.body, encoding)
            if replaced:
                reply.body = new
                reply.length = len(new)
                ctx.decide("links rewritten")
            return reply
        if reply.stream is not None:
            assert upstream is not None
            rw = LinkRewriter(upstream.base_url, public)
            reply.stream = _rewrite_stream(ctx, rw, reply.stream, BodyCodec(encoding))
            reply.length = None
        return reply


def _from_host(ctx: Context) -> str | None:
    host = ctx.request.headers.get("Host")
    if not host:
        return None
    up = ctx.upstream
    return _public_base(host, up.host if up else None, up.authority if up else None,
                        bool(getattr(ctx.listener, "tls", False)))


@functools.lru_cache(maxsize=256)
def _public_base(host: str, upstream_host: str | None, upstream_authority: str | None, tls: bool) -> str | None:
    if host.lower() in (upstream_host, upstream_authority):
        return None  # the tool already talks to Exact's host name through us
    return f"{'https' if tls else 'http'}://{host}"


def _rewrite_whole(pairs: dict[bytes, bytes], body: bytes, encoding: str) -> tuple[bytes, int]:
    """A whole body rewritten (decoded and encoded again for gzip/deflate), and how many links."""
    if not encoding:
        return replace_all(pairs, body)
    codec = BodyCodec(encoding)
    new, replaced = replace_all(pairs, codec.decode(body) + codec.decode_end())
    if not replaced:
        return body, 0
    return codec.encode(new) + codec.encode_end(), replaced


async def _rewrite_stream(ctx: Context, rw: LinkRewriter, stream: AsyncIterator[bytes], codec: BodyCodec
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
