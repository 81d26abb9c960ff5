"""The ``error_budget:`` section of policies.yaml.

Exact blocks an app for an hour after more than 10 errors (400, 401, 403, 404) per app, division and
endpoint in an hour. The proxy stops below that (``budget``), keeping room for errors nobody foresees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.policy.reader import Reader

DEFAULT_STATUSES = (400, 401, 403, 404)


@dataclass(frozen=True)
class ErrorBudgetSettings:
    enabled: bool = True
    statuses: frozenset[int] = field(default_factory=lambda: frozenset(DEFAULT_STATUSES))
    budget: int = 8                     # answer locally from this many counted errors in the window
    exact_limit: int = 10               # Exact's own limit, for the headers and the status page
    window: float = 3600.0              # rolling, seconds
    refusal_status: int = 429           # what a refused request gets (never 401: clients loop on it)
    negative_cache_ttl: float = 300.0   # an identical GET that just got 404/400 is answered locally
    negative_cache_statuses: frozenset[int] = field(default_factory=lambda: frozenset((400, 404)))
    negative_cache_entries: int = 10000
    block_pause: float = 3600.0         # how long to stop after Exact blocked an endpoint anyway


def read_error_budget(r: Reader) -> ErrorBudgetSettings:
    d = ErrorBudgetSettings()
    statuses = _statuses(r, "statuses", d.statuses)
    cache = r.mapping("negative_cache")
    s = ErrorBudgetSettings(
        enabled=r.boolean("enabled", d.enabled),
        statuses=statuses,
        budget=r.integer("budget", d.budget, minimum=1, maximum=10000),
        exact_limit=r.integer("exact_limit", d.exact_limit, minimum=1, maximum=10000),
        window=r.number("window", d.window, minimum=1),
        refusal_status=r.integer("refusal_status", d.refusal_status, minimum=400, maximum=599),
        negative_cache_ttl=cache.number("ttl", d.negative_cache_ttl, minimum=0),
        negative_cache_statuses=_statuses(cache, "statuses", d.negative_cache_statuses),
        negative_cache_entries=cache.integer("max_entries", d.negative_cache_entries, minimum=0),
        block_pause=r.number("block_pause", d.block_pause, minimum=0),
    )
    cache.finish()
    r.finish()
    if s.refusal_status == 401:
        r.problem(("refusal_status",), "must not be 401: clients answer a 401 by refreshing tokens in a loop")
    if s.budget > s.exact_limit:
        r.problem(("budget",), f"must not exceed exact_limit ({s.exact_limit}), or Exact blocks the app first")
    return s


def _statuses(r: Reader, key: str, default: frozenset[int]) -> frozenset[int]:
    r.seen.add(key)
    value = r.data.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, int) and 400 <= v <= 599 for v in value):
        r.problem((key,), "must be a list of HTTP status codes between 400 and 599, like [400, 401, 403, 404]")
        return default
    return frozenset(value)
