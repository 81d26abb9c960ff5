"""Filter ``classify``: fill ``ctx.cls`` with app, division, endpoint and kind (``proxy.classify``).

A step that never answers locally; every later filter reads ``ctx.cls``.
"""

from __future__ import annotations

from ..classify import classify


class Classify:
    name = "classify"

    def __init__(self, services) -> None:
        self.services = services

    def before(self, ctx):
        ctx.cls = classify(ctx.method, ctx.raw_path, ctx.raw_query,
                           ctx.request.headers.get("Authorization"), ctx.policy.default_app)
