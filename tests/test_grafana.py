"""The Grafana dashboard in ``contrib/grafana/exact-proxy.json``: a dashboard Grafana can import, whose
every PromQL expression names only metric families the proxy exports, and whose panels cover what an
operator needs (budgets, queues, re-authorization, the error budget, the tools).

Which check applies to a metric name: the test starts the real proxy in front of the real emulator,
drives a little traffic (the code flow and a token refresh through the broker, a GET, a 404) and reads
``/metrics``; the ``# TYPE`` lines there name the families exported (``exact_proxy_exact_blocked_seconds``
is there too, 0, once an endpoint has counted errors). Families that appear only in setups this test does
not make (cluster mode: ``exact_proxy_cluster_*``; configured shares: ``exact_proxy_share_calls``) are
checked against the static list of ``"exact_proxy_..."`` string literals in ``proxy/`` instead. A suffix
``_bucket``/``_sum``/``_count`` must belong to a histogram family and ``_total`` to a counter family (as
``/metrics`` shows them); a counter's bare name is not accepted (Prometheus stores only ``<family>_total``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp

from proxy.clock import ManualClock
from tests.test_token_broker_e2e import ACCOUNTS, START, api_call, authorize, refresh

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "contrib" / "grafana" / "exact-proxy.json"
NAME = re.compile(r"exact_proxy_[a-z0-9_]+")
SUFFIXES = {"_bucket": "histogram", "_sum": "histogram", "_count": "histogram", "_total": "counter"}
# families the proxy exports only in cluster mode or with shares configured
EVENT_ONLY = {"exact_proxy_cluster_store_up", "exact_proxy_cluster_nodes_live", "exact_proxy_cluster_offset_seconds",
              "exact_proxy_share_calls"}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels inside collapsed rows
    return out


def exprs(dash: dict) -> list[str]:
    return [t["expr"] for p in panels(dash) for t in p.get("targets", [])]


def static_families() -> set[str]:
    """The ``"exact_proxy_..."`` string literals in ``proxy/``."""
    found: set[str] = set()
    for path in (ROOT / "proxy").rglob("*.py"):
        found.update(re.findall(r"[\"'](exact_proxy_[a-z0-9_]+)[\"']", path.read_text()))
    return found


def test_dashboard_shape():
    dash = load()
    assert dash["title"] and dash["uid"] and 36 <= dash["schemaVersion"] <= 41
    assert any(i["name"] == "DS_PROMETHEUS" and i["type"] == "datasource" and i["pluginId"] == "prometheus"
               for i in dash["__inputs"])
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name in ("app", "division"):
        assert variables[name]["query"]["query"].startswith("label_values(")
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    kinds = {p["type"] for p in panels(dash)}
    assert {"stat", "gauge", "timeseries", "table", "bargauge"} <= kinds
    for p in panels(dash):
        g = p["gridPos"]
        assert {"x", "y", "w", "h"} <= g.keys() and 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["title"] and p["targets"], p["title"]
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
        for t in p["targets"]:
            assert t.get("expr", "").strip(), p["title"]
            assert t["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
            assert t["expr"].count("(") == t["expr"].count(")") and t["expr"].count("{") == t["expr"].count("}")
        steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps")
        if steps:
            assert steps[0]["value"] is None and all(s["value"] is not None for s in steps[1:]), p["title"]


def test_panels_cover_the_areas():
    all_exprs = exprs(load())
    for needle in ("exact_proxy_budget_remaining", "exact_proxy_queue_depth", "exact_proxy_token_chain_needs_reauth",
                   "exact_proxy_errors_this_hour", "exact_proxy_exact_blocked_seconds", "exact_proxy_tool_",
                   "exact_proxy_access_token_expires_in_seconds", "exact_proxy_cluster_store_up",
                   "exact_proxy_token_calls_today", "exact_proxy_share_calls", "exact_proxy_cluster_nodes_live"):
        assert any(needle in e for e in all_exprs), needle
    assert any('window="minute"' in e for e in all_exprs) and any('window="day"' in e for e in all_exprs)


async def scrape(emulator, start_proxy) -> str:
    clock = ManualClock(start=START)
    emu = await emulator(clock=clock)
    proxy = await start_proxy(emu.base, clock=clock)
    base = proxy.url("default")
    async with aiohttp.ClientSession() as s:
        tokens = await authorize(s, base)
        await clock.advance(580)
        status, body = await refresh(s, base, tokens["refresh_token"])
        assert status == 200, body
        assert await api_call(s, base, body["access_token"]) == 200
        missing = ACCOUNTS.replace("crm/Accounts", "crm/NoSuchThing")
        async with s.get(base + missing, headers={"Authorization": f"Bearer {body['access_token']}",
                                                   "Accept": "application/json"}) as r:
            await r.read()
            assert r.status >= 400
        async with s.get(base + "/metrics") as r:
            assert r.status == 200
            return await r.text()


def exported_series(text: str) -> tuple[set[str], set[str]]:
    """(families, the series names Prometheus stores for them) from the ``# TYPE`` lines of ``/metrics``.

    A counter's series is ``<family>_total`` (this ``prometheus_client`` already writes the ``_total`` on
    the TYPE line), a histogram's ``_bucket``/``_sum``/``_count``, a gauge's its own name."""
    families, series = set(), set()
    for name, kind in re.findall(r"^# TYPE (exact_proxy_[a-z0-9_]+) (\w+)$", text, re.M):
        family = name.removesuffix("_total") if kind == "counter" else name
        families.add(family)
        if kind == "counter":
            series.add(family + "_total")
        elif kind == "histogram":
            series.update(family + suffix for suffix in SUFFIXES if SUFFIXES[suffix] == "histogram")
        else:
            series.add(name)
    return families, series


async def test_every_metric_in_the_dashboard_is_exported(emulator, start_proxy):
    families, series = exported_series(await scrape(emulator, start_proxy))
    assert {"exact_proxy_budget_remaining", "exact_proxy_queue_depth", "exact_proxy_token_chain_needs_reauth",
            "exact_proxy_token_calls_today", "exact_proxy_errors_this_hour", "exact_proxy_tool_requests",
            "exact_proxy_requests", "exact_proxy_queue_wait_seconds"} <= families, sorted(families)
    static = static_families()
    assert EVENT_ONLY <= static, EVENT_ONLY - static
    used = {n for e in exprs(load()) for n in NAME.findall(e)}
    unknown = sorted(n for n in used if n not in series and not (n in EVENT_ONLY and n in static))
    assert not unknown, f"not exported by the proxy: {unknown}"
