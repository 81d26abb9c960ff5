"""The answers of cluster token mode when nothing is sent to Exact (``proxy.cluster.chain_flow``,
``chain_refresh``, ``chain_start``).

Contract
- ``unreachable(what, why="")``: 503 ``temporarily_unavailable`` with ``Retry-After: RETRY_AFTER``;
  ``why`` says what stopped it (by default: the cluster's shared state server is unreachable).
- ``daily(key, settings, now)``: 429: the day's token-call budget (``tokens.daily_token_calls``) of the
  app ``key[0]`` is spent across the cluster; ``Retry-After`` runs to the next UTC day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.clock import utc_text
from proxy.cluster.link import RETRY_AFTER
from proxy.tokens.answers import TokenAnswer, oauth_error

if TYPE_CHECKING:
    from proxy.tokens.settings import TokenSettings

DAY = 86400.0


def unreachable(what: str, why: str = "") -> TokenAnswer:
    reason = why or "the cluster's shared state server is unreachable"
    return TokenAnswer(503, oauth_error("temporarily_unavailable", f"{what} cannot be had now: {reason}; "
                       f"nothing was sent to Exact. Retry after {RETRY_AFTER} s"),
                       {"Retry-After": str(RETRY_AFTER)}, f"refused ({reason})")


def daily(key: tuple[str, str], settings: TokenSettings, now: float) -> TokenAnswer:
    reset = (int(now // DAY) + 1) * DAY
    return TokenAnswer(429, oauth_error("temporarily_unavailable", f"the daily token-call budget "
                       f"({settings.daily_token_calls} of Exact's 200) for app {key[0]} is spent across the "
                       f"cluster; it resets at {utc_text(reset)}"), {"Retry-After": str(int(reset - now) + 1)},
                       "refused (daily token budget, cluster)")
