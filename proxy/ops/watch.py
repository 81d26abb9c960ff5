"""``exact-proxy status --watch``: the status at a glance, redrawn every few seconds like ``top``.

Contract:
- ``frame(data, width=80, colour=False) -> str``: pure; one screen from the ``/_proxy/status`` JSON
  (``None``: the proxy cannot be reached), through ``proxy.ops.glance`` as the dashboard page is: first
  its banner of what needs a person now (an endpoint Exact blocked, a chain that needs re-authorization
  or expires soon, a spent day, the state store not healthy, in cluster mode the shared server
  unreachable), then per app and division a bar for the minute and day windows
  (``[#######.....] 42/60``), the queue, its longest wait and the pause end; the error budget rows at or
  near the limit (>= 80 %); the token chains (app, user, state, access and refresh token expiry).
  ``colour`` adds ANSI colours: red at or over the limit, yellow near it.
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

from proxy.ops.glance import glance, level
from proxy.ops.status_cli import fetch_live, first_listener_url

CLEAR = "\x1b[H\x1b[2J"
RED, YELLOW, BOLD, RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[0m"
SEPARATOR = "-" * 40


def _paint(text: str, lvl: str, colour: bool) -> str:
    """``text`` in the colour of its level (``proxy.ops.glance.level``): red over, yellow near."""
    if not colour or lvl == "ok":
        return text
    return (RED if lvl == "over" else YELLOW) + text + RESET


def bar(used: int, limit: int, cells: int, colour: bool = False) -> str:
    """``[#######.....] 42/60``: ``cells`` marks, as many ``#`` as the share used (at most all)."""
    fraction = used / limit if limit > 0 else 1.0
    filled = min(cells, round(fraction * cells))
    return _paint(f"[{'#' * filled}{'.' * (cells - filled)}] {used}/{limit}",
                  level(used, limit) if limit > 0 else "over", colour)


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


def _window_bar(window: dict, cells: int, colour: bool) -> str:
    used, limit = window.get("used") or 0, window.get("limit")
    if not limit:
        return f"{used}/?"
    return _paint(bar(used, limit, cells), window.get("level", "ok"), colour)


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
    g = glance(data)
    lines.append(f"exact-proxy status --watch  {stamp}  policy {data.get('policy')}")
    if g["banner"]:
        lines.append((BOLD + RED if colour else "") + "NEEDS A PERSON NOW" + (RESET if colour else ""))
        lines += [_paint(f"  ! {b['text']}", b["level"], colour) for b in g["banner"]]
    else:
        lines.append("nothing needs a person now")
    cells = max(8, min(30, (width - 70) // 2))  # room for the names, figures, queue and pause
    lines.append("")
    lines.append("call budget (app division: minute, today, queue, longest wait, paused until)")
    if not g["divisions"]:
        lines.append("  (no calls yet)")
    for d in g["divisions"]:
        parts = [f"  {d['app']} {d['division']}", "m " + _window_bar(d["minute"], cells, colour),
                 "t " + _window_bar(d["day"], cells, colour), f"q {d['queue']['waiting']}"]
        if d["queue"]["waiting"]:
            parts.append(f"wait {d['queue']['longest_wait_s']}s")
        if d["paused_until"]:
            parts.append(_paint(f"paused until {d['paused_until']}", "over", colour))
        lines.append("  ".join(parts))
    near = [e for e in g["errors"] if e["level"] != "ok"]
    if near:
        lines.append("")
        lines.append("error budget near the limit")
        for e in near:
            lines.append(_paint(f"  {e['app']} {e['division']} {e['endpoint']}: {e['used']}/{e['budget']} "
                                      f"errors this hour" + (f", resets {e['oldest_leaves_at']}"
                                                             if e["oldest_leaves_at"] else "")
                                      + (f", BLOCKED until {e['blocked_until']}" if e["blocked_until"] else ""),
                                      e["level"], colour))
    lines.append("")
    lines.append("token chains (app, user, state, access expires in, refresh token expires in)")
    if not g["chains"]:
        lines.append("  (none)")
    for c in g["chains"]:
        days = f"{c['days_to_expiry']} d" if c["days_to_expiry"] is not None else "-"
        lines.append(_paint(f"  {c['app']}  {c['user']}  {c['state'].upper() if c['level'] != 'ok' else 'ok'}"
                                  f"  {_expires(c['access_expires_in_s'])}  {days}", c["level"], colour))
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
