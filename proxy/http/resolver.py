"""Upstream ``connect_to``: reach an upstream's host name at another address.

Contract
- ``UpstreamResolver(policy_getter)`` is an aiohttp resolver for the proxy's one upstream session. When
  a name and port being resolved are those of an upstream's ``base_url`` and that upstream has
  ``connect_to: host:port``, the answer is that address; every other name goes to aiohttp's default
  resolver unchanged.
- Only the TCP address changes. The URL, the ``Host`` header, the TLS server name (SNI) and the
  certificate check all keep ``base_url``'s host, so the upstream must still prove it is that host
  (against the system store or the upstream's ``ca_bundle``). Used to put the emulator in place of
  ``start.exactonline.nl`` in tests and demos, or to pin an address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

if TYPE_CHECKING:
    from proxy.policy import Policy


def _target(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class UpstreamResolver(AbstractResolver):
    def __init__(self, policy: Callable[[], Policy]) -> None:
        self._policy = policy
        self._resolver: AbstractResolver | None = None  # created inside the running loop, on first use

    @property
    def _inner(self) -> AbstractResolver:
        if self._resolver is None:
            self._resolver = DefaultResolver()
        return self._resolver

    def _override(self, host: str, port: int) -> tuple[str, int] | None:
        for up in self._policy().upstreams.values():
            if up.connect_to and _target(up.base_url) == (host.lower(), port):
                c_host, _, c_port = up.connect_to.rpartition(":")
                return c_host.strip("[]"), int(c_port)
        return None

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        override = self._override(host, port)
        if override is None:
            return await self._inner.resolve(host, port, family)
        c_host, c_port = override
        try:
            ip = ipaddress.ip_address(c_host)
        except ValueError:
            # aiohttp takes the TLS server name from "hostname": keep it the upstream's
            return [{**r, "hostname": host} for r in await self._inner.resolve(c_host, c_port, family)]
        fam = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        return [ResolveResult(hostname=host, host=str(ip), port=c_port, family=fam, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        if self._resolver is not None:
            await self._resolver.close()
            self._resolver = None
