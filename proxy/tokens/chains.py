"""Token chains: what the broker knows about each app and user's line of tokens.

Contract
- A ``Chain`` starts with an authorization-code exchange (or with the first refresh the proxy sees for a
  token it did not know) and follows every rotation after it. It holds the current access and refresh
  token, when the last token came from Exact (the 570 s rule), and fingerprints of earlier refresh and
  access tokens so tools still holding them are recognised without those tokens being kept.
- ``status_row(...)``: a chain as the status page shows it (times and counts, never a token), from this
  node's ``Chain`` or a cluster record's fields alike.
- ``ChainBook`` finds a chain by any of its tokens, counts token calls per app and user per UTC day, and
  turns chains into store records (tokens and client secret sealed, ``proxy.tokens.sealing``) and back.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from proxy.clock import utc_text
from proxy.tokens.sealing import Sealer, fingerprint
from proxy.tokens.settings import TokenSettings

NAMESPACE = "token_chains"
COUNTS = "token_calls"
DAY = 86400


def status_row(chain_id: str, app: str, user: str | None, *, issued_at: float, access_expires_at: float,
               refresh_issued_at: float, paused_until: float, needs_reauth: str | None, rejected_at: float,
               calls_today: int, settings: TokenSettings, now: float) -> dict[str, Any]:
    """One chain on the status page. ``next_refresh_at``: the earliest time the proxy sends the chain's
    next refresh to Exact (when a tool asks for one): the access token's end less ``refresh_margin``,
    never before ``min_refresh_interval`` after the last token nor before a TooEarly pause ends."""
    refresh_expires = refresh_issued_at + settings.refresh_token_lifetime
    next_refresh = max(access_expires_at - settings.refresh_margin, issued_at + settings.min_refresh_interval,
                       paused_until)
    return {"chain": chain_id, "app": app, "user": user, "access_expires_in_s": int(access_expires_at - now),
            "refresh_expires_at": utc_text(refresh_expires),
            "refresh_expires_in_s": int(refresh_expires - now),
            "expires_soon": refresh_expires - now <= settings.warn_before_expiry,
            "last_refresh_at": utc_text(issued_at) if issued_at > 0 else None,
            "next_refresh_at": utc_text(next_refresh) if not needs_reauth else None,
            "needs_reauth": bool(needs_reauth), "needs_reauth_why": needs_reauth,
            "access_rejected": rejected_at >= issued_at > 0, "token_calls_today": calls_today}


@dataclass
class Chain:
    id: str
    client_id: str
    upstream: str
    access_token: str
    access_expires_at: float
    refresh_token: str
    issued_at: float                     # when Exact last gave this chain a token
    refresh_issued_at: float             # the current refresh token's birth (expiry counts from here)
    user: str | None = None
    client_secret: str | None = None
    secret_fp: str | None = None
    old_refresh: dict[str, float] = field(default_factory=dict)   # fingerprint -> retired at
    old_access: dict[str, float] = field(default_factory=dict)
    paused_until: float = 0.0            # Exact said TooEarly: no upstream refresh before this
    needs_reauth: str | None = None      # why a person must authorize again
    last_used_at: float = 0.0
    rejected_at: float = 0.0             # when Exact last answered 401 to the current access token
    reauth_retry_at: float = 0.0         # needs_reauth, but Exact may be tried once more from then (0: never)
    next_probe_at: float = 0.0           # after a 401: when one call may test the token again
    probes: int = 0                      # calls sent as such tests since the 401

    @property
    def key(self) -> tuple[str, str]:
        return (self.client_id, self.user or f"chain:{self.id}")

    def rotate(self, access: str, expires_in: float, refresh: str, now: float) -> None:
        self.old_access[fingerprint(self.access_token)] = now
        if refresh != self.refresh_token:
            self.old_refresh[fingerprint(self.refresh_token)] = now
            self.refresh_issued_at = now
        self.access_token, self.refresh_token = access, refresh
        self.access_expires_at = now + expires_in
        self.issued_at = now
        self.needs_reauth = None
        self.paused_until = 0.0
        self.rejected_at = self.reauth_retry_at = self.next_probe_at = 0.0
        self.probes = 0

    def forget_older_than(self, cutoff: float) -> None:
        self.old_refresh = {k: t for k, t in self.old_refresh.items() if t >= cutoff}
        self.old_access = {k: t for k, t in self.old_access.items() if t >= cutoff}


def new_chain_id() -> str:
    return secrets.token_hex(6)


class ChainBook:
    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self.chains: dict[str, Chain] = {}
        self._by_refresh: dict[str, str] = {}
        self._by_access: dict[str, str] = {}
        self.calls: dict[str, list[int]] = {}   # "client|user" -> [utc day number, count]
        self.only_app: str | None = None    # the client id when every chain is of one app

    def _apps_changed(self) -> None:
        apps = {c.client_id for c in self.chains.values()}
        self.only_app = next(iter(apps)) if len(apps) == 1 else None

    # -- lookups ---------------------------------------------------------------------------------
    def add(self, chain: Chain) -> None:
        self.chains[chain.id] = chain
        self.index(chain)
        self._apps_changed()

    def index(self, chain: Chain) -> None:
        self._by_refresh[fingerprint(chain.refresh_token)] = chain.id
        self._by_access[fingerprint(chain.access_token)] = chain.id
        for fp in chain.old_refresh:
            self._by_refresh[fp] = chain.id
        for fp in chain.old_access:
            self._by_access[fp] = chain.id

    def by_refresh(self, token: str, now: float, window: float) -> tuple[Chain | None, bool]:
        """(chain, is_current). An earlier token counts only within ``window`` seconds of its retirement."""
        fp = fingerprint(token)
        chain = self.chains.get(self._by_refresh.get(fp, ""))
        if chain is None:
            return None, False
        if chain.refresh_token == token:
            return chain, True
        retired = chain.old_refresh.get(fp)
        if retired is not None and now - retired <= window:
            return chain, False
        return None, False

    def by_access(self, token: str) -> Chain | None:
        return self.chains.get(self._by_access.get(fingerprint(token), ""))

    def for_user(self, client_id: str, user: str | None) -> Chain | None:
        if user is None:
            return None
        for chain in self.chains.values():
            if chain.client_id == client_id and chain.user == user:
                return chain
        return None

    def replace(self, old: Chain, new: Chain) -> None:
        """A new authorization for the same app and user: tools holding the old chain's tokens follow
        the new chain."""
        new.old_refresh.update(old.old_refresh)
        new.old_refresh[fingerprint(old.refresh_token)] = new.issued_at
        new.old_access.update(old.old_access)
        new.old_access[fingerprint(old.access_token)] = new.issued_at
        self.chains.pop(old.id, None)
        self.add(new)

    # -- the daily token-call count ------------------------------------------------------------
    def calls_today(self, key: tuple[str, str], now: float) -> int:
        day, count = self.calls.get("|".join(key), [-1, 0])
        return count if day == int(now // DAY) else 0

    def count_call(self, key: tuple[str, str], now: float) -> int:
        today = int(now // DAY)
        entry = self.calls.setdefault("|".join(key), [today, 0])
        if entry[0] != today:
            entry[:] = [today, 0]
        entry[1] += 1
        return entry[1]

    # -- persistence -----------------------------------------------------------------------------
    def record(self, chain: Chain) -> dict[str, Any]:
        rec = asdict(chain)
        for name in ("access_token", "refresh_token", "client_secret"):
            rec[name] = self.sealer.seal(rec[name])
        return rec

    def load_record(self, rec: dict[str, Any]) -> Chain:
        known = {f.name for f in fields(Chain)}
        rec = {k: v for k, v in rec.items() if k in known}
        for name in ("access_token", "refresh_token", "client_secret"):
            rec[name] = self.sealer.open(rec.get(name))
        return Chain(**rec)
