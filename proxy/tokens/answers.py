"""What the broker answers a tool: ``TokenAnswer`` and the OAuth-shaped bodies it carries.

Contract: ``TokenAnswer`` is status, JSON body, extra headers, the decision for the log, how many
upstream calls it took, and ``reauth`` (the chain needs a person: a looping tool is slowed down).
``ok_body(chain, now)`` is Exact's token answer from a chain (``expires_in`` a string, as Exact sends
it); ``oauth_error`` the OAuth error shape, its description marked ``exact-proxy:``; ``no_client``
Exact's ``401 invalid_client``; ``remembered`` and ``joined`` re-label an answer given before or shared
with a concurrent request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from proxy.clock import utc_text
from proxy.tokens.chains import Chain
from proxy.tokens.flight import Refused


@dataclass
class TokenAnswer:
    """What the broker answers a tool: status, JSON body, extra headers, and what it did (for the log)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    decision: str
    upstream_calls: int = 0
    reauth: bool = False                  # the chain needs a person: a looping tool is slowed down


def ok_body(chain: Chain, now: float) -> dict[str, Any]:
    left = max(0, int(chain.access_expires_at - now))
    return {"access_token": chain.access_token, "token_type": "bearer", "expires_in": str(left),
            "refresh_token": chain.refresh_token}


def oauth_error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": "exact-proxy: " + description}


def no_client(why: str) -> TokenAnswer:
    """What Exact answers a token request without the app's credentials."""
    return TokenAnswer(401, oauth_error("invalid_client", f"Client authentication failed ({why})"), {},
                       f"refused ({why})")


def remembered_answer(hit: Refused, what: str) -> TokenAnswer:
    return TokenAnswer(hit.status, dict(hit.body), dict(hit.headers), f"answered from memory (Exact refused "
                       f"this {what} at {utc_text(hit.at)})")


def joined(answer: TokenAnswer, what: str) -> TokenAnswer:
    return dataclasses.replace(answer, body=dict(answer.body), upstream_calls=0,
                               decision=f"{answer.decision} (joined a concurrent {what})")
