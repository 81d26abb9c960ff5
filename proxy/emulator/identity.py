"""One app, several spellings: the normal form of a client id (exact-online-api.md §9).

Contract: ``normal_client_id(text) -> str`` strips surrounding whitespace, then one pair of surrounding
braces, then lower-cases, so ``{B81CC4DE-…}``, ``b81cc4de-…`` and `` b81cc4de-… `` are one app. The
emulator keys everything that belongs to an app by this form (configured clients and limit rules,
codes, grants, access tokens, token-call counts, the 570-second clock, call limits, the error limit,
revocations and the statistics' ``app``); it normalises once, where a client id comes in.
"""

from __future__ import annotations


def normal_client_id(text) -> str:
    s = str(text).strip()
    if len(s) >= 2 and s[0] == "{" and s[-1] == "}":
        s = s[1:-1]
    return s.lower()
