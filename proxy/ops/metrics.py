"""What the proxy has done, counted: Prometheus metrics and the per-minute summary line.

Contract
- One ``Metrics`` per ``Services`` with its own ``CollectorRegistry`` (no process globals, so tests and
  several proxies in one process never mix their figures).
- ``observe(ctx, status)`` is called once per request when its answer has been sent (by the access log's
  finisher); ``upstream(status)`` / ``upstream_failure(kind)`` once per upstream attempt (by ``forward``).
- ``render()`` gives the text exposition for ``/_proxy/metrics``. The per-request counters are plain
  dicts, read into Prometheus families when scraped (``prometheus_client``'s own counters take a lock
  and walk several frames for every increment); ``local_counts()`` sums the local answers by filter.
  Gauges that belong to other parts (budget remaining per division, token chains) are read when
  scraped, through ``sources``: callables returning ``(name, help, labels_dict, value)`` rows. Nothing here ever holds a token.
- ``summary_line()`` returns the figures since the previous call (calls, upstream, queued, refused,
  local answers, upstream 429s and errors) and resets them; ``Services`` logs it once a minute.

Outcomes: ``upstream`` (Exact answered), ``local:<filter>`` (a filter answered without Exact: the name of
the filter, e.g. ``local:call_budget``), ``failed`` (no answer from Exact: connect, timeout, reset).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from proxy.context import Context

Row = tuple[str, str, dict[str, str], float]

WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.wait = Histogram("exact_proxy_queue_wait_seconds", "Time requests waited for call budget",
                              buckets=WAIT_BUCKETS, registry=self.registry)
        self.requests: Counter[tuple[str, str]] = Counter()  # (outcome, status class) -> answers
        self.upstream_answers: Counter[str] = Counter()  # status code -> upstream answers
        self.upstream_failures: Counter[str] = Counter()  # connect | timeout | reset -> attempts
        self.sources: list[Callable[[], Iterable[Row]]] = []
        self.registry.register(_Counters(self))
        self.registry.register(_Gauges(self.sources))
        self._minute: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self.longest_wait_ms = 0.0

    def observe(self, ctx: Context, status: int) -> None:
        by = ctx.answered_by
        if ctx.upstream_failure is not None:
            outcome, by = "failed", None
        elif by is not None:
            outcome = "local:" + by
        elif ctx.attempt:
            outcome = "upstream"
        else:
            outcome = "local"
        self.requests[(outcome, _CLASSES[status // 100] if 0 <= status < 1000 else str(status))] += 1
        if ctx.queued_ms:
            self.wait.observe(ctx.queued_ms / 1000)
            self.longest_wait_ms = max(self.longest_wait_ms, ctx.queued_ms)
            self._count("queued")
        self._count("calls")
        if by is not None or not ctx.attempt:
            self._count("local")
            if status == 429 or by in ("call_budget", "error_budget"):
                self._count("refused")

    def upstream(self, status: int) -> None:
        self.upstream_answers[str(status)] += 1
        self._count("upstream")
        if status == 429:
            self._count("upstream_429")
        elif status >= 400:
            self._count("upstream_errors")

    def upstream_failure(self, kind: str) -> None:
        self.upstream_failures[kind] += 1
        self._count("upstream_failures")

    def local_counts(self) -> dict[str, int]:
        """Local answers by the filter that gave them (``other`` when none is named)."""
        counts: dict[str, int] = {}
        for (outcome, _), n in self.requests.items():
            if outcome.startswith("local"):
                key = outcome.removeprefix("local:") or "other"
                counts[key] = counts.get(key, 0) + n
        return counts

    def _count(self, key: str) -> None:
        self._minute[key] += 1
        self.totals[key] += 1

    def summary_line(self) -> str | None:
        m, self._minute = self._minute, Counter()
        if not m:
            return None
        return ("summary (last minute): calls %d, upstream %d, queued %d, refused %d, local %d, "
                "upstream 429s %d, upstream errors %d, upstream failures %d"
                % (m["calls"], m["upstream"], m["queued"], m["refused"], m["local"], m["upstream_429"],
                   m["upstream_errors"], m["upstream_failures"]))

    def render(self) -> bytes:
        return generate_latest(self.registry)


_CLASSES = tuple(f"{i}xx" for i in range(10))


class _Counters:
    """The per-request counters as Prometheus counter families, read when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        m = self.metrics
        for name, help_text, labels, counts in (
                ("exact_proxy_requests", "Requests answered, by outcome and status class", ["outcome", "status"],
                 dict(m.requests)),
                ("exact_proxy_upstream_responses", "Upstream answers by status code", ["status"],
                 {(k,): v for k, v in m.upstream_answers.items()}),
                ("exact_proxy_upstream_failures", "Upstream attempts without an answer", ["kind"],
                 {(k,): v for k, v in m.upstream_failures.items()})):
            family = CounterMetricFamily(name, help_text, labels=labels)
            for values, n in sorted(counts.items()):
                family.add_metric(list(values), n)
            yield family


class _Gauges:
    """Reads gauges from the other parts of the proxy at scrape time."""

    def __init__(self, sources: list[Callable[[], Iterable[Row]]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for source in self.sources:
            for name, help_text, labels, value in source():
                fam = families.get(name)
                if fam is None:
                    fam = families[name] = GaugeMetricFamily(name, help_text, labels=list(labels))
                fam.add_metric(list(labels.values()), value)
        yield from families.values()
