"""Token chains and sealing: recognise earlier tokens, count calls per day, keep secrets sealed."""

from __future__ import annotations

import pytest

from proxy.tokens.chains import Chain, ChainBook
from proxy.tokens.sealing import Sealer, SealError, fingerprint, new_key


def _chain(now=1000.0) -> Chain:
    return Chain(id="c1", client_id="app", upstream="nl", access_token="A1", access_expires_at=now + 600,
                 refresh_token="R1!x", issued_at=now, refresh_issued_at=now, client_secret="s3cret")


def test_earlier_refresh_tokens_are_recognised_within_the_window():
    book = ChainBook(Sealer(None))
    chain = _chain()
    book.add(chain)
    chain.rotate("A2", 600, "R2!y", 1600.0)
    book.index(chain)
    assert book.by_refresh("R2!y", 1601, 3600) == (chain, True)
    assert book.by_refresh("R1!x", 1601, 3600) == (chain, False)
    assert book.by_refresh("R1!x", 1600 + 3601, 3600) == (None, False)
    assert book.by_refresh("never", 1601, 3600) == (None, False)
    assert book.by_access("A1") is chain and book.by_access("A2") is chain


def test_token_calls_are_counted_per_utc_day():
    book = ChainBook(Sealer(None))
    key = ("app", "user")
    day = 86400 * 20000
    for _ in range(3):
        book.count_call(key, day + 10)
    assert book.calls_today(key, day + 86399) == 3
    assert book.calls_today(key, day + 86400) == 0
    book.count_call(key, day + 86400)
    assert book.calls_today(key, day + 86401) == 1


def test_records_seal_tokens_and_round_trip():
    sealer = Sealer(new_key().encode())
    book = ChainBook(sealer)
    chain = _chain()
    chain.access_token, chain.refresh_token = "access-token-A1", "refresh-token-R1"
    chain.client_secret = "client-secret-s3cret"
    rec = book.record(chain)
    text = repr(rec)
    # Fernet ciphertext is urlsafe base64 and can never contain "-token-" or "-secret-".
    assert "access-token" not in text and "refresh-token" not in text and "client-secret" not in text
    assert book.load_record(rec) == chain
    with pytest.raises(SealError):
        ChainBook(Sealer(new_key().encode())).load_record(rec)
    with pytest.raises(SealError):
        ChainBook(Sealer(None)).load_record(rec)


def test_plain_records_when_no_key():
    book = ChainBook(Sealer(None))
    rec = book.record(_chain())
    assert rec["refresh_token"] == "plain:R1!x"
    assert book.load_record(rec).refresh_token == "R1!x"


def test_fingerprint_is_one_way_and_stable():
    assert fingerprint("R1!x") == fingerprint("R1!x") != fingerprint("R1!y")
    assert "R1" not in fingerprint("R1!x")


def test_bad_key_is_refused_clearly():
    with pytest.raises(SealError, match="not a valid key"):
        Sealer(b"short")
