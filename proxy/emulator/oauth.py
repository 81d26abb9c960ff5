"""OAuth as Exact does it: codes, rotating refresh tokens, 600-second access tokens, and their limits.

Contract: ``OAuth(config, clock)``.
- ``authorize(client_id, redirect_uri, user)`` returns a single-use code (``code_lifetime``, 180 s).
- ``token(form, basic) -> (status, body, headers, outcome, app, user)`` serves
  ``grant_type=authorization_code`` and ``refresh_token``, credentials in the form or HTTP Basic:
  rotation (an earlier refresh token gets 401 "Old refresh token used."), the 570-second rule
  (400 access_denied with ``Reason: TooEarlyToRefreshTokens`` and ``Retry-After``), 200 token calls per
  app and user per UTC day, refresh tokens expiring 30 days after issue, codes single use.
- ``check(access_token) -> (app, user, problem)``: problem is None, ``unknown``, ``revoked`` or ``expired``.
- ``issue(client_id, user)`` makes a pair directly (tests), not counted as a token call.
- ``revoke(client_id=None, user=None, refresh=False) -> int``: every access token issued so far for the
  app and/or user (all when neither is given) is revoked (``check`` says ``revoked`` from then on); with
  ``refresh`` their refresh tokens too (a refresh with one gets 400 invalid_grant "The refresh token is
  invalid."). Answers how many access tokens it revoked; tokens issued afterwards work.
Client ids are taken in any spelling and kept in their normal form (``identity``): every app, the
``app`` answered, and the keys of codes, grants, tokens, token-call counts and the 570-second clock.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

from proxy.emulator.identity import normal_client_id


@dataclass
class Grant:
    client_id: str
    user: str
    refresh_token: str
    issued_at: float
    current: bool = True
    superseded_at: float | None = None
    revoked: bool = False


def _fmt(epoch: float) -> str:  # Exact's own style: 10/11/2022 9:18:20 PM
    t = time.gmtime(epoch)
    hour = t.tm_hour % 12 or 12
    return f"{t.tm_mon}/{t.tm_mday}/{t.tm_year} {hour}:{t.tm_min:02d}:{t.tm_sec:02d} {'AM' if t.tm_hour < 12 else 'PM'}"


class OAuth:
    def __init__(self, config, clock) -> None:
        self.config = config
        self.clock = clock
        self.codes: dict[str, tuple[str, str, str, float]] = {}      # code -> client, redirect, user, expires
        self.access: dict[str, tuple[str, str, float]] = {}          # token -> client, user, expires
        self.revoked: dict[str, tuple[str, str]] = {}               # revoked token -> client, user
        self.refresh: dict[str, Grant] = {}
        self.last_issued: dict[tuple[str, str], float] = {}         # (client, user) -> time of last token
        self.calls: dict[tuple[str, str], list[float]] = {}         # (client, user) -> [day, count]

    # -- the browser part --------------------------------------------------------------------------
    def authorize(self, client_id: str, redirect_uri: str, user: str) -> str:
        code = "code-" + secrets.token_urlsafe(24)
        expires = self.clock.time() + self.config.code_lifetime
        self.codes[code] = (normal_client_id(client_id), redirect_uri, user, expires)
        return code

    # -- direct issue (tests and demo) ---------------------------------------------------------------
    def issue(self, client_id: str, user: str) -> dict:
        return self._new_pair(normal_client_id(client_id), user)

    def revoke(self, client_id: str | None = None, user: str | None = None, refresh: bool = False) -> int:
        app = normal_client_id(client_id) if client_id is not None else None
        hit = [t for t, (c, u, _exp) in self.access.items()
               if (app is None or c == app) and (user is None or u == user)]
        for t in hit:
            c, u, _exp = self.access.pop(t)
            self.revoked[t] = (c, u)
        if refresh:
            for g in self.refresh.values():
                if (app is None or g.client_id == app) and (user is None or g.user == user):
                    g.revoked = True
        return len(hit)

    def _new_pair(self, client_id: str, user: str) -> dict:
        now = self.clock.time()
        access = "acc-" + secrets.token_urlsafe(32)
        refresh = "Gcp7!IAAA" + secrets.token_urlsafe(40)
        self.access[access] = (client_id, user, now + self.config.access_token_lifetime)
        for g in self.refresh.values():
            if g.client_id == client_id and g.user == user and g.current:
                g.current, g.superseded_at = False, now
        self.refresh[refresh] = Grant(client_id, user, refresh, now)
        self.last_issued[(client_id, user)] = now
        return {"access_token": access, "token_type": "Bearer",
                "expires_in": str(int(self.config.access_token_lifetime)), "refresh_token": refresh}

    # -- API calls -------------------------------------------------------------------------------------
    def check(self, token: str) -> tuple[str | None, str | None, str | None]:
        entry = self.access.get(token)
        if entry is None:
            gone = self.revoked.get(token)
            return (gone[0], gone[1], "revoked") if gone else (None, None, "unknown")
        if entry[2] <= self.clock.time():
            return entry[0], entry[1], "expired"
        return entry[0], entry[1], None

    # -- the token endpoint ------------------------------------------------------------------------------
    def token(self, form: dict[str, str], basic: tuple[str, str] | None):
        client_id = form.get("client_id") or (basic[0] if basic else None)
        secret = form.get("client_secret") or (basic[1] if basic else None)
        client_id = normal_client_id(client_id) if client_id else None
        if not client_id or self.config.clients.get(client_id) != secret:
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed."}, {}, \
                "invalid_client", client_id or "unknown", None
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return self._code(client_id, form)
        if grant == "refresh_token":
            return self._refresh(client_id, form.get("refresh_token", ""))
        return 400, {"error": "unsupported_grant_type", "error_description": f"grant_type {grant!r} is not "
                     "supported"}, {}, "bad_request", client_id, None

    def _count(self, client_id: str, user: str) -> bool:
        """Count a token call; False when the day's allowance is spent."""
        now = self.clock.time()
        day = math.floor(now / 86400)
        entry = self.calls.setdefault((client_id, user), [day, 0])
        if entry[0] != day:
            entry[0], entry[1] = day, 0
        if entry[1] >= self.config.daily_token_calls:
            return False
        entry[1] += 1
        return True

    def _too_early(self, client_id: str, user: str):
        last = self.last_issued.get((client_id, user))
        now = self.clock.time()
        if last is not None and now - last < self.config.min_refresh_interval:
            wait = max(1, math.ceil(self.config.min_refresh_interval - (now - last)))
            text = "Rate limit exceeded: access_token not expired"
            return 400, {"error": "access_denied", "error_description": text}, \
                {"Reason": f"TooEarlyToRefreshTokens: {text}", "Retry-After": str(wait)}, "too_early", client_id, user
        return None

    def _limit(self, client_id: str, user: str):
        return self.config.token_daily_limit_status, {
            "error": "access_denied", "error_description": "Maximum number of token requests per day reached."}, \
            {}, "token_daily_limit", client_id, user

    def _code(self, client_id: str, form: dict[str, str]):
        code = form.get("code", "")
        entry = self.codes.pop(code, None)
        now = self.clock.time()
        if entry is None or entry[0] != client_id or entry[3] <= now or \
                (form.get("redirect_uri") and entry[1] and form.get("redirect_uri") != entry[1]):
            return 400, {"error": "invalid_grant", "error_description": "The authorization code is invalid, "
                         "expired or was used before."}, {}, "invalid_grant", client_id, None
        user = entry[2]
        if not self._count(client_id, user):
            return self._limit(client_id, user)
        return 200, self._new_pair(client_id, user), {}, "ok", client_id, user

    def _refresh(self, client_id: str, token: str):
        g = self.refresh.get(token)
        now = self.clock.time()
        if g is None or g.client_id != client_id or g.revoked:
            return 400, {"error": "invalid_grant", "error_description": "The refresh token is invalid."}, {}, \
                "invalid_grant", client_id, None
        if not self._count(client_id, g.user):
            return self._limit(client_id, g.user)
        if not g.current and not (g.superseded_at is not None and now - g.superseded_at < self.config.old_refresh_grace):
            return 401, {"error": "unauthorized_client", "error_description": "Old refresh token used."}, {}, \
                "old_refresh_token", client_id, g.user
        expires = g.issued_at + self.config.refresh_token_lifetime
        if expires <= now:
            return 400, {"error": "invalid_request", "error_description": f"The refresh token expired at "
                         f"{_fmt(expires)} and it is now {_fmt(now)}."}, {}, "refresh_expired", client_id, g.user
        early = self._too_early(client_id, g.user)
        if early is not None:
            if self.config.too_early_invalidates:
                g.current = False
            return early
        return 200, self._new_pair(client_id, g.user), {}, "ok", client_id, g.user

    def calls_today(self, client_id: str, user: str) -> int:
        entry = self.calls.get((normal_client_id(client_id), user))
        return int(entry[1]) if entry and entry[0] == math.floor(self.clock.time() / 86400) else 0

    def reset_counts(self) -> None:
        """Forget the day's token-call counts and the 570-second clocks (``/_emulator/reset``)."""
        self.calls.clear()
        self.last_issued.clear()
