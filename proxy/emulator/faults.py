"""Injected faults: 503, 408, 599, slow and late answers, connection resets and empty answers, per path
pattern.

Contract: each rule is ``{path: glob, methods?: [..], kind: 503|408|599|slow|late|reset|empty,
every?: N, probability?: p, seed?: s, delay?: seconds}``. ``Faults.pick(method, path)`` returns the
rule that fires for this call, or None: ``every: N`` fires on every Nth matching call, ``probability``
draws from a generator seeded with ``seed`` (repeatable). Rules are tried in order.
``await answer(rule, request, clock)`` is what the client gets: 503/408 with Exact's envelope, 599 with an
empty body, ``empty`` a 200 without a body, ``reset`` aborts the connection (returns None after closing
it), ``slow`` waits ``delay`` seconds on the clock and returns None (the call then goes on normally);
``late`` serves the call at once (a refresh rotates the token) and holds the answer ``delay`` seconds:
a client that goes away meanwhile never learns what Exact did (the app serves it, not ``answer``).
Faulted calls are answered before anything else and never count toward the call or error limits
(Exact's 503 did not process the call).
"""

from __future__ import annotations

import fnmatch
import json
import random

from aiohttp import web

KINDS = ("503", "408", "599", "slow", "late", "reset", "empty")


def validate_faults(rules) -> None:
    if not isinstance(rules, list):
        raise ValueError("faults: must be a list of rules")
    for rule in rules:
        if not isinstance(rule, dict) or str(rule.get("kind")) not in KINDS or "path" not in rule:
            raise ValueError(f"faults: each rule needs path and kind (one of {', '.join(KINDS)}), got {rule!r}")
        unknown = set(rule) - {"path", "methods", "kind", "every", "probability", "seed", "delay"}
        if unknown:
            raise ValueError(f"faults: unknown keys {sorted(unknown)} in {rule!r}")


class Faults:
    def __init__(self, rules) -> None:
        self.set(rules)

    def set(self, rules) -> None:
        validate_faults(rules)
        self.rules = [dict(r, kind=str(r["kind"])) for r in rules]
        self._seen = [0] * len(self.rules)
        self._rng = [random.Random(r.get("seed", 0)) for r in self.rules]

    def pick(self, method: str, path: str) -> dict | None:
        if not self.rules:
            return None
        low = path.lower()
        for i, rule in enumerate(self.rules):
            if not fnmatch.fnmatchcase(low, str(rule["path"]).lower()):
                continue
            methods = rule.get("methods")
            if methods and method.upper() not in [m.upper() for m in methods]:
                continue
            self._seen[i] += 1
            every = rule.get("every")
            if every and self._seen[i] % int(every) == 0:
                return rule
            p = rule.get("probability")
            if p is not None and not every and self._rng[i].random() < float(p):
                return rule
        return None


async def answer(rule: dict, request: web.Request, clock) -> web.StreamResponse | None:
    kind = rule["kind"]
    if kind == "slow":
        await clock.sleep(float(rule.get("delay", 5)))
        return None
    if kind == "reset":
        if request.transport is not None:
            request.transport.abort()
        return None
    if kind == "empty":
        return web.Response(status=200, body=b"")
    if kind == "599":
        return web.Response(status=599, reason="Unknown", body=b"")
    status = int(kind)
    text = "Service Unavailable" if status == 503 else "Request Timeout"
    body = json.dumps({"error": {"code": "", "message": {"lang": "", "value": text}}}).encode()
    return web.Response(status=status, body=body, content_type="application/json")
