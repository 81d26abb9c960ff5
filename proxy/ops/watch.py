"""``exact-proxy status --watch``: the status at a glance, redrawn every few seconds like ``top``.

Contract:
- ``frame(data, width=80, colour=False) -> str``: pure; one screen from the ``/_proxy/status`` JSON
  (``None``: the proxy cannot be reached). First a banner of what needs a person now (an endpoint Exact
  blocked, a token chain that needs re-authorization, the state store not healthy, in cluster mode the
  shared server unreachable), then per app and division a bar for the minute and day windows
  (``[#######.....] 42/60``), the queue, its longest wait and the pause end; the error budget rows at or
  near the limit (>= 80 %); the token chains (app, user, needs_reauth, access expires in). ``colour``
  adds ANSI colours: red at or over the limit, yellow near it.
- ``watch(policy, url=None, interval=2.0, out=stdout, frames=None) -> 0``: fetches the status every
  ``interval`` seconds and writes a frame; on a TTY the screen is cleared first (``ESC[H ESC[2J``) and
  colours are used, else frames are separated by a line. ``frames`` limits the redraws (tests); Ctrl-C
  ends it with 0. An unreachable proxy is a line in the frame and the next fetch retries; it never raises.
Never prints a token: the status JSON carries only counts, times and ids.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from proxy.ops.status_cli import fetch_live, first_listener_url

CLEAR = "\x1b[H\x1b[2J"
RED, YELLOW, BOLD, RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[0m"
NEAR = 0.8
SEPARATOR = "-" * 40


def _ratio(text: Any) -> tuple[int, int] | None:
    """``"42/60"`` -> (42, 60)."""
    try:
        used, _, limit = str(text).partition("/")
        return int(used), int(limit)
    except (TypeError, ValueError):
        return None


def _paint(text: str, fraction: float, colour: bool) -> str:
    if not colour:
        return text
    if fraction >= 1:
        return RED + text + RESET
    if fraction >= NEAR:
        return YELLOW + text + RESET
    return text


def bar(used: int, limit: int, cells: int, colour: bool = False) -> str:
    """``[#######.....] 42/60``: ``cells`` marks, as many ``#`` as the share used (at most all)."""
    fraction = used / limit if limit > 0 else 1.0
    filled = min(cells, round(fraction * cells))
    return _paint(f"[{'#' * filled}{'.' * (cells - filled)}] {used}/{limit}", fraction, colour)


def _rows(value: Any) -> list[dict]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _cluster(data: dict) -> dict:
    cluster = data.get("cluster")
    return cluster if isinstance(cluster, dict) else {}


def _chains(data: dict) -> list[dict]:
    """This node's chains, and in cluster mode the shared ones it does not hold (one row per chain)."""
    rows, seen = [], set()
    cluster = _cluster(data)
    for row in _rows(data.get("token_chains")) + _rows(cluster.get("token_chains")):
        key = (row.get("app"), row.get("chain"))
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def _errors(data: dict) -> list[dict]:
    cluster = _cluster(data)
    return _rows(data.get("error_budget")) + _rows(cluster.get("errors"))


def alerts(data: dict) -> list[str]:
    """What needs a person now, one line each."""
    out = []
    state = data.get("state") if isinstance(data.get("state"), dict) else {}
    if state and not state.get("healthy"):
        out.append(f"state store NOT WRITING ({state.get('kind')}): counters are kept in memory only")
    cluster = data.get("cluster")
    if isinstance(cluster, dict) and not cluster.get("reachable"):
        out.append(f"cluster server {cluster.get('server')} UNREACHABLE: {cluster.get('reason')} "
                   f"(calls that count are refused)")
    for row in _errors(data):
        until = row.get("exact_blocked_until") or row.get("exact_blocked_until_ms")
        if until:
            out.append(f"Exact BLOCKED {row.get('app')} division {row.get('division')} "
                       f"{row.get('endpoint')} until {until}")
    for row in _chains(data):
        if row.get("needs_reauth"):
            why = f": {row.get('needs_reauth_why')}" if row.get("needs_reauth_why") else ""
            out.append(f"chain {row.get('chain')} ({row.get('app')}, user {row.get('user')}) NEEDS RE-AUTHORIZATION{why}")
    return out


def _clip(line: str, width: int) -> str:
    """Cut a line to the width (ANSI codes do not count; a coloured line is left whole)."""
    return line if "\x1b[" in line or len(line) <= width else line[: max(1, width - 1)] + "…"


def _expires(seconds: Any) -> str:
    try:
        s = int(seconds)
    except (TypeError, ValueError):
        return "-"
    if s <= 0:
        return "expired"
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def frame(data: dict | None, width: int = 80, colour: bool = False, url: str | None = None,
          now: float | None = None) -> str:
    """One screen of the at-a-glance view (see the module's contract)."""
    width = max(40, width)
    stamp = time.strftime("%H:%M:%SZ", time.gmtime(now if now is not None else time.time()))
    lines: list[str] = []
    if data is None:
        lines.append(f"exact-proxy status --watch  {stamp}")
        lines.append(f"cannot reach the proxy at {url or '(no listener)'}; retrying")
        return "\n".join(_clip(x, width) for x in lines) + "\n"
    head = f"exact-proxy status --watch  {stamp}  policy {data.get('policy')}"
    lines.append(head)
    found = alerts(data)
    if found:
        lines.append((BOLD + RED if colour else "") + "NEEDS A PERSON NOW" + (RESET if colour else ""))
        lines += [f"  ! {a}" for a in found]
    else:
        lines.append("nothing needs a person now")
    cells = max(8, min(30, (width - 70) // 2))  # room for the names, figures, queue and pause
    lines.append("")
    lines.append("call budget (app division: minute, today, queue, longest wait, paused until)")
    budget = _rows(data.get("call_budget"))
    if not budget:
        lines.append("  (no calls yet)")
    for row in budget:
        parts = [f"  {row.get('app')} {row.get('division')}"]
        for window in ("minute", "today"):
            got = _ratio(row.get(window))
            parts.append(f"{window[0]} " + (bar(*got, cells, colour) if got else str(row.get(window))))
        parts.append(f"q {row.get('queue', 0)}")
        if row.get("queue"):
            parts.append(f"wait {row.get('longest_wait_s', 0)}s")
        if row.get("paused_until"):
            parts.append(_paint(f"paused until {row.get('paused_until')}", 1.0, colour))
        lines.append("  ".join(parts))
    near = []
    for row in _errors(data):
        used, budget_n = row.get("errors_this_hour") or 0, row.get("budget")
        blocked = row.get("exact_blocked_until") or row.get("exact_blocked_until_ms")
        if blocked or (isinstance(budget_n, int) and budget_n > 0 and used / budget_n >= NEAR):
            fraction = 1.0 if blocked or not budget_n else used / budget_n
            figure = f"{used}/{budget_n}" if budget_n else f"{used}"
            near.append(_paint(f"  {row.get('app')} {row.get('division')} {row.get('endpoint')}: "
                               f"{figure} errors this hour" + (f", resets {row['resets_at']}"
                                                              if row.get("resets_at") else ""),
                               fraction, colour))
    if near:
        lines.append("")
        lines.append("error budget near the limit")
        lines += near
    chains = _chains(data)
    lines.append("")
    lines.append("token chains (app, user, needs reauth, access expires in)")
    if not chains:
        lines.append("  (none)")
    for row in chains:
        reauth = "NEEDS REAUTH" if row.get("needs_reauth") else "ok"
        lines.append(_paint(f"  {row.get('app')}  {row.get('user')}  {reauth}  "
                            f"{_expires(row.get('access_expires_in_s'))}",
                            1.0 if row.get("needs_reauth") else 0.0, colour))
    return "\n".join(_clip(x, width) for x in lines) + "\n"


def _width(out) -> int:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 100


def watch(policy, url: str | None = None, interval: float = 2.0, out=None, frames: int | None = None) -> int:
    """Redraw the frame every ``interval`` seconds until Ctrl-C (or ``frames`` redraws); exit code 0."""
    out = out or sys.stdout
    url = url or first_listener_url(policy)
    tty = bool(getattr(out, "isatty", lambda: False)())
    drawn = 0
    try:
        while frames is None or drawn < frames:
            try:
                data = fetch_live(url) if url else None
                text = frame(data, _width(out) if tty else 100, colour=tty, url=url)
            except Exception as exc:  # never crash the watch: show it and retry
                text = f"exact-proxy status --watch: cannot show the status ({type(exc).__name__}); retrying\n"
            if tty:
                out.write(CLEAR)
            elif drawn:
                out.write(SEPARATOR + "\n")
            out.write(text)
            out.flush()
            drawn += 1
            if frames is None or drawn < frames:
                time.sleep(max(0.1, interval))
    except KeyboardInterrupt:
        if tty:
            out.write("\n")
    return 0
