"""OAuth2 token bookkeeping as Exact does it (no HTTP here).

Contract
- ``issue(client_id, user, now)``: a new access/refresh pair; the previous refresh token of that
  (client, user) becomes *old* (rotation) and the (client, user)'s last-token time is ``now``.
- ``check_access(token, now) -> (client_id, user, problem)``: problem ``None``, ``"unknown"`` or ``"expired"``.
- ``new_code(client_id, user, redirect_uri, now)``: a single-use authorization code living ``code_lifetime``.
- ``grant(form, basic, now) -> TokenResult``: the whole token endpoint: client authentication (body or
  HTTP Basic), the ``authorization_code`` and ``refresh_token`` grants, the daily cap per (client, user), old
  refresh tokens, refresh-token expiry and the too-early rule (``refresh_token`` grant only).
Outcomes: ok, invalid_client, invalid_grant, unsupported_grant_type, token_daily_limit, old_refresh_token,
refresh_expired, too_early.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .config import EmulatorConfig


@dataclass
class Refresh:
    client_id: str
    user: str
    issued_at: float
    current: bool = True


@dataclass
class TokenResult:
    status: int
    body: dict
    outcome: str
    client_id: str | None = None
    user: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def exact_time(t: float) -> str:
    """``10/11/2022 9:18:20 PM``: how Exact writes times in its token errors."""
    d = datetime.fromtimestamp(t, UTC)
    hour = d.hour % 12 or 12
    return f"{d.month}/{d.day}/{d.year} {hour}:{d.minute:02d}:{d.second:02d} {'AM' if d.hour < 12 else 'PM'}"


class Tokens:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.access: dict[str, tuple[str, str, float]] = {}
        self.refresh: dict[str, Refresh] = {}
        self.current: dict[tuple[str, str], str] = {}
        self.last_issued: dict[tuple[str, str], float] = {}
        self.codes: dict[str, tuple[str, str, str | None, float]] = {}
        self.daily: dict[tuple[str, str], tuple[int, int]] = {}

    def reset_counts(self) -> None:
        self.daily.clear()

    def issue(self, client_id: str, user: str, now: float) -> dict:
        access = "eo-" + secrets.token_urlsafe(36)
        refresh = "Gcp7!IAAA" + secrets.token_urlsafe(48)
        self.access[access] = (client_id, user, now + self.config.access_token_lifetime)
        old = self.current.get((client_id, user))
        if old is not None and old in self.refresh:
            self.refresh[old].current = False
        self.refresh[refresh] = Refresh(client_id, user, now)
        self.current[(client_id, user)] = refresh
        self.last_issued[(client_id, user)] = now
        return {
            "access_token": access,
            "token_type": self.config.token_type,
            "expires_in": str(int(self.config.access_token_lifetime)),
            "refresh_token": refresh,
        }

    def check_access(self, token: str, now: float) -> tuple[str | None, str | None, str | None]:
        entry = self.access.get(token)
        if entry is None:
            return None, None, "unknown"
        if now >= entry[2]:
            return entry[0], entry[1], "expired"
        return entry[0], entry[1], None

    def new_code(self, client_id: str, user: str, redirect_uri: str | None, now: float) -> str:
        code = "stampNL001." + secrets.token_urlsafe(32)
        self.codes[code] = (client_id, user, redirect_uri, now + self.config.code_lifetime)
        return code

    def token_calls(self, client_id: str, user: str, now: float) -> int:
        day, n = self.daily.get((client_id, user), (-1, 0))
        return n if day == int(now // 86400) else 0

    def _count(self, client_id: str, user: str, now: float) -> bool:
        """Count one token call; False when it goes past the daily cap."""
        day = int(now // 86400)
        n = self.token_calls(client_id, user, now) + 1
        self.daily[(client_id, user)] = (day, n)
        return n <= self.config.token_daily_limit

    def _client(self, form: dict[str, str], basic: tuple[str, str] | None) -> str | None:
        cid, secret = form.get("client_id"), form.get("client_secret")
        if basic is not None and (not cid or not secret):
            cid, secret = basic
        if not cid or cid not in self.config.clients:
            return None
        return cid if secrets.compare_digest(self.config.clients[cid], secret or "") else None

    def grant(self, form: dict[str, str], basic: tuple[str, str] | None, now: float) -> TokenResult:
        cid = self._client(form, basic)
        if cid is None:
            return TokenResult(400, {"error": "invalid_client"}, "invalid_client", form.get("client_id"))
        gt = form.get("grant_type")
        if gt == "authorization_code":
            return self._code_grant(cid, form, now)
        if gt == "refresh_token":
            return self._refresh_grant(cid, form, now)
        return TokenResult(400, {"error": "unsupported_grant_type"}, "unsupported_grant_type", cid)

    def _limit(self, cid: str, user: str) -> TokenResult:
        return TokenResult(
            self.config.token_daily_status,
            {
                "error": "access_denied",
                "error_description": "Rate limit exceeded: maximum number of token requests per day",
            },
            "token_daily_limit",
            cid,
            user,
        )

    def _code_grant(self, cid: str, form: dict[str, str], now: float) -> TokenResult:
        entry = self.codes.pop(form.get("code", ""), None)
        if entry is None or entry[0] != cid:
            return TokenResult(400, {"error": "invalid_grant"}, "invalid_grant", cid)
        _, user, redirect_uri, expires = entry
        if not self._count(cid, user, now):
            return self._limit(cid, user)
        if now >= expires or (redirect_uri and form.get("redirect_uri") not in (None, redirect_uri)):
            return TokenResult(400, {"error": "invalid_grant"}, "invalid_grant", cid, user)
        return TokenResult(200, self.issue(cid, user, now), "ok", cid, user)

    def _refresh_grant(self, cid: str, form: dict[str, str], now: float) -> TokenResult:
        token = form.get("refresh_token", "")
        rt = self.refresh.get(token)
        if rt is None or rt.client_id != cid:
            return TokenResult(400, {"error": "invalid_grant"}, "invalid_grant", cid)
        user = rt.user
        if not self._count(cid, user, now):
            return self._limit(cid, user)
        if not rt.current:
            return TokenResult(
                401,
                {"error": "unauthorized_client", "error_description": "Old refresh token used."},
                "old_refresh_token",
                cid,
                user,
            )
        expires = rt.issued_at + self.config.refresh_token_lifetime
        if now >= expires:
            text = f"The refresh token expired at {exact_time(expires)} and it is now {exact_time(now)}."
            return TokenResult(
                400, {"error": "invalid_request", "error_description": text}, "refresh_expired", cid, user
            )
        last = self.last_issued.get((cid, user))
        if last is not None and now - last < self.config.too_early_seconds:
            text = "Rate limit exceeded: access_token not expired"
            headers = {"Reason": "TooEarlyToRefreshTokens: " + text}
            if self.config.too_early_retry_after:
                headers["Retry-After"] = str(max(1, math.ceil(self.config.too_early_seconds - (now - last))))
            if self.config.invalidate_on_too_early:
                rt.current = False
            return TokenResult(
                400, {"error": "access_denied", "error_description": text}, "too_early", cid, user, headers
            )
        return TokenResult(200, self.issue(cid, user, now), "ok", cid, user)
