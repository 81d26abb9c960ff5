"""``exact-proxy status``: what the proxy is doing, as a readable table or as JSON.

Contract: ``status(policy, url=None, as_json=False, out=stdout) -> exit code``.
- Asks the running proxy (``/_proxy/status`` on the policy's first listener, or ``--url``).
- When no proxy answers, reads the state file (``state.path`` of the policy) read-only and shows what
  it holds (windows, pauses, error counts, token chains), saying that the figures are from disk.
- In cluster mode the live answer starts with the cluster: the server, whether it answers, the live
  nodes and the shared windows, error counts and chains as the server holds them; then this node's own.
- Advice (``proxy.ops.usage``: a tool that keeps re-reading a whole set that has a sync or bulk
  alternative) is listed under "advice": today's live, or, from the state file, that of the newest day
  it holds (with the policy's ``usage.advice``); the other usage figures are ``exact-proxy usage``'s.
- ``--json`` prints the same data as JSON for scripts. Never prints a token, code or secret: the
  status endpoint and the state file reader only carry counts, times and ids.
Exit codes: 0 shown, 1 neither the proxy nor the state file could be read.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from proxy.clock import utc_text

SECRET_KEYS = ("token", "secret", "code", "password")


def fetch_live(url: str, timeout: float = 3.0) -> dict | None:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/_proxy/status", timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def read_state_file(path: str) -> dict | None:
    """The state file, opened read-only (a running proxy keeps writing; WAL lets us read beside it)."""
    if not os.path.exists(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return None
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out: dict[str, dict[str, Any]] = {}
        for table in tables:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            if not {"namespace", "key", "value"} <= set(cols):
                continue
            for ns, key, value in conn.execute(f"SELECT namespace, key, value FROM {table}"):
                try:
                    out.setdefault(ns, {})[key] = json.loads(value)
                except ValueError:
                    out.setdefault(ns, {})[key] = value
        return {"source": f"state file {path} (the proxy is not running)",
                "store": {ns: _strip(items) for ns, items in out.items()}}
    except sqlite3.Error as exc:
        return {"source": f"state file {path}", "error": f"cannot read: {exc}"}
    finally:
        conn.close()


def _strip(value: Any) -> Any:
    """Drop anything that looks like a token or secret (sealed or not) from what the state file holds."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items()
                if not any(s in k.lower() for s in SECRET_KEYS) or k.lower().endswith(("_calls", "_today"))}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def first_listener_url(policy) -> str | None:
    """The URL of the policy's first listener, as a client on this machine reaches it."""
    if not policy.listeners:
        return None
    lst = policy.listeners[0]
    host = "127.0.0.1" if lst.host in ("0.0.0.0", "::", "") else lst.host
    return f"{'https' if getattr(lst, 'tls', False) else 'http'}://{host}:{lst.port}"


def _table(rows: list[dict], out, indent: str = "  ") -> None:
    if not rows:
        out.write(indent + "(none)\n")
        return
    cols: list[str] = []
    for row in rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    out.write(indent + "  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip() + "\n")
    for r in cells:
        out.write(indent + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def _section(title: str, value: Any, out) -> None:
    out.write(f"\n{title}\n")
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        _table(value, out)
    elif isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        for name, rows in value.items():
            out.write(f"  {name}\n")
            if all(isinstance(r, dict) for r in rows):
                _table(rows, out, "    ")
            else:
                out.write("    " + ", ".join(map(_cell, rows)) + "\n")
    elif isinstance(value, dict) and all(not isinstance(v, (dict, list)) for v in value.values()):
        for k, v in value.items():
            out.write(f"  {k}: {_cell(v)}\n")
    elif isinstance(value, dict):
        rows = [{"key": k, **v} if isinstance(v, dict) else {"key": k, "value": v} for k, v in value.items()]
        _table(rows, out)
    else:
        out.write(f"  {_cell(value)}\n")


KNOWN = ("now", "policy", "uptime_s", "listeners", "upstreams", "state", "totals", "answered_locally",
         "token_chains", "cluster", "advice")
CLUSTER_KNOWN = ("node", "server", "reachable", "offset_s", "reason", "nodes")


def _iso(epoch) -> str | None:
    try:
        return utc_text(float(epoch)) if epoch else None
    except (TypeError, ValueError, OverflowError):
        return None


def _offline(store: dict) -> dict:
    """The state file's records as the tables the live status shows (counts and times, no secrets)."""
    now = time.time()
    views: dict = {}
    windows = store.pop("windows", None)
    if windows:
        views["call budget (as last written)"] = [
            {"app|division": k, "minute": f"{v.get('minute_ceiling')}/{v.get('minute_limit')}",
             "today": f"{v.get('day_ceiling')}/{v.get('day_limit')}", "day_of": _iso(v.get("day_start")),
             "paused_until": _iso(v.get("paused_until")) if (v.get("paused_until") or 0) > now else None,
             "clean_stop": v.get("clean"), "written_at": _iso(v.get("written_at"))}
            for k, v in sorted(windows.items()) if isinstance(v, dict)]
    errors = store.pop("error_counts", None)
    if errors:
        views["error budget (errors in the last hour)"] = [
            {"app|division|endpoint": k, "errors_this_hour": sum(1 for t in v if now - float(t) < 3600),
             "oldest": _iso(min(v)) if v else None}
            for k, v in sorted(errors.items()) if isinstance(v, list)]
    chains = store.pop("token_chains", None)
    if chains:
        views["token chains"] = [
            {"chain": v.get("id", k), "app": v.get("client_id"), "user": v.get("user"),
             "access_expires_at": _iso(v.get("access_expires_at")),
             "refresh_issued_at": _iso(v.get("refresh_issued_at")), "needs_reauth": v.get("needs_reauth")}
            for k, v in sorted(chains.items()) if isinstance(v, dict)]
    views.update(store)
    return views


def render(data: dict, out) -> None:
    if "store" in data:  # from the state file
        out.write(f"exact-proxy status: from the {data['source']}\n")
        store = dict(data["store"])
        store.pop("usage", None)  # exact-proxy usage shows it; the advice is shown below
        for ns, items in _offline(store).items():
            _section(ns, items, out)
        _advice(data.get("advice"), out, "advice (as last written; exact-proxy usage for the figures)")
        return
    up = data.get("uptime_s", 0)
    out.write(f"exact-proxy status: live, policy {data.get('policy')}, up {up / 3600:.1f} h, at "
              f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(data.get('now', time.time())))}\n")
    state = data.get("state", {})
    out.write(f"state: {state.get('kind')} ({'healthy' if state.get('healthy') else 'NOT WRITING'})\n")
    cluster = data.get("cluster")
    if isinstance(cluster, dict):
        _cluster(cluster, out)
    _section("totals since start", data.get("totals", {}), out)
    for key, value in data.items():
        if key not in KNOWN:
            _section(key.replace("_", " "), value, out)
    _section("token chains", data.get("token_chains", []), out)
    _section("answered locally (by filter)", data.get("answered_locally", {}) or {"none": 0}, out)
    _advice(data.get("advice"), out)


def _advice(advice: Any, out, title: str = "advice (today; exact-proxy usage for the figures)") -> None:
    if isinstance(advice, list) and advice:
        out.write(f"\n{title}\n")
        for a in advice:
            out.write(f"  {a.get('advice') if isinstance(a, dict) else a}\n")


def _cluster(view: dict, out) -> None:
    """Cluster mode: the server, the live nodes and the shared view (read from the server)."""
    reach = "reachable" if view.get("reachable") else f"UNREACHABLE: {view.get('reason')} (fail closed)"
    out.write(f"cluster: node {view.get('node')} on {view.get('server')}, {reach}\n")
    if "nodes" in view:
        _section("cluster nodes", view["nodes"], out)
    for key, value in view.items():
        if key not in CLUSTER_KNOWN:
            _section(f"{key.replace('_', ' ')} (shared by the cluster)", value, out)
    out.write("\nthis node\n")


def status(policy, url: str | None = None, as_json: bool = False, out=None) -> int:
    out = out or sys.stdout
    url = url or first_listener_url(policy)
    data = fetch_live(url) if url else None
    if data is None:
        data = read_state_file(policy.state.path)
        if data is not None and "usage" in data.get("store", {}):
            data["advice"] = _offline_advice(data["store"]["usage"], policy)
    if data is None:
        out.write(f"exact-proxy status: no proxy answers at {url} and there is no state file at "
                  f"{policy.state.path}\n")
        return 1
    if as_json:
        out.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        render(data, out)
    return 0


def table(rows: list[dict], out, indent: str = "  ") -> None:
    """Rows of dicts as a table with upper-case column names (``exact-proxy usage`` uses it too)."""
    _table(rows, out, indent)


def _offline_advice(records: Any, policy) -> list[dict]:
    """The advice of the newest day the state file holds usage of."""
    from proxy.ops.advice import advice_rows

    if not isinstance(records, dict) or not policy.usage.advice.enabled:
        return []
    recs = [r for r in records.values() if isinstance(r, dict) and "day" in r]
    if not recs:
        return []
    newest = max(str(r["day"]) for r in recs)
    return advice_rows([r for r in recs if r["day"] == newest], policy.usage.advice.whole_reads)
