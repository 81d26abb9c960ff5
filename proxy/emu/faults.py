"""Injectable faults per path pattern.

Contract
- A rule is a dict: ``path`` (fnmatch glob on the request path, case-insensitive, default ``*``),
  ``methods`` (list, default all), ``kind`` (``503``, ``408``, ``599``, ``slow``, ``reset``, ``empty``),
  and when it fires: ``every: N`` (the Nth, 2Nth… matching call), ``probability: p`` with ``seed`` (a seeded
  generator, reproducible), or always. ``delay`` (seconds on the emulator's clock) for ``slow``;
  ``status`` for ``empty`` (default 200).
- ``Faults(rules).pick(method, path) -> Rule | None``: the first rule that fires for this call.
- Bad rules raise ``ValueError`` when constructed.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from random import Random

KINDS = {"503", "408", "599", "slow", "reset", "empty"}


@dataclass
class Rule:
    path: str
    methods: frozenset[str] | None
    kind: str
    every: int | None
    probability: float | None
    rng: Random
    delay: float
    status: int
    seen: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return fnmatch.fnmatchcase(path.lower(), self.path)

    def fires(self) -> bool:
        self.seen += 1
        if self.every is not None:
            return self.seen % self.every == 0
        if self.probability is not None:
            return self.rng.random() < self.probability
        return True


def _rule(d: dict) -> Rule:
    if not isinstance(d, dict):
        raise ValueError(f"fault rule must be a mapping, got {d!r}")
    extra = set(d) - {"path", "methods", "kind", "every", "probability", "seed", "delay", "status"}
    if extra:
        raise ValueError(f"fault rule: unknown key(s) {sorted(extra)}")
    kind = str(d.get("kind", ""))
    if kind not in KINDS:
        raise ValueError(f"fault rule: kind must be one of {sorted(KINDS)}, got {d.get('kind')!r}")
    every = d.get("every")
    if every is not None and (not isinstance(every, int) or every < 1):
        raise ValueError("fault rule: every must be a positive integer")
    p = d.get("probability")
    if p is not None and not (0 <= float(p) <= 1):
        raise ValueError("fault rule: probability must be between 0 and 1")
    methods = d.get("methods")
    return Rule(
        path=str(d.get("path", "*")).lower(),
        methods=frozenset(m.upper() for m in methods) if methods else None,
        kind=kind,
        every=every,
        probability=None if p is None else float(p),
        rng=Random(d.get("seed", 0)),
        delay=float(d.get("delay", 0)),
        status=int(d.get("status", 200)),
    )


class Faults:
    def __init__(self, rules: list[dict] | None) -> None:
        self.rules = [_rule(r) for r in rules or []]

    def pick(self, method: str, path: str) -> Rule | None:
        for r in self.rules:
            if r.matches(method, path) and r.fires():
                return r
        return None
