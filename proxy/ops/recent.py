"""The last decisions that were not routine, for the dashboard: refusals, queues, pauses, substitutions,
learned and added filters, counted errors, retries, shares, chains started or refreshed.

Contract
- ``Recent(size)``: ``note(fields, user_agent)`` is given every request line's fields (``proxy.filters.access_log``)
  and keeps the request when one of its decisions is not routine; the oldest entry leaves when ``size``
  are kept. Routine (never kept): Exact's remaining figures, links rewritten, answers from a chain, the
  cache or a coalesced call (savings: ``/_proxy/usage`` counts them). Everything else is kept, so a new
  kind of decision shows up here until it is named routine.
- ``kind(decision)``: refusal | queue | filter | token | error | retry | share | other, for the page's
  tag.
- ``rows()``: newest first, each ``{at, id, method, path, status, app, division, endpoint, tool,
  decisions, kind}``. Paths carry the query as the log does (secrets masked,
  ``proxy.ops.redact.redact_query``), and every text passes ``redact.scrub``: no token reaches the page.
- Cost on the request path: one ``startswith`` per decision of the request (a tuple of prefixes).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from proxy.clock import utc_text
from proxy.ops.redact import scrub
from proxy.ops.tool_family import family

ROUTINE = ("exact remaining", "links rewritten", "links not rewritten", "answered from chain",
           "answered from cache", "answer shared with", "coalesced with", "not coalesced", "cache ")

KINDS = (("refused", "refusal"), ("upstream 429", "refusal"), ("queued", "queue"),
         ("waited for error headroom", "queue"), ("held for share", "share"), ("share ", "share"),
         ("rewritten (+$filter", "filter"), ("learned mandatory filter", "filter"),
         ("token substituted", "token"), ("chain ", "token"), ("refreshed upstream", "token"),
         ("upstream refresh failed", "token"), ("Exact refused", "token"), ("sent to test chain", "token"),
         ("counted error", "error"), ("answered from negative cache", "error"),
         ("answered from the shared negative cache", "error"), ("retry ", "retry"), ("gave up", "retry"),
         ("not retried", "retry"))
RANK = {"refusal": 0, "error": 1, "token": 2, "share": 3, "queue": 4, "filter": 5, "retry": 6, "other": 7}


def kind(decision: str) -> str:
    for prefix, name in KINDS:
        if decision.startswith(prefix):
            return name
    return "other"


class Recent:
    def __init__(self, size: int = 50) -> None:
        self.kept: deque[dict[str, Any]] = deque(maxlen=size)

    def note(self, fields: dict[str, Any], user_agent: str | None) -> None:
        """Keep the request when a decision is not routine; the tool (``proxy.ops.tool_family``) is only
        looked up then."""
        decisions = fields.get("decision") or ()
        notable = [d for d in decisions if not d.startswith(ROUTINE)]
        if notable:
            tool = family(user_agent)
            self.kept.append({**{k: fields.get(k) for k in ("ts", "id", "method", "path", "query", "status",
                                                            "app", "division", "endpoint")},
                              "tool": tool, "decisions": notable})

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for e in reversed(self.kept):
            kinds = [kind(d) for d in e["decisions"]]
            path = e["path"] + ("?" + e["query"] if e.get("query") else "")
            out.append({"at": utc_text(e["ts"]), "id": e["id"], "method": e["method"], "path": scrub(path),
                        "status": e["status"], "app": e["app"], "division": e["division"],
                        "endpoint": e["endpoint"], "tool": scrub(e["tool"] or ""),
                        "decisions": [scrub(d) for d in e["decisions"]],
                        "kind": min(kinds, key=RANK.__getitem__)})
        return out
