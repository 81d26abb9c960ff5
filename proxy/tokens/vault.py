"""Token chains at rest: loaded at start, sealed, written after every change.

Contract: ``ChainVault(services, book, sealer)``.
- ``await load()`` reads every chain and the day's token-call counts from the store into the book;
  a chain that cannot be opened is logged and skipped (it never stops the proxy). Client ids are
  brought to their normal form. With ``EXACT_PROXY_TOKEN_KEY`` set, chains stored in plain text are
  sealed at once and the log says how many; without a key, a WARNING says tokens are stored plain.
  Every token and secret read is registered with ``redact.remember_secret``.
- ``save(chain)`` queues the chain's record; ``await save_now(chain)`` writes it at once (after a
  rotation: a lost rotation is a lost chain); ``count(key)`` counts one upstream token call today.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxy.exact.client_id import normal_client_id
from proxy.ops.redact import remember_secret
from proxy.tokens.chains import COUNTS, NAMESPACE, Chain, ChainBook
from proxy.tokens.sealing import Sealer

if TYPE_CHECKING:
    from proxy.services import Services
    from proxy.store.base import Store

log = logging.getLogger("exact_proxy.tokens")


class ChainVault:
    def __init__(self, services: Services, book: ChainBook, sealer: Sealer) -> None:
        self.services, self.book, self.sealer = services, book, sealer

    @property
    def store(self) -> Store | None:
        return self.services.store

    async def load(self) -> None:
        store = self.store
        if store is None:
            return
        resealed = 0
        for rec in (await store.load(NAMESPACE)).values():
            try:
                chain = self.book.load_record(rec)
            except Exception as exc:  # a chain we cannot open must not stop the proxy
                log.error("a stored token chain cannot be read and is ignored: %s", exc)
                continue
            for secret in (chain.access_token, chain.refresh_token, chain.client_secret):
                remember_secret(secret)
            normal = normal_client_id(chain.client_id)
            plain = self.sealer.encrypting and any(str(rec.get(n) or "").startswith("plain:") for n in
                                                   ("access_token", "refresh_token", "client_secret"))
            self.book.add(chain)
            if normal != chain.client_id or plain:
                chain.client_id = normal
                self.book.add(chain)
                self.save(chain)
                resealed += plain
        self.book.calls.update({k: v for k, v in (await store.load(COUNTS)).items() if isinstance(v, list)})
        if self.book.chains:
            log.info("token broker: %d chain(s) loaded", len(self.book.chains))
        if resealed:
            await store.flush()
            log.info("token broker: %d chain(s) stored in plain text were sealed with EXACT_PROXY_TOKEN_KEY",
                     resealed)
        if not self.sealer.encrypting:
            log.warning("tokens are stored unencrypted (the state file is readable by its owner only); set "
                        "EXACT_PROXY_TOKEN_KEY to encrypt them (make a key with: exact-proxy token-key)")

    def save(self, chain: Chain) -> None:
        if self.store is not None:
            self.store.put(NAMESPACE, chain.id, self.book.record(chain))

    async def save_now(self, chain: Chain) -> None:
        self.save(chain)
        if self.store is not None:
            await self.store.flush()

    def count(self, chain_key: tuple[str, str]) -> None:
        self.book.count_call(chain_key, self.services.clock.time())
        if self.store is not None:
            name = "|".join(chain_key)
            self.store.put(COUNTS, name, self.book.calls[name])

