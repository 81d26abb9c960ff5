"""``exact-proxy demo``: the emulator, the proxy in front of it, and a naive legacy tool, side by side.

Contract: ``run_demo(factor, seconds, out)`` needs no credentials and no network. It
1. starts the built-in Exact Online emulator on a free loopback port, with a clock sped up ``factor``
   times (said on screen; the proxy runs on the same clock, so their windows line up);
2. runs ``LegacyTool`` directly against the emulator for ``seconds`` of real time;
3. starts a fresh emulator and the proxy (a policy written to a temporary directory, state in a temporary
   SQLite file), and runs the same tool through the proxy, showing the proxy's log live;
4. prints a side-by-side summary: what the tool saw, what the proxy did, what Exact (the emulator) saw.
Parts of the proxy that are not built show as "not built", never as a made-up figure. Returns 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from proxy.clock import ScaledClock
from proxy.demo.legacy_tool import LegacyTool, ToolReport

DIVISIONS = (101, 102, 103)


@dataclass
class RunResult:
    tool: ToolReport
    exact: dict[str, int]
    proxy: dict[str, Any] = field(default_factory=dict)


class LiveLog:
    """A stream for the proxy's log that shows what matters: decisions, warnings and the minute summary.

    Plain forwarded calls and "queued" lines are counted, not printed, or the screen would scroll past
    at a hundred lines a second; at most ``per_second`` lines of each kind are shown."""

    BORING = re.compile(r"decision=(\"?-\"?|\"?(queued [0-9.]+ ms|exact remaining[^\"]*)(; )?\"?)$")

    def __init__(self, out, per_second: int = 4) -> None:
        self.out, self.per_second = out, per_second
        self._buf = ""
        self._window = 0
        self._shown = 0
        self.hidden = 0

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            self._line(line)
        return len(text)

    def flush(self) -> None:
        pass

    def _line(self, line: str) -> None:
        important = " WARNING " in line or " ERROR " in line or "summary" in line
        if not important and (self.BORING.search(line) or "status=" not in line):
            self.hidden += 1
            return
        now = int(time.monotonic())
        if now != self._window:
            self._window, self._shown = now, 0
        if not important and self._shown >= self.per_second:
            self.hidden += 1
            return
        self._shown += 1
        self.out.write("  proxy | " + _shorten(line) + "\n")
        self.out.flush()


def _shorten(line: str, width: int = 150) -> str:
    line = re.sub(r"\b(up_ms|in|out|via)=\S+ ?", "", line)
    return line if len(line) <= width else line[: width - 1] + "…"


def built_features() -> dict[str, bool]:
    from proxy.pipeline import ORDER

    names = {getattr(f, "name", "") for f in ORDER}
    return {name: name in names for name in ("call_budget", "retry", "error_budget", "token_broker",
                                             "rewrite_filter", "rewrite_links")}


def exact_counts(state) -> dict[str, int]:
    """What the emulator saw, from its outcome counters."""
    c = state.count
    return {
        "calls": c(),
        "429": c(outcome="minutely_429") + c(outcome="daily_429"),
        "errors": sum(c(outcome=o) for o in ("mandatory_filter", "not_found", "bad_request", "unauthorized",
                                              "token_expired", "too_early", "old_refresh_token",
                                              "bulk_select", "sync_filter", "refresh_expired",
                                              "invalid_grant")),
        "token_calls": c(endpoint="oauth2/token"),
        "token_errors": c(outcome="too_early") + c(outcome="old_refresh_token"),
        "blocked": c(outcome="error_block"),
        "mandatory_filter": c(outcome="mandatory_filter"),
        "not_found": c(outcome="not_found"),
    }


async def _run(factor: float, seconds: float, through_proxy: bool, out) -> RunResult:
    from proxy.emulator.runner import start_emulator

    clock = ScaledClock(factor)
    emu = await start_emulator(clock=clock)
    deleted = emu.state.deleted_account_id(DIVISIONS[0])
    server = None
    tmp = tempfile.TemporaryDirectory(prefix="exact-proxy-demo-")
    try:
        base = emu.base_url
        live = None
        if through_proxy:
            server, live = await _start_proxy(emu.base_url, clock, tmp.name, out)
            base = server.url("default")
            out.write(f"     the dashboard, live while this runs: {base}/_proxy/\n")
            out.flush()
        tool = LegacyTool(base, clock, divisions=DIVISIONS, deleted_id=deleted)
        report = await tool.run(seconds * factor)
        result = RunResult(tool=report, exact=exact_counts(emu.state))
        if server is not None and live is not None:  # both or neither
            totals = server.services.metrics.totals
            result.proxy = {"queued": totals.get("queued", 0),
                            "longest_wait_s": server.services.metrics.longest_wait_ms / 1000,  # clock ms
                            "local": _local(server.services), "hidden_log_lines": live.hidden}
        return result
    finally:
        if server is not None:
            await server.stop()
        await emu.stop()
        tmp.cleanup()


def _local(services) -> dict[str, int]:
    from proxy.ops.admin import _local_counts

    return _local_counts(services)


def _write_policy(directory: str, emulator_url: str) -> str:
    path = os.path.join(directory, "policies.yaml")
    with open(path, "w") as fh:
        fh.write(f"upstreams:\n  emulator: {{base_url: '{emulator_url}'}}\n"
                 "listeners:\n  - {name: default, host: 127.0.0.1, port: 0, upstream: emulator}\n"
                 "state: {path: state.sqlite}\n")
    return path


async def _start_proxy(emulator_url: str, clock, directory: str, out):
    from proxy.http.server import ProxyServer
    from proxy.ops.logs import setup_logging
    from proxy.policy import load_policy
    from proxy.policy.watch import PolicyHolder

    path = _write_policy(directory, emulator_url)
    policy = load_policy(path)
    live = LiveLog(out)
    setup_logging(policy.log, "text", stream=live)
    server = ProxyServer(PolicyHolder(policy, path), clock)
    await server.start()
    return server, live


def _row(label: str, direct, proxied) -> str:
    return f"  {label:<44} {str(direct):>14} {str(proxied):>16}"


def summary(direct: RunResult, proxied: RunResult, features: dict[str, bool], factor: float) -> str:
    def errs(r: ToolReport) -> int:
        return sum(n for s, n in r.statuses.items() if s in (400, 401, 403, 404))

    nb = "not built"
    lines = [
        "", "  " + "=" * 76,
        _row("", "DIRECT", "THROUGH PROXY"),
        "  " + "-" * 76,
        "  What the tool saw",
        _row("calls made", direct.tool.calls, proxied.tool.calls),
        _row("calls that succeeded", direct.tool.ok, proxied.tool.ok),
        _row("429 Too Many Requests", direct.tool.statuses.get(429, 0), proxied.tool.statuses.get(429, 0)),
        _row("errors (400/401/403/404)", errs(direct.tool), errs(proxied.tool)),
        _row("failed token requests", sum(direct.tool.token_errors.values()),
             sum(proxied.tool.token_errors.values())),
        _row("rows from the unfiltered Accounts list", direct.tool.rows_listed_unfiltered,
             proxied.tool.rows_listed_unfiltered),
        "  What the proxy did",
        _row("calls queued", "-", proxied.proxy.get("queued", 0) if features["call_budget"] else nb),
        _row("longest wait (demo-clock seconds)", "-",
             f"{proxied.proxy.get('longest_wait_s', 0):.1f}" if features["call_budget"] else nb),
    ]
    local = proxied.proxy.get("local", {})
    for name in ("token_broker", "error_budget", "call_budget"):
        label = {"token_broker": "token requests answered locally",
                 "error_budget": "errors answered locally (cache, budget)",
                 "call_budget": "calls refused locally (with Retry-After)"}[name]
        lines.append(_row(label, "-", local.get(name, 0) if features[name] else nb))
    lines += [
        "  What Exact (the emulator) saw",
        _row("calls", direct.exact["calls"], proxied.exact["calls"]),
        _row("429s sent", direct.exact["429"], proxied.exact["429"]),
        _row("errors counted toward the hourly limit", direct.exact["errors"], proxied.exact["errors"]),
        _row("  of which mandatory-filter 400s", direct.exact["mandatory_filter"],
             proxied.exact["mandatory_filter"]),
        _row("  of which 404s on the deleted record", direct.exact["not_found"], proxied.exact["not_found"]),
        _row("token calls", direct.exact["token_calls"], proxied.exact["token_calls"]),
        _row("  too early / old refresh token", direct.exact["token_errors"], proxied.exact["token_errors"]),
        _row("calls refused by an endpoint block", direct.exact["blocked"], proxied.exact["blocked"]),
        "  " + "=" * 76,
        f"  Clock sped up {factor:g}x in emulator and proxy alike: a minute lasts {60 / factor:g} s.",
    ]
    missing = [n for n, ok in features.items() if not ok]
    if missing:
        lines.append("  Not built yet, so not shown: " + ", ".join(missing) + ".")
    return "\n".join(lines) + "\n"


async def run_demo(factor: float = 30.0, seconds: float = 25.0, out=None) -> int:
    out = out or sys.stdout
    features = built_features()
    say = out.write
    say(f"\nexact-proxy demo: the clock runs {factor:g}x faster in the emulator AND the proxy, so one Exact\n"
        f"minute lasts {60 / factor:g} s and a token's 600 s last {600 / factor:g} s. Each run takes "
        f"{seconds:g} s ({seconds * factor / 60:g} demo minutes).\n\n"
        f"The legacy tool: {len(DIVISIONS)} divisions read at twice the allowed 60 calls a minute, 3 jobs "
        "sharing one refresh token and refreshing at will, an unfiltered Accounts list, a loop over a "
        "deleted record.\n\n")
    say("1/2  The tool talks to Exact (the emulator) DIRECTLY ...\n")
    out.flush()
    direct = await _run(factor, seconds, False, out)
    say(f"     done: {direct.tool.calls} calls, {direct.tool.ok} succeeded, "
        f"{direct.tool.statuses.get(429, 0)} answered 429, {sum(direct.tool.token_errors.values())} failed "
        "token requests.\n\n")
    say("2/2  The same tool THROUGH THE PROXY (live proxy log; routine lines are counted, not shown) ...\n")
    out.flush()
    proxied = await _run(factor, seconds, True, out)
    say(f"     ({proxied.proxy.get('hidden_log_lines', 0)} routine log lines not shown)\n")
    say(summary(direct, proxied, features, factor))
    out.flush()
    logging.getLogger("exact_proxy").handlers.clear()
    return 0


def main(args) -> int:
    return asyncio.run(run_demo(factor=args.factor, seconds=args.seconds))
