"""``exact-proxy demo`` (README "What the demo shows"): a smoke test of the whole command, and its parts.

The demo runs at 30x by default (``--factor``); here at 200x for 4 s a run (``--seconds``): 800 demo
seconds, past the first token rotation, in about 10 s. Directly the legacy tool gets 429s and too-early /
old-refresh-token errors; through the proxy Exact sees none of them.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from proxy.demo.legacy_tool import ToolReport
from proxy.demo.run import DIVISIONS, LiveLog, RunResult, summary

ROOT = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^ {2,}(?P<label>\S.*?)\s{2,}(?P<direct>\S+)\s+(?P<proxied>\S+)$")


def _table(text: str) -> dict[str, dict[str, tuple[str, str]]]:
    """The summary table: section -> row label -> (direct, through the proxy)."""
    sections: dict[str, dict[str, tuple[str, str]]] = {}
    current = None
    for line in text[text.rindex("DIRECT") :].splitlines()[1:]:
        if line.startswith("  What "):
            current = sections.setdefault(line.strip(), {})
            continue
        m = ROW.match(line)
        if m and current is not None:
            current[m["label"].strip()] = (m["direct"], m["proxied"])
    return sections


def test_the_demo_shows_exact_seeing_no_429_and_no_token_error_through_the_proxy():
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--factor", "200", "--seconds", "4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Clock sped up 200x" in done.stdout
    exact = _table(done.stdout)["What Exact (the emulator) saw"]
    direct_429, proxied_429 = exact["429s sent"]
    direct_token, proxied_token = exact["too early / old refresh token"]
    assert proxied_429 == "0" and proxied_token == "0", done.stdout[-3000:]
    assert int(direct_429) > 0 and int(direct_token) > 0, done.stdout[-3000:]  # the problem the demo shows
    assert int(exact["token calls"][1]) >= 2  # the proxy refreshed: the run passed a token rotation


def test_the_live_log_shows_decisions_and_warnings_and_counts_routine_lines():
    out = io.StringIO()
    live = LiveLog(out, per_second=100)
    live.write(
        '2026-01-01T00:00:00.000Z GET /api/v1/101/crm/Accounts status=200 ms=3 decision="queued 12 ms"\n'
    )
    live.write(
        '2026-01-01T00:00:00.000Z GET /api/v1/101/crm/Accounts status=429 ms=3 decision="refused (x)"\n'
        "2026-01-01T00:00:00.000Z WARNING exact_proxy.budget: Exact answered 429"
    )
    assert live.hidden == 1 and out.getvalue().count("  proxy | ") == 1
    live.write("\n")  # a line is shown once it is complete
    assert out.getvalue().count("  proxy | ") == 2 and "WARNING" in out.getvalue()


def test_the_summary_names_what_is_not_built_instead_of_a_figure():
    tool = ToolReport()
    tool.record(200, 0.1)
    tool.record(429, 0.1)
    exact = dict.fromkeys(
        ("calls", "429", "errors", "token_calls", "token_errors", "blocked", "mandatory_filter", "not_found"),
        0,
    )
    features = dict.fromkeys(
        ("call_budget", "retry", "error_budget", "token_broker", "rewrite_filter", "rewrite_links"), True
    )
    features["retry"] = False
    text = summary(RunResult(tool, exact), RunResult(tool, exact, {"queued": 3}), features, 30.0)
    table = _table(text)
    assert table["What the tool saw"]["429 Too Many Requests"] == ("1", "1")
    assert table["What the proxy did"]["calls queued"] == ("-", "3")
    assert "a minute lasts 2 s" in text and "Not built yet, so not shown: retry." in text
    assert len(DIVISIONS) == 3
