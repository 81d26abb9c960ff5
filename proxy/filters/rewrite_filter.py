"""Filter ``rewrite_filter``: add the ``$filter`` Exact demands to unfiltered GETs of legacy tools.

Contract
- A GET (list, ``$count``; not a single row by key) of a REST or bulk endpoint listed in
  ``mandatory_filters.endpoints``, or learned earlier, that has no ``$filter`` in any encoding gets
  ``$filter=<the endpoint's filter>`` appended. Every other byte of the query stays as sent. The
  decision reads ``rewritten (+$filter=…)``.
- Learning (``mandatory_filters.learn``): when Exact answers an unfiltered GET with its
  mandatory-filtering 400, the allowed fields are read from the message, a filter that keeps every row
  is chosen (``proxy.exact.mandatory.neutral_filter``), remembered (in the store when there is one, so it
  survives restarts) and the GET is replayed once with it. Each new endpoint costs one error, ever.
  A write is never touched or replayed.
- Never wider: a GET with a query option that is not an OData system option (``Accounts?ID=guid'…'``;
  ``proxy.exact.mandatory.custom_options``) never gets a ``$filter`` added, since Exact ignores that option
  and the tool would get every row where it meant one. On an endpoint listed or learned, the proxy
  answers 400 in Exact's envelope naming ``$filter`` and the options (Exact would refuse it too; this
  way no error is spent): ``refused (no $filter; options without $: ID)``. On one not known yet the
  GET goes to Exact as sent; Exact's mandatory-filter 400 is learned from but not replayed:
  ``learned mandatory filter, not replayed (options without $: ID)``.
- Cluster mode (``services.cluster``): the learned filters are the cluster's
  (``proxy.cluster.mandatory``): read at start, re-read (at most once a second) before an unknown
  endpoint is sent unfiltered, and on a mandatory-filter 400 the expression stored first by any node is
  the one used (``HSETNX``), so each endpoint costs the cluster about one error, not one per node.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from proxy.context import Context, Next, Reply
from proxy.errors import exact_error
from proxy.exact.mandatory import add_filter, custom_options, has_filter, neutral_filter, parse_allowed_fields

if TYPE_CHECKING:
    from proxy.cluster.mandatory import SharedFilters
    from proxy.services import Services
    from proxy.store.base import Store

log = logging.getLogger("exact_proxy.rewrite_filter")

LEARN_LIMIT = 64 * 1024  # the largest 400 read to learn a mandatory filter
NAMESPACE = "learned_filters"


class RewriteFilter:
    name = "rewrite_filter"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.learned: dict[str, str] = {}
        self.shared: SharedFilters | None = None  # cluster mode

    async def load(self, store: Store) -> None:
        """Read the endpoints learned in earlier runs (cluster mode: and by every node)."""
        self.learned.update({k: v for k, v in (await store.load(NAMESPACE)).items() if isinstance(v, str)})
        cluster = self.services.cluster
        if cluster is not None:
            from proxy.cluster.mandatory import SharedFilters

            self.shared = SharedFilters(cluster)
            self.learned.update(await self.shared.load())

    def wants(self, ctx: Context) -> bool:
        """An unfiltered GET of a list (not a row by key) of a REST or bulk endpoint."""
        cls = ctx.cls
        return not (ctx.method != "GET" or cls is None or cls.kind not in ("rest", "bulk") or cls.entity_key
                    or not cls.endpoint or has_filter(ctx.raw_query))

    async def handle(self, ctx: Context, call_next: Next) -> Reply:
        cls = ctx.cls
        assert cls is not None and cls.endpoint  # wants() let only classified calls of an endpoint in
        settings = ctx.policy.mandatory_filters
        key = cls.endpoint
        expr = settings.endpoints.get(key) or self.learned.get(key)
        if not expr and self.shared is not None:  # another node may have learned it since
            await self.shared.refresh(self.learned)
            expr = self.learned.get(key)
        custom = custom_options(ctx.raw_query)
        if expr and custom:
            return ctx.answer(self.name, _refuse(ctx, key, custom))
        if expr:
            ctx.raw_query = add_filter(ctx.raw_query, expr)
            ctx.decide(f"rewritten (+$filter={expr})")
            return await call_next(ctx)
        reply = await call_next(ctx)
        if reply.status != 400 or not settings.learn or reply.length is None or reply.length > LEARN_LIMIT:
            return reply  # Exact's mandatory-filter 400 is small and says its length; others pass whole
        body = await reply.read_body(LEARN_LIMIT)
        fields = parse_allowed_fields(_message(body))
        if fields is None:
            return reply
        expr = neutral_filter(fields)
        if expr is not None and self.shared is not None:
            expr = await self.shared.learn(key, expr)  # the first node's expression, on every node
        if expr is None:
            log.warning("endpoint %s demands a $filter on one of %s; none of them is known to keep every "
                        "row, so the tool gets Exact's 400. Add a filter for it under "
                        "mandatory_filters.endpoints in policies.yaml", key, ",".join(fields))
            return reply
        self.learned[key] = expr
        store = self.services.store
        if store is not None:
            store.put(NAMESPACE, key, expr)
        log.warning("learned: Exact demands a $filter on %s; adding %r from now on (add it under "
                    "mandatory_filters.endpoints in policies.yaml to make it explicit)", key, expr)
        if custom:
            ctx.decide(f"learned mandatory filter, not replayed (options without $: {_names(custom)})")
            return reply
        await reply.discard()
        ctx.raw_query = add_filter(ctx.raw_query, expr)
        ctx.decide(f"learned mandatory filter, replayed (+$filter={expr})")
        return await call_next(ctx)


def _names(custom: list[str], most: int = 5) -> str:
    shown = ", ".join(repr(n[:40]) for n in custom[:most])
    return shown + (f" and {len(custom) - most} more" if len(custom) > most else "")


def _refuse(ctx: Context, key: str, custom: list[str]) -> Reply:
    names = _names(custom)
    ctx.decide(f"refused (no $filter; options without $: {names})")
    return exact_error(400, f"{key} has mandatory filtering and this GET has no $filter. Exact ignores query "
                       f"options that do not start with '$' (here {names}), so it would refuse the GET, and "
                       "adding exact-proxy's neutral $filter would return every row. Put the condition in "
                       "$filter, e.g. $filter=ID eq guid'…'")


def _message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        return str(doc["error"]["message"]["value"])
    except (ValueError, KeyError, TypeError):
        return body[:4096].decode("utf-8", "replace")
