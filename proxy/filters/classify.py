"""Filter ``classify``: fill ``ctx.cls`` with app, division, endpoint and kind (``proxy.exact.classify``).

A step; every later filter reads ``ctx.cls``. It answers locally only to refuse a target (below).

The app of a call that does not show its client id (a Bearer token; the token broker refines it from a
token it knows) is, in order: the listener's ``app``, the policy's ``default_app``, the one app the
broker knows when it knows exactly one, else ``unknown``. Never a pseudo-app beside a real one.
``ctx.tokenless`` says the call carries no credentials at all: such calls never spend an app's error
budget (Exact cannot charge them to an app either).

A target the classification refuses (``Classification.refusal``: an odd division spelling, a dot
segment; ``proxy.exact.odd_targets``) is answered here with 400 in Exact's envelope naming the cause, and the
decision ``refused (<cause>)``. Nothing of it is forwarded, and no error is counted: Exact never saw it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.context import Context, Reply
from proxy.errors import exact_error
from proxy.exact.classify import classify

if TYPE_CHECKING:
    from proxy.services import Services

UNKNOWN_APP = "unknown"
TOKEN_KINDS = ("token", "auth")  # their credentials are in the body or the query


class Classify:
    name = "classify"

    def __init__(self, services: Services) -> None:
        self.services = services

    def before(self, ctx: Context) -> Reply | None:
        auth = ctx.request.headers.get("Authorization")
        default = ctx.listener.app or ctx.policy.default_app or self.services.tokens.book.only_app \
            or UNKNOWN_APP
        cls = ctx.cls = classify(ctx.method, ctx.raw_path, ctx.raw_query, auth, default)
        ctx.tokenless = not auth and cls.kind not in TOKEN_KINDS
        if cls.refusal is not None:
            ctx.decide(f"refused ({cls.refusal.short})")
            return exact_error(400, cls.refusal.message)
        return None
