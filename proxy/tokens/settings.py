"""The ``tokens:`` section of policies.yaml: the OAuth token broker (``/api/oauth2/token``)."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.reader import Reader


@dataclass(frozen=True)
class TokenSettings:
    """The OAuth token broker (``/api/oauth2/token``)."""

    broker: bool = True
    refresh_margin: float = 30.0         # 600 - 570: a refresh goes upstream as soon as Exact allows one
    min_refresh_interval: float = 570.0
    old_token_window: float = 86400.0
    daily_token_calls: int = 190
    substitute_expired: bool = True
    refresh_token_lifetime: float = 30 * 86400.0
    warn_before_expiry: float = 7 * 86400.0
    keepalive: bool = True
    keepalive_after: float = 20 * 86400.0
    identify_user: bool = True
    loop_delay: float = 1.0              # real seconds before answering a tool of a chain that needs a person


def read_tokens(r: Reader) -> TokenSettings:
    d = TokenSettings()
    t = TokenSettings(
        broker=r.boolean("broker", d.broker),
        refresh_margin=r.number("refresh_margin", d.refresh_margin, minimum=0),
        min_refresh_interval=r.number("min_refresh_interval", d.min_refresh_interval, minimum=0),
        old_token_window=r.number("old_token_window", d.old_token_window, minimum=0),
        daily_token_calls=r.integer("daily_token_calls", d.daily_token_calls, minimum=1, maximum=100000),
        substitute_expired=r.boolean("substitute_expired", d.substitute_expired),
        refresh_token_lifetime=r.number("refresh_token_lifetime", d.refresh_token_lifetime, minimum=60),
        warn_before_expiry=r.number("warn_before_expiry", d.warn_before_expiry, minimum=0),
        keepalive=r.boolean("keepalive", d.keepalive),
        keepalive_after=r.number("keepalive_after", d.keepalive_after, minimum=60),
        identify_user=r.boolean("identify_user", d.identify_user),
        loop_delay=r.number("loop_delay", d.loop_delay, minimum=0),
    )
    r.finish()
    if t.keepalive and t.keepalive_after >= t.refresh_token_lifetime:
        r.problem(("keepalive_after",), "must be shorter than refresh_token_lifetime, or the chain expires first")
    return t
