"""The ``coalesce:`` and ``cache:`` sections of policies.yaml.

``coalesce`` (on by default): identical GETs in flight at the same time go to Exact once.
``max_body``: the largest answer shared that way (it is held in memory while the tools get it).

``cache`` (off for every endpoint not listed): a list of ``{endpoint, ttl}``, or a mapping with that
list under ``endpoints`` and the memory caps ``max_entries``, ``max_bytes`` (all entries together)
and ``max_entry`` (one answer). An endpoint is written as the classifier names it (the log's ``ep=``):
``system/divisions``, ``current/me``, ``crm/accounts`` (case-folded; no division, no ``/api/v1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proxy.policy.reader import Reader

MiB = 1024 * 1024


@dataclass(frozen=True)
class CoalesceSettings:
    enabled: bool = True
    max_body: int = MiB


@dataclass(frozen=True)
class CacheSettings:
    ttls: dict[str, float] = field(default_factory=dict)  # endpoint -> seconds an answer is reused
    max_entries: int = 1000
    max_bytes: int = 32 * MiB
    max_entry: int = MiB


def read_coalesce(r: Reader) -> CoalesceSettings:
    d = CoalesceSettings()
    s = CoalesceSettings(enabled=r.boolean("enabled", d.enabled), max_body=r.size("max_body", d.max_body))
    r.finish()
    return s


def read_cache(r: Reader) -> CacheSettings:
    """``r`` is the document's top-level reader: the section may be a list or a mapping."""
    d = CacheSettings()
    value = r.data.get("cache")
    if isinstance(value, list):
        rules = r.sequence("cache")
        caps = None
    else:
        caps = r.mapping("cache")
        rules = caps.sequence("endpoints")
    ttls: dict[str, float] = {}
    for rule in rules or []:
        endpoint = rule.text("endpoint")
        ttl = rule.number("ttl", 0.0, minimum=0, exclusive_minimum=True) if rule.has("ttl") else None
        if ttl is None:
            rule.problem(("ttl",), "is required: seconds an answer of this endpoint is reused, like 300")
        rule.finish()
        if endpoint is None:
            continue
        name = endpoint.strip().lower()
        why = _bad_endpoint(name)
        if why:
            rule.problem(("endpoint",), why)
        elif name in ttls:
            rule.problem(("endpoint",), f"{name} is listed twice")
        elif ttl is not None:
            ttls[name] = ttl
    if caps is None:
        return CacheSettings(ttls=ttls)
    s = CacheSettings(ttls=ttls, max_entries=caps.integer("max_entries", d.max_entries, minimum=1),
                      max_bytes=caps.size("max_bytes", d.max_bytes), max_entry=caps.size("max_entry", d.max_entry))
    caps.finish()
    if s.max_entry > s.max_bytes:
        caps.problem(("max_entry",), f"must not exceed max_bytes ({s.max_bytes})")
    return s


def _bad_endpoint(name: str) -> str | None:
    if not name:
        return "must name an endpoint, like system/divisions"
    first = name.strip("/").split("/")[0]
    if name.startswith("/") or first in ("api", "v1") or first.isdigit() or "(" in name or "?" in name:
        return (f"{name!r}: write the endpoint as the log's ep= names it, without /api/v1, division, key or "
                "query: system/divisions, current/me, crm/accounts")
    if first == "oauth2":
        return "token and authorization answers are never cached (each belongs to one caller)"
    return None
