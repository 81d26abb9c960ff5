"""redact: no token, code or secret reaches a log line, however it is written there."""

from __future__ import annotations

import secrets

from proxy.ops import redact
from proxy.ops.redact import MASK, redact_query, remember_secret, scrub


def test_named_credentials_are_masked_in_free_text_and_queries():
    line = ('POST /api/oauth2/token?code=abc123def&client_id=app "refresh_token": "r-123456" '
            "Authorization: Bearer eyJhbGciOi.xyz client_secret=s3cr3t")
    out = scrub(line)
    for secret in ("abc123def", "r-123456", "eyJhbGciOi.xyz", "s3cr3t"):
        assert secret not in out
    assert "client_id=app" in out
    assert redact_query("code=abc&%24select=ID&client%5Fsecret=x") == f"code={MASK}&%24select=ID&client%5Fsecret={MASK}"


def test_registered_tokens_are_masked_whole_cut_short_and_percent_escaped():
    token = "stampNL001." + secrets.token_urlsafe(300) + "=="
    remember_secret(token)
    line = (f"chain started {token} then {token[:40]} in a message, "
            f"url=/x?t=%20{token} and json \"{token}\" and a bare word {token[:10]}x")
    out = scrub(line)
    assert token not in out and token[:40] not in out and token[11:40] not in out
    assert out.count(MASK) == 4
    assert "chain started" in out and "a bare word" in out


def test_plain_lines_are_left_alone_with_secrets_registered():
    remember_secret(secrets.token_urlsafe(64))
    line = "2026-11-24T10:56:57.123Z GET /api/v1/1/crm/Accounts?$select=ID,Name status=200 div=1 ms=0.9"
    assert scrub(line) == line


def test_the_register_is_bounded_and_keeps_the_newest():
    first = "first-" + secrets.token_urlsafe(40)
    remember_secret(first)
    for _ in range(redact.KNOWN_LIMIT + 10):
        remember_secret(secrets.token_urlsafe(40))
    newest = secrets.token_urlsafe(40)
    remember_secret(newest)
    assert len(redact._known) <= redact.KNOWN_LIMIT
    assert scrub(f"a {newest} b") == f"a {MASK} b"
    assert first in scrub(f"a {first} b")  # long expired: forgotten, so the register cannot grow without end


def test_registered_secrets_are_masked_inside_paths_and_in_lower_case():
    from proxy.ops.redact import remember_secret, scrub

    token = "acc-PathSegmentToken0123456789abcdef"
    remember_secret(token)
    line = f"GET /api/v1/current/{token}/x ep=current/{token.lower()} and %2F{token}"
    out = scrub(line)
    assert token not in out and token.lower() not in out
    assert out.startswith("GET /api/v1/current/***/x ep=current/***")
