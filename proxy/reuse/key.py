"""When two GETs get the same answer from Exact: the key coalescing and the answer cache share.

Contract: ``answer_key(ctx)`` is None for a request whose answer is never shared: any method but GET,
a GET with a body, token and authorization requests (``oauth2/*``: a code or a token is one caller's),
and targets that are no API call (kind ``other``). Otherwise an ``AnswerKey`` equal for two requests
exactly when Exact would answer them alike and the proxy would hand them the same bytes:

- the upstream and the target as the tool sent it (path and query byte for byte, before
  ``rewrite_filter`` adds a ``$filter``);
- ``Accept``, ``Accept-Encoding`` and ``Accept-Language`` (JSON or Atom, gzip or not, the language of
  messages);
- who asks: the app and the broker's token chain (one user of one app, whatever access token of the
  chain the tool holds now); for a token the broker does not know, a digest of the ``Authorization``
  value (the value itself is never kept); no credentials at all is its own caller;
- how links are rewritten for it (``rewrite_links``): the listener, the ``Host`` header, and whether
  and to which base URL the ``links`` rules rewrite, so that a shared body carries the links the
  tool's own call would have got.

``scope`` (upstream, endpoint) is what a write to the endpoint invalidates.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.context import Context

NOT_SHARED_KINDS = frozenset(("token", "auth", "other"))
WRITES = frozenset(("POST", "PUT", "DELETE", "PATCH"))

Scope = tuple[str, str]  # (upstream, endpoint)


@dataclass(frozen=True, slots=True)
class AnswerKey:
    scope: Scope
    target: str
    accept: tuple[str, str, str]
    who: str
    links: tuple[str, str, bool, str | None]


def scope_of(ctx: Context) -> Scope | None:
    """(upstream, endpoint) of a request with an endpoint; None otherwise."""
    cls = ctx.cls
    if cls is None or not cls.endpoint or ctx.upstream is None:
        return None
    return ctx.upstream.name, cls.endpoint


def answer_key(ctx: Context) -> AnswerKey | None:
    cls = ctx.cls
    if ctx.method != "GET" or cls is None or cls.kind in NOT_SHARED_KINDS or ctx.request.body_exists:
        return None
    scope = scope_of(ctx)
    if scope is None:
        return None
    headers = ctx.request.headers
    if ctx.chain is not None:
        who = f"{cls.app} chain {ctx.chain.id}"
    else:
        auth = headers.get("Authorization")
        who = f"{cls.app} " + (hashlib.sha256(auth.encode("utf-8", "surrogateescape")).hexdigest()
                               if auth else "(no token)")
    enabled, base = ctx.policy.links.resolve(ctx.listener.name, headers)
    rewrite = enabled and not ctx.absolute_form
    return AnswerKey(scope, ctx.target,
                     (headers.get("Accept", ""), headers.get("Accept-Encoding", ""),
                      headers.get("Accept-Language", "")),
                     who, (ctx.listener.name, headers.get("Host", ""), rewrite, base if rewrite else None))
