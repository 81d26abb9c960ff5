"""The status at a glance: what the dashboard page (``/_proxy/``) and ``status --watch`` show, as JSON.

Contract
- ``glance(status, tools=None, decisions=(), budget=8) -> dict``: pure; from the ``/_proxy/status`` JSON
  (``proxy.ops.admin.status``, with ``cluster`` in cluster mode), the usage report of today grouped by
  tool (``/_proxy/usage?by=tool``) and the recent decisions (``proxy.ops.recent``). ``budget``: the
  policy's error budget, for shared error rows (which carry counts only). Served at ``/_proxy/glance``
  and in every ``/_proxy/events`` message. Keys (``version`` 1):
  - ``banner``: what needs a person now, worst first, each ``{kind, level, text, until}``; kind
    ``blocked`` (Exact blocked an endpoint), ``reauth`` (a chain needs a person), ``expiring`` (a refresh
    token expires within ``tokens.warn_before_expiry``), ``budget`` (a division's day is spent),
    ``state`` (the state store cannot write), ``cluster`` (the shared server is unreachable);
  - ``divisions``: per app and division, ``minute`` and ``day`` as ``{used, limit, resets_in_s, level}``,
    ``exact_left`` (Exact's own remaining figures, None when not known), ``queue`` (waiting, longest
    wait), ``paused_until``/``paused_for_s`` (a pause after a 429), ``shares``. In cluster mode the
    shared windows (all nodes) replace this node's;
  - ``errors``: per endpoint, used of budget, when the oldest error leaves the hour, Exact's block;
  - ``chains``: app, user, state, level, last and next refresh, days to the refresh token's expiry;
  - ``tools``: today's requests by tool (``proxy.ops.tool_family``), split into those that reached Exact
    and those answered without it (``local``);
  - ``decisions``: the last non-routine decisions, newest first; ``cluster``: None, or the server, its
    reachability and the nodes with ``live``; ``advice``: ``{tool, endpoint, text}``.
- ``level`` is ``ok``, ``near`` (at least 80 % used) or ``over`` (all used, blocked or paused).
Nothing here carries a token, code or secret: the inputs carry only counts, times and ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from proxy.clock import utc_text

NEAR = 0.8
TOOLS_SHOWN = 12
BANNER_ORDER = {"cluster": 0, "state": 1, "blocked": 2, "reauth": 3, "budget": 4, "expiring": 5}


def level(used: float, limit: float | None) -> str:
    if not limit or limit <= 0:
        return "over" if used else "ok"
    fraction = used / limit
    return "over" if fraction >= 1 else "near" if fraction >= NEAR else "ok"


def _ratio(text: Any) -> tuple[int | None, int | None]:
    """``"42/60"`` -> (42, 60); ``"?/4995"`` -> (None, 4995)."""
    left, _, right = str(text or "").partition("/")
    return (int(left) if left.isdigit() else None), (int(right) if right.isdigit() else None)


def _rows(value: Any) -> list[dict[str, Any]]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _seconds_until(text: Any, now: float) -> float | None:
    if not text:
        return None
    try:
        return round(datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp() - now, 1)
    except ValueError:
        return None


def _iso_ms(ms: Any) -> str | None:
    return utc_text(int(ms) / 1000) if ms else None


def _cluster(status: dict[str, Any]) -> dict[str, Any] | None:
    c = status.get("cluster")
    return c if isinstance(c, dict) else None


def _window(text: Any, resets_in: Any, paused: bool) -> dict[str, Any]:
    used, limit = _ratio(text)
    used = used or 0
    return {"used": used, "limit": limit, "resets_in_s": resets_in,
            "level": "over" if paused else level(used, limit)}


def divisions(status: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = _cluster(status) or {}
    rows = _rows(cluster.get("windows")) or _rows(status.get("call_budget"))
    out = []
    for r in rows:
        paused_for = r.get("paused_for_s")
        minute_left, day_left = _ratio(r.get("exact_left"))
        shares = []
        for s in _rows(r.get("shares")):
            cap = s.get("cap_day")
            lvl = level(s.get("today") or 0, cap) if isinstance(cap, int) else "ok"
            shares.append({"share": s.get("share"), "today": s.get("today"), "minute": s.get("minute"),
                           "cap_day": cap, "reserve_left": s.get("reserve_left"), "paced": s.get("paced"),
                           "held": s.get("held"), "next_call_in_s": s.get("next_call_in_s"),
                           "level": "near" if s.get("held") and lvl == "ok" else lvl})
        out.append({"app": r.get("app"), "division": r.get("division"),
                    "minute": _window(r.get("minute"), r.get("minute_resets_in_s"), bool(paused_for)),
                    "day": _window(r.get("today"), r.get("day_resets_in_s"), False),
                    "exact_left": {"minute": minute_left, "day": day_left},
                    "queue": {"waiting": r.get("queue") or 0, "longest_wait_s": r.get("longest_wait_s") or 0.0},
                    "paused_until": r.get("paused_until"), "paused_for_s": paused_for, "shares": shares})
    return out


def errors(status: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    now = float(status.get("now") or 0)
    local = {(r.get("app"), r.get("division"), r.get("endpoint")): r for r in _rows(status.get("error_budget"))}
    shared = {(r.get("app"), r.get("division"), r.get("endpoint")): r
              for r in _rows((_cluster(status) or {}).get("errors"))}
    out = []
    for key in sorted(set(local) | set(shared), key=str):
        mine, theirs = local.get(key, {}), shared.get(key)
        used = int((theirs or mine).get("errors_this_hour") or 0)
        allowed = int(mine.get("budget") or budget)
        blocked = mine.get("exact_blocked_until") or (_iso_ms(theirs.get("exact_blocked_until_ms"))
                                                      if theirs else None)
        leaves_in = mine.get("resets_in_s")
        if leaves_in is None:
            leaves_in = _seconds_until(mine.get("resets_at"), now)
        out.append({"app": key[0], "division": key[1], "endpoint": key[2], "used": used, "budget": allowed,
                    "level": "over" if blocked else level(used, allowed),
                    "oldest_leaves_at": mine.get("resets_at"), "oldest_leaves_in_s": leaves_in,
                    "blocked_until": blocked})
    return out


def chains(status: dict[str, Any]) -> list[dict[str, Any]]:
    """This node's chains, and in cluster mode the shared ones it does not hold (one row per chain)."""
    out, seen = [], set()
    for r in _rows(status.get("token_chains")) + _rows((_cluster(status) or {}).get("token_chains")):
        key = (r.get("app"), r.get("chain"))
        if key in seen:
            continue
        seen.add(key)
        expires_in = r.get("refresh_expires_in_s")
        if r.get("needs_reauth"):
            state, lvl = "needs re-authorization", "over"
        elif isinstance(expires_in, int | float) and expires_in <= 0:
            state, lvl = "expired", "over"
        elif r.get("expires_soon"):
            state, lvl = "expires soon", "near"
        elif r.get("access_rejected"):
            state, lvl = "token refused by Exact", "near"
        else:
            state, lvl = "ok", "ok"
        out.append({"chain": r.get("chain"), "app": r.get("app"), "user": r.get("user"), "state": state,
                    "level": lvl, "why": r.get("needs_reauth_why"), "last_refresh_at": r.get("last_refresh_at"),
                    "next_refresh_at": r.get("next_refresh_at"),
                    "access_expires_in_s": r.get("access_expires_in_s"),
                    "refresh_expires_at": r.get("refresh_expires_at"),
                    "days_to_expiry": round(expires_in / 86400, 1) if isinstance(expires_in, int | float) else None,
                    "token_calls_today": r.get("token_calls_today")})
    return out


def _short(user: Any) -> str:
    text = str(user or "?")
    return text[:8] if len(text) > 12 else text


def banner(status: dict[str, Any], budget: int = 8) -> list[dict[str, Any]]:
    """What needs a person now (see the contract), worst first."""
    out: list[dict[str, Any]] = []
    cluster = _cluster(status)
    if cluster is not None and not cluster.get("reachable", True):
        out.append({"kind": "cluster", "level": "over", "until": None,
                    "text": f"cluster server {cluster.get('server')} unreachable ({cluster.get('reason')}): "
                            f"calls that count against Exact's limits are refused"})
    state = status.get("state") if isinstance(status.get("state"), dict) else {}
    if state and not state.get("healthy", True):
        out.append({"kind": "state", "level": "over", "until": None,
                    "text": f"state store not writing ({state.get('kind')}): counters are kept in memory only"})
    for e in errors(status, budget):
        if e["blocked_until"]:
            div = f" division {e['division']}" if e["division"] is not None else ""
            out.append({"kind": "blocked", "level": "over", "until": e["blocked_until"],
                        "text": f"Exact blocked {e['endpoint']} for {e['app']}{div} until {e['blocked_until']}"})
    for c in chains(status):
        who = f"chain {c['chain']} ({c['app']}, user {_short(c['user'])})"
        if c["state"] == "needs re-authorization":
            why = f": {c['why']}" if c["why"] else ""
            out.append({"kind": "reauth", "level": "over", "until": None,
                        "text": f"{who} needs re-authorization{why}"})
        elif c["state"] in ("expired", "expires soon"):
            days = c["days_to_expiry"]
            when = "has expired" if c["state"] == "expired" else f"expires in {days} days"
            out.append({"kind": "expiring", "level": c["level"], "until": c["refresh_expires_at"],
                        "text": f"{who} {when} ({c['refresh_expires_at']}): a person must authorize it again"})
    for d in divisions(status):
        day = d["day"]
        if day["limit"] and day["used"] >= day["limit"]:
            out.append({"kind": "budget", "level": "over", "until": None,
                        "text": f"{d['app']} division {d['division']} has spent its day ({day['used']}/"
                                f"{day['limit']}): calls are refused until 00:00 UTC"})
    return sorted(out, key=lambda b: BANNER_ORDER.get(b["kind"], 9))


def tools(report: dict[str, Any] | None) -> dict[str, Any]:
    if not report:
        return {"day": None, "rows": [], "total": {"requests": 0, "exact_calls": 0, "local": 0}}
    rows = sorted(_rows(report.get("rows")), key=lambda r: -(r.get("requests") or 0))
    shown = [_tool_row(r.get("tool"), r.get("requests") or 0, r.get("exact_calls") or 0) for r in rows[:TOOLS_SHOWN]]
    rest = rows[TOOLS_SHOWN:]
    if rest:
        shown.append(_tool_row(f"{len(rest)} other tools", sum(r.get("requests") or 0 for r in rest),
                               sum(r.get("exact_calls") or 0 for r in rest)))
    got = report.get("total")
    total: dict[str, Any] = got if isinstance(got, dict) else {}
    return {"day": report.get("day"), "rows": shown,
            "total": _tool_row(None, total.get("requests") or 0, total.get("exact_calls") or 0)}


def _tool_row(tool: Any, requests: int, exact_calls: int) -> dict[str, Any]:
    """``local``: the requests answered without a call to Exact (a call answered locally after Exact was
    asked, such as a block, counts as a call)."""
    exact = min(requests, exact_calls)
    return {"tool": tool, "requests": requests, "exact_calls": exact, "local": requests - exact}


def glance(status: dict[str, Any], tool_report: dict[str, Any] | None = None,
           decisions: Iterable[dict[str, Any]] = (), budget: int = 8) -> dict[str, Any]:
    now = float(status.get("now") or 0)
    cluster = _cluster(status)
    return {
        "version": 1,
        "now": now,
        "now_text": utc_text(now),
        "policy": status.get("policy"),
        "uptime_s": status.get("uptime_s"),
        "node": cluster.get("node") if cluster else None,
        "banner": banner(status, budget),
        "divisions": divisions(status),
        "errors": errors(status, budget),
        "chains": chains(status),
        "tools": tools(tool_report),
        "decisions": list(decisions),
        "cluster": None if cluster is None else {
            "node": cluster.get("node"), "server": cluster.get("server"),
            "reachable": bool(cluster.get("reachable")), "reason": cluster.get("reason"),
            "nodes": [{"node": n.get("node"), "live": bool(n.get("live")), "this": bool(n.get("this")),
                       "last_seen_s": n.get("last_seen_s")} for n in _rows(cluster.get("nodes"))]},
        "totals": status.get("totals") or {},
        "advice": [{"tool": a.get("tool"), "endpoint": a.get("endpoint"), "text": a.get("advice")}
                   for a in _rows(status.get("advice"))],
    }
