"""Token chains for filter tests: a real ``Chain`` put in the real broker's ``ChainBook``."""

from __future__ import annotations

from typing import Any

from proxy.tokens.chains import Chain, new_chain_id
from proxy.tokens.sealing import fingerprint

APP = "b81cc4de-d192-400e-bcb4-09254394c52a"
SECRET = "app-secret"


def add_chain(
    services: Any,
    *,
    client_id: str = APP,
    secret: str | None = SECRET,
    access_token: str = "acc-1",
    refresh_token: str = "Gcp7!IAAArefresh-1",
    expires_in: float = 600.0,
    age: float = 0.0,
    **fields: Any,
) -> Chain:
    """A chain whose current token was issued ``age`` seconds ago (on the services' clock) and lives
    ``expires_in`` seconds from then; ``fields`` set any other ``Chain`` field."""
    now = services.clock.time()
    issued = now - age
    chain = Chain(
        id=new_chain_id(),
        client_id=client_id,
        upstream="exact",
        access_token=access_token,
        access_expires_at=issued + expires_in,
        refresh_token=refresh_token,
        issued_at=issued,
        refresh_issued_at=issued,
        client_secret=secret,
        secret_fp=fingerprint(secret) if secret else None,
        last_used_at=issued,
        user="user-1",
    )
    for name, value in fields.items():
        setattr(chain, name, value)
    services.tokens.book.add(chain)
    return chain
