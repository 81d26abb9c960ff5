"""Tokens at rest: sealed with a key from the environment, or kept plain in an owner-only file.

Contract
- ``Sealer.from_env()`` reads ``EXACT_PROXY_TOKEN_KEY`` (a Fernet key: 32 url-safe base64 bytes, made
  with ``exact-proxy token-key``). With a key, ``seal`` encrypts and authenticates (Fernet: AES-128-CBC
  + HMAC-SHA256, from the ``cryptography`` package); ``open`` refuses anything altered or sealed with
  another key (``SealError``). Without a key, values are stored as they are, marked ``plain:``; the
  store file is readable by its owner only either way, and the proxy warns once at start.
- ``fingerprint(token)`` is a short one-way hash used to recognise earlier refresh tokens without
  keeping them.
"""

from __future__ import annotations

import hashlib
import os

ENV = "EXACT_PROXY_TOKEN_KEY"


class SealError(Exception):
    pass


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


class Sealer:
    def __init__(self, key: bytes | None) -> None:
        self._fernet = None
        if key:
            from cryptography.fernet import Fernet

            try:
                self._fernet = Fernet(key)
            except (ValueError, TypeError) as exc:
                raise SealError(f"{ENV} is not a valid key ({exc}); make one with: exact-proxy token-key") from None

    @classmethod
    def from_env(cls) -> Sealer:
        key = os.environ.get(ENV, "").strip()
        return cls(key.encode() if key else None)

    @property
    def encrypting(self) -> bool:
        return self._fernet is not None

    def seal(self, value: str | None) -> str | None:
        if value is None:
            return None
        if self._fernet is None:
            return "plain:" + value
        return "fernet:" + self._fernet.encrypt(value.encode()).decode()

    def open(self, stored: str | None) -> str | None:
        if stored is None:
            return None
        if stored.startswith("plain:"):
            return stored[6:]
        if stored.startswith("fernet:"):
            if self._fernet is None:
                raise SealError(f"tokens in the store are encrypted; set {ENV} to the key used to seal them")
            from cryptography.fernet import InvalidToken

            try:
                return self._fernet.decrypt(stored[7:].encode()).decode()
            except InvalidToken:
                raise SealError(f"a stored token does not open with {ENV}: wrong key or altered") from None
        raise SealError("unknown token format in the store")


def new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
