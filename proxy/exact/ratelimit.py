"""Exact's rate-limit headers, as numbers: the ``X-RateLimit-*`` integers and ``Retry-After``.

Contract: ``header_int(value)`` is the decimal integer a header holds, or None (absent, unreadable);
``retry_after_seconds(value, now)`` is ``Retry-After`` as seconds, given as a number or an HTTP date,
or None. Pure functions, no state.
"""

from __future__ import annotations

import email.utils


def header_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now) if when is not None else None


