"""Where the budget went: usage per UTC day, app, division, tool and endpoint, kept in the state file.

Contract
- ``Usage(services)``; ``count(ctx, status)`` is called once per request when its answer has been sent
  (by the access log's finisher). It costs a few dict look-ups and increments: the request is counted
  in the record of its key (UTC day, app, division, listener, tool family of its User-Agent
  (``proxy.ops.tool_family``), endpoint): ``requests``; ``exact_calls`` (attempts sent to Exact,
  replays included); ``local`` (answered without Exact, by the filter that did, ``ctx.answered_by``;
  ``proxy`` when none is named); ``failed`` (no answer from Exact: connect, timeout, reset); ``queued``
  and ``queued_ms`` (``ctx.queued_ms``); ``errors`` (Exact's own 400, 401, 403, 404 and 429 answers, by
  status); ``whole_reads`` and ``whole_calls`` (``proxy.ops.advice.whole_read``: first pages, and all
  pages, of whole reads of a set with a sync or bulk alternative).
- Bounded: at most ``usage.max_keys_per_day`` records a day (further keys go to one overflow record,
  ``(other)``); days older than ``usage.keep_days`` are dropped from memory and from the store at the
  first request of a new day and at start.
- Kept in the state store, namespace ``usage``, one record per day and key (a JSON object that names
  its key fields), written behind: each request puts its record (the same object, no copy and no
  encoding) into the store, which writes the latest counts in its next batch, at least every
  ``state.flush_interval``, and at a clean stop; ``load(store)`` reads them back.
- Advice (``usage.advice``): when a tool's whole reads of one endpoint pass ``whole_reads`` in a UTC
  day, one INFO line on ``exact_proxy.advice``, once per day, tool and endpoint (also after a restart:
  what was already past the threshold at start is not logged again).
- ``report(day, by)``: the JSON of ``/_proxy/usage`` (``summarize``); ``advice(day)``: the advice
  entries of a day (``proxy.ops.advice.advice_rows``). ``summarize(records, day, by, settings, scope)``
  is the same report from records read from the state file (``exact-proxy usage`` with no proxy).
- Metrics: per-tool counters since start, labelled by listener and tool family only (never a raw
  User-Agent): ``exact_proxy_tool_requests_total{listener,tool,outcome}`` (outcome as in
  ``proxy.ops.metrics``), ``exact_proxy_tool_exact_calls_total``, ``exact_proxy_tool_queued_seconds_total``
  and ``exact_proxy_tool_exact_errors_total{status}``; ``collector()`` gives them to the registry.
- Cluster mode: usage is this node's own (each node counts what it answered); ``report`` says so.
Nothing here holds a token or a query: records carry names, numbers and counts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily

from proxy.exact.alternatives import ALTERNATIVES
from proxy.exact.mandatory import DEFAULT_FILTER
from proxy.ops import advice as advice_mod
from proxy.ops.tool_family import family

if TYPE_CHECKING:
    from proxy.context import Context
    from proxy.ops.usage_settings import UsageSettings
    from proxy.services import Services
    from proxy.store.base import Store

log = logging.getLogger("exact_proxy.usage")

NAMESPACE = "usage"
ERRORS = frozenset((400, 401, 403, 404, 429))
OTHER = "(other)"
BY = {"tool": ("listener", "tool"), "division": ("app", "division"), "endpoint": ("endpoint",),
      "app": ("app",)}
FIELDS = ("app", "division", "listener", "tool", "endpoint")
PER_NODE = "this node only (cluster mode: each node counts the requests it answered)"

Key = tuple[Any, ...]  # (app, division, listener, tool, endpoint)


class Tally:
    """One record: the counts of one day and key. ``rec`` is the JSON object the store holds (the same
    object: the store writes its latest counts in its next batch)."""

    __slots__ = ("day", "key", "skey", "rec")

    def __init__(self, day: str, key: Key, rec: dict[str, Any] | None = None) -> None:
        self.day, self.key = day, key
        self.skey = json.dumps([day, *key], separators=(",", ":"))
        if rec is None:
            rec = {"day": day, **dict(zip(FIELDS, key, strict=True)), "requests": 0, "exact_calls": 0,
                   "failed": 0, "queued": 0, "queued_ms": 0.0, "local": {}, "errors": {}, "whole_reads": 0,
                   "whole_calls": 0}
        self.rec = rec

    @classmethod
    def from_json(cls, rec: dict[str, Any]) -> Tally:
        key = tuple(rec.get(f) for f in FIELDS)
        clean: dict[str, Any] = {"day": str(rec["day"]), **dict(zip(FIELDS, key, strict=True))}
        for name in ("requests", "exact_calls", "failed", "queued", "whole_reads", "whole_calls"):
            clean[name] = int(rec.get(name) or 0)
        clean["queued_ms"] = float(rec.get("queued_ms") or 0.0)
        clean["local"] = {str(k): int(v) for k, v in (rec.get("local") or {}).items()}
        clean["errors"] = {str(k): int(v) for k, v in (rec.get("errors") or {}).items()}
        return cls(clean["day"], key, clean)


class _ToolTotals:
    __slots__ = ("outcomes", "exact_calls", "queued_ms", "errors")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.exact_calls = 0
        self.queued_ms = 0.0
        self.errors: dict[str, int] = {}


def day_text(day_number: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day_number * 86400))


class Usage:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.days: dict[str, dict[Key, Tally]] = {}
        self._day_number = -1
        self._day = ""
        self._today: dict[Key, Tally] = {}
        self._tools: dict[tuple[str, str], _ToolTotals] = {}
        self._whole: dict[tuple[str, str, str], list[int]] = {}  # today's (listener, tool, endpoint)
        self._advised: set[tuple[str, str, str]] = set()
        self._store: Store | None = None

    # -- per request -------------------------------------------------------------------------------
    def count(self, ctx: Context, status: int) -> None:
        day_number = int(self.services.clock.time() // 86400)
        if day_number != self._day_number:
            self._new_day(day_number)
        cls = ctx.cls
        listener = ctx.listener.name
        tool = family(ctx.request.headers.get("User-Agent"))
        key: Key = (cls.app, cls.division, listener, tool, cls.endpoint) if cls else (None, None, listener,
                                                                                      tool, None)
        t = self._today.get(key)
        if t is None:
            t = self._new_record(key)
        totals = self._tools.get((listener, tool))
        if totals is None:
            totals = self._tools[(listener, tool)] = _ToolTotals()
        rec = t.rec
        rec["requests"] += 1
        by = ctx.answered_by
        if ctx.upstream_failure is not None:
            rec["failed"] += 1
            outcome = "failed"
        elif by is not None or not ctx.attempt:
            by = by or "proxy"
            local = rec["local"]
            local[by] = local.get(by, 0) + 1
            outcome = "local:" + by
        else:
            outcome = "upstream"
            if status in ERRORS:
                code = str(status)
                errors = rec["errors"]
                errors[code] = errors.get(code, 0) + 1
                totals.errors[code] = totals.errors.get(code, 0) + 1
        totals.outcomes[outcome] = totals.outcomes.get(outcome, 0) + 1
        if ctx.attempt:
            rec["exact_calls"] += ctx.attempt
            totals.exact_calls += ctx.attempt
        if ctx.queued_ms:
            rec["queued"] += 1
            rec["queued_ms"] += ctx.queued_ms
            totals.queued_ms += ctx.queued_ms
        if status == 200 and cls is not None and cls.endpoint in ALTERNATIVES:
            self._whole_read(ctx, rec, listener, tool)
        store = self._store
        if store is not None:  # written behind: the store writes the record's latest counts in its batch
            store.put(NAMESPACE, t.skey, rec)

    def _whole_read(self, ctx: Context, rec: dict[str, Any], listener: str, tool: str) -> None:
        cls = ctx.cls
        assert cls is not None and cls.endpoint is not None
        endpoint = cls.endpoint
        page = advice_mod.whole_read(ctx, (ctx.policy.mandatory_filters.endpoints.get(endpoint),
                                           self._learned(endpoint), DEFAULT_FILTER))
        if not page:
            return
        w = self._whole.get((listener, tool, endpoint))
        if w is None:
            w = self._whole[(listener, tool, endpoint)] = [0, 0]
        rec["whole_calls"] += 1
        w[1] += 1
        if page == advice_mod.FIRST:
            rec["whole_reads"] += 1
            w[0] += 1
            settings = ctx.policy.usage.advice
            if settings.enabled and w[0] > settings.whole_reads and (listener, tool, endpoint) not in self._advised:
                self._advised.add((listener, tool, endpoint))
                advice_mod.log.info("advice: %s", advice_mod.text(listener, tool, ALTERNATIVES[endpoint],
                                                                  w[0], w[1]))

    def _learned(self, endpoint: str) -> str | None:
        for f in self.services.filters:
            if f.name == "rewrite_filter":
                learned = getattr(f, "learned", None)
                return learned.get(endpoint) if isinstance(learned, dict) else None
        return None

    def _new_record(self, key: Key) -> Tally:
        if len(self._today) >= self.services.policy.usage.max_keys_per_day:
            key = (OTHER, None, OTHER, OTHER, OTHER)
            t = self._today.get(key)
            if t is not None:
                return t
        t = self._today[key] = Tally(self._day, key)
        return t

    def _new_day(self, day_number: int) -> None:
        self._day_number, self._day = day_number, day_text(day_number)
        self._today = self.days.setdefault(self._day, {})
        self._whole, self._advised = {}, set()
        for t in self._today.values():  # a day read back from the store
            if t.rec["whole_calls"]:
                w = self._whole.setdefault((str(t.key[2]), str(t.key[3]), str(t.key[4])), [0, 0])
                w[0] += t.rec["whole_reads"]
                w[1] += t.rec["whole_calls"]
        threshold = self.services.policy.usage.advice.whole_reads
        self._advised = {k for k, (reads, _) in self._whole.items() if reads > threshold}
        self._drop_old(day_number)

    def _drop_old(self, day_number: int) -> None:
        oldest = day_text(day_number - self.services.policy.usage.keep_days + 1)
        for day in [d for d in self.days if d < oldest]:
            for t in self.days.pop(day).values():
                if self._store is not None:
                    self._store.delete(NAMESPACE, t.skey)

    # -- the store ---------------------------------------------------------------------------------
    async def load(self, store: Store) -> None:
        """Read the records back and start writing behind."""
        self._store = store
        for value in (await store.load(NAMESPACE)).values():
            try:
                t = Tally.from_json(value)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            self.days.setdefault(t.day, {})[t.key] = t
        self._new_day(int(self.services.clock.time() // 86400))

    def close(self) -> None:
        """Nothing is left to do: every change is in the store already (it writes at its close)."""

    # -- reading -----------------------------------------------------------------------------------
    def records(self, day: str) -> list[dict[str, Any]]:
        return [dict(t.rec) for t in self.days.get(day, {}).values()]

    def today(self) -> str:
        return day_text(int(self.services.clock.time() // 86400))

    def report(self, day: str | None = None, by: str | None = None) -> dict[str, Any]:
        day = day or self.today()
        scope = PER_NODE if self.services.cluster is not None else "this proxy"
        return summarize(self.records(day), day, by, self.services.policy.usage, scope, sorted(self.days))

    def advice(self, day: str | None = None) -> list[dict[str, Any]]:
        settings = self.services.policy.usage.advice
        if not settings.enabled:
            return []
        return advice_mod.advice_rows(self.records(day or self.today()), settings.whole_reads)

    # -- metrics -----------------------------------------------------------------------------------
    def collector(self) -> _Collector:
        return _Collector(self)


def summarize(records: Iterable[dict[str, Any]], day: str, by: str | None, settings: UsageSettings,
              scope: str, days: list[str]) -> dict[str, Any]:
    """The usage of ``day`` grouped by ``by`` (``tool``, ``division``, ``endpoint``, ``app``; None: every
    key field), with the day's totals and advice."""
    records = list(records)
    fields = BY.get(by or "", FIELDS)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    total = _empty_row()
    for rec in records:
        g = tuple(rec.get(f) for f in fields)
        row = groups.get(g)
        if row is None:
            row = groups[g] = _empty_row()
        _add(row, rec)
        _add(total, rec)
    rows = [{**dict(zip(fields, g, strict=True)), **_finish(row)}
            for g, row in sorted(groups.items(), key=lambda kv: (-kv[1]["requests"], str(kv[0])))]
    advice = advice_mod.advice_rows(records, settings.advice.whole_reads) if settings.advice.enabled else []
    return {"day": day, "by": by or "key", "scope": scope, "days": days, "keep_days": settings.keep_days,
            "rows": rows, "total": _finish(total), "advice": advice}


def _empty_row() -> dict[str, Any]:
    return {"requests": 0, "exact_calls": 0, "local": {}, "failed": 0, "queued": 0, "queued_ms": 0.0,
            "errors": {}, "whole_reads": 0}


def _add(row: dict[str, Any], rec: dict[str, Any]) -> None:
    for name in ("requests", "exact_calls", "failed", "queued", "whole_reads"):
        row[name] += int(rec.get(name) or 0)
    row["queued_ms"] += float(rec.get("queued_ms") or 0.0)
    for part in ("local", "errors"):
        for k, v in (rec.get(part) or {}).items():
            row[part][k] = row[part].get(k, 0) + int(v)


def _finish(row: dict[str, Any]) -> dict[str, Any]:
    local = dict(sorted(row["local"].items()))
    return {"requests": row["requests"], "exact_calls": row["exact_calls"], "local": sum(local.values()),
            "local_by": local, "failed": row["failed"], "queued": row["queued"],
            "queued_s": round(row["queued_ms"] / 1000, 3), "errors": dict(sorted(row["errors"].items())),
            "whole_reads": row["whole_reads"]}


class _Collector:
    """The per-tool counters as Prometheus counter families, read when scraped."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage

    def collect(self) -> Iterator[CounterMetricFamily]:
        tools = sorted(self.usage._tools.items())
        labels = ["listener", "tool"]
        requests = CounterMetricFamily("exact_proxy_tool_requests", "Requests answered per tool (listener "
                                       "and User-Agent family), by outcome", labels=[*labels, "outcome"])
        calls = CounterMetricFamily("exact_proxy_tool_exact_calls", "Calls sent to Exact per tool (replays "
                                    "included)", labels=labels)
        queued = CounterMetricFamily("exact_proxy_tool_queued_seconds", "Seconds requests of the tool "
                                     "waited for call budget", labels=labels)
        errors = CounterMetricFamily("exact_proxy_tool_exact_errors", "Exact's 400/401/403/404/429 answers "
                                     "per tool, by status", labels=[*labels, "status"])
        for (listener, tool), t in tools:
            for outcome, n in sorted(t.outcomes.items()):
                requests.add_metric([listener, tool, outcome], n)
            calls.add_metric([listener, tool], t.exact_calls)
            queued.add_metric([listener, tool], t.queued_ms / 1000)
            for code, n in sorted(t.errors.items()):
                errors.add_metric([listener, tool, code], n)
        yield from (requests, calls, queued, errors)


def valid_day(text: str) -> bool:
    """``YYYY-MM-DD``, a real date."""
    try:
        return len(text) == 10 and time.strftime("%Y-%m-%d", time.strptime(text, "%Y-%m-%d")) == text
    except ValueError:
        return False
