"""Server-side TLS contexts: the HTTPS listeners and the intercepted ``CONNECT`` tunnels.

Contract
- ``ServerContexts(policy_getter, clock)`` owns the local CA (loaded from ``ca.dir`` of the current
  policy on first use, again when that directory changes) and one ``ssl.SSLContext`` per set of names.
  ``ca()`` raises ``CAMissing``/``CAError`` with what to do; nothing here creates a CA.
- ``for_names(names)`` is a server context with a leaf for exactly those names (TLS 1.2 or newer). A leaf
  that the CA renews gives a new context; the old one keeps serving connections already open.
- ``for_listener(listener)`` is the context of an HTTPS listener: the listener's own ``cert_file`` and
  ``key_file`` when given, else a leaf for localhost, 127.0.0.1, ::1 and ``tls_names``. Its SNI callback
  switches to a leaf for the requested name when that name is a configured upstream host (a tool that
  reaches the listener as ``start.exactonline.nl`` through a hosts-file entry).
This module only serves TLS to tools; the connection to Exact is verified elsewhere (``Services.ssl_for``).
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from proxy.clock import Clock
from proxy.tls.ca import Leaf, LocalCA

if TYPE_CHECKING:
    from proxy.policy import Policy

log = logging.getLogger("exact_proxy.tls")

LISTENER_NAMES = ("localhost", "127.0.0.1", "::1")


def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load_leaf(ctx: ssl.SSLContext, leaf: Leaf) -> None:
    """``ssl`` loads certificates from files only: write them to a private directory, load, delete."""
    with tempfile.TemporaryDirectory(prefix="exact-proxy-leaf-") as tmp:
        os.chmod(tmp, 0o700)
        chain, key = os.path.join(tmp, "chain.pem"), os.path.join(tmp, "key.pem")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(leaf.key_pem)
        with open(chain, "wb") as fh:
            fh.write(leaf.chain_pem)
        ctx.load_cert_chain(chain, key)


class ServerContexts:
    def __init__(self, policy: Callable[[], Policy], clock: Clock) -> None:
        self._policy = policy
        self.clock = clock
        self._ca: LocalCA | None = None
        self._contexts: dict[tuple[str, ...], tuple[Leaf, ssl.SSLContext]] = {}

    def ca(self) -> LocalCA:
        directory = self._policy().ca.dir
        if self._ca is None or self._ca.directory != directory:
            self._ca = LocalCA.load(directory, self.clock)
            self._contexts.clear()
            log.info("local CA loaded from %s (SHA-256 %s)", directory, self._ca.fingerprint()[:23])
        return self._ca

    def for_names(self, names: Iterable[str]) -> ssl.SSLContext:
        ca = self.ca()
        leaf = ca.leaf(names)
        cached = self._contexts.get(leaf.names)
        if cached is not None and cached[0] is leaf:
            return cached[1]
        ctx = _server_context()
        _load_leaf(ctx, leaf)
        self._contexts[leaf.names] = (leaf, ctx)
        return ctx

    def for_listener(self, listener) -> ssl.SSLContext:
        if listener.cert_file:
            ctx = _server_context()
            ctx.load_cert_chain(listener.cert_file, listener.key_file)
            return ctx
        names = (*LISTENER_NAMES, *listener.tls_names)
        ctx = _server_context()
        _load_leaf(ctx, self.ca().leaf(names))  # at start: a missing CA fails here, not at a handshake

        def sni(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            # Every handshake picks a current leaf (renewed ones included): the configured upstream
            # host when the tool asked for it by name, else the listener's own names.
            name = (server_name or "").lower().rstrip(".")
            hosts = {u.host for u in self._policy().upstreams.values()}
            try:
                sock.context = self.for_names((name,) if name in hosts else names)
            except Exception as exc:  # keep serving the certificate loaded at start
                log.warning("TLS: no fresh certificate for %r: %s", name or names[0], exc)
            return None

        ctx.sni_callback = sni
        return ctx
