"""``exact-proxy usage``: where the budget went, as a table or as JSON.

Contract: ``usage(policy, url=None, day=None, by=None, as_json=False, out=stdout) -> exit code``.
- Asks the running proxy (``/_proxy/usage?day=…&by=…`` on the policy's first listener, or ``--url``).
- When no proxy answers, reads the state file (``state.path``) read-only, as ``exact-proxy status``
  does, and makes the same report from the ``usage`` records (``proxy.ops.usage.summarize``), saying
  that the figures are from disk (as last written).
- ``day`` is ``YYYY-MM-DD`` (default: today, UTC; from disk: the newest day the file holds); ``by`` is
  ``tool``, ``division``, ``endpoint`` or ``app`` (default: every key field).
- The table has one row per group (requests, calls sent to Exact, answers given locally and by which
  filter, queued requests and seconds, Exact's errors by status, whole reads), the day's total, and the
  advice. In cluster mode the figures are the asked node's own. ``--json`` prints the report as JSON.
Never prints a token or secret: usage records carry names and counts only.
Exit codes: 0 shown, 1 neither the proxy nor a state file with usage could be read, 2 bad ``day``/``by``.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from proxy.ops import status_cli
from proxy.ops.usage import BY, NAMESPACE, summarize, valid_day


def fetch_live(url: str, day: str | None, by: str | None, timeout: float = 3.0) -> dict | None:
    query = urllib.parse.urlencode({k: v for k, v in (("day", day), ("by", by)) if v})
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/_proxy/usage" + ("?" + query if query else ""),
                                    timeout=timeout) as resp:
            return json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def from_state_file(policy, day: str | None, by: str | None) -> dict | None:
    data = status_cli.read_state_file(policy.state.path)
    if data is None or "store" not in data:
        return None
    records = [r for r in data["store"].get(NAMESPACE, {}).values() if isinstance(r, dict) and "day" in r]
    days = sorted({str(r["day"]) for r in records})
    day = day or (days[-1] if days else time.strftime("%Y-%m-%d", time.gmtime()))
    report = summarize([r for r in records if r["day"] == day], day, by, policy.usage,
                       "as last written by the proxy", days)
    report["source"] = data["source"]
    return report


def render(report: dict, out) -> None:
    source = f"from the {report['source']}" if report.get("source") else "live"
    out.write(f"exact-proxy usage: {source}, {report.get('day')} (UTC), by {report.get('by')}; "
              f"{report.get('scope')}\n")
    rows = [_row(r) for r in report.get("rows", [])]
    if rows:
        keys = list(rows[0])
        total = _row(report.get("total", {}), keys=keys)
        total[keys[0]] = "TOTAL"
        rows.append(total)
    status_cli.table(rows, out)
    days = report.get("days") or []
    if days:
        out.write(f"\ndays kept: {days[0]} … {days[-1]} ({len(days)}; keep_days {report.get('keep_days')})\n")
    advice = report.get("advice") or []
    if advice:
        out.write("\nadvice\n")
        for a in advice:
            out.write(f"  {a.get('advice')}\n")


def _row(r: dict[str, Any], keys: list[str] | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {k: r.get(k) for k in ("app", "division", "listener", "tool", "endpoint") if k in r}
    out: dict[str, Any] = {**fields, "requests": r.get("requests"), "exact": r.get("exact_calls"),
                           "local": r.get("local"),
                           "local_by": " ".join(f"{k}:{v}" for k, v in (r.get("local_by") or {}).items()) or None,
                           "queued": r.get("queued"), "queued_s": r.get("queued_s"),
                           "errors": " ".join(f"{k}:{v}" for k, v in (r.get("errors") or {}).items()) or None,
                           "failed": r.get("failed"), "whole_reads": r.get("whole_reads")}
    if keys is not None:
        out = {k: out.get(k) for k in keys}
    return out


def usage(policy, url: str | None = None, day: str | None = None, by: str | None = None, as_json: bool = False,
          out=None) -> int:
    out = out or sys.stdout
    if day is not None and not valid_day(day):
        out.write(f"exact-proxy usage: --day must be a date like 2026-11-25, got {day!r}\n")
        return 2
    if by is not None and by not in BY:
        out.write(f"exact-proxy usage: --by must be one of {', '.join(BY)}, got {by!r}\n")
        return 2
    url = url or status_cli.first_listener_url(policy)
    report = fetch_live(url, day, by) if url else None
    if report is None:
        report = from_state_file(policy, day, by)
    if report is None:
        out.write(f"exact-proxy usage: no proxy answers at {url} and there is no state file at "
                  f"{policy.state.path}\n")
        return 1
    if as_json:
        out.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        render(report, out)
    return 0
