"""Who may read the admin endpoints (``/_proxy/*``, ``/metrics``): a loopback peer that names this
machine in ``Host``.

Contract
- ``refusal(request, policy)`` is None when the admin endpoints may answer, else the reason for a 403.
- ``admin.allow_remote: true``: anyone, by any name (the setting's meaning is unchanged).
- Otherwise both must hold:
  - the peer is a loopback address (127.0.0.0/8, ::1, and ``::ffff:127.x.x.x``, the IPv4 loopback seen
    through an IPv6 socket); a transport without a peer address (a unix socket, a closed connection) is
    refused, since nothing says it is local;
  - the ``Host`` header names this machine: ``localhost``, a loopback address (``127.0.0.1``,
    ``[::1]``, …), with or without a port, or the host of a listener's ``public_base_url``. A web page
    that points its own DNS name at 127.0.0.1 (DNS rebinding) reaches a loopback listener from a
    loopback peer, but its requests carry its own name, and are refused. A missing or malformed
    ``Host`` is refused.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

ALLOW_REMOTE = "(policies.yaml: admin.allow_remote)"


def loopback_address(text: str) -> bool:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def host_of(value: str) -> tuple[str, bool] | None:
    """(host, was an IP literal in brackets) of a ``Host`` value, lower case, without port or final
    dot; None when it is not ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:] if end > 0 else None
        if rest is None or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        return value[1:end], True
    host, sep, port = value.partition(":")
    if sep and not port.isdigit():
        return None
    host = host.rstrip(".")
    return (host, False) if host else None


def _names_this_machine(value: str | None, policy) -> bool:
    parsed = host_of(value) if value else None
    if parsed is None:
        return False
    host, bracketed = parsed
    if loopback_address(host):
        return True
    if bracketed:
        return False
    if host == "localhost":
        return True
    return any(urlsplit(lst.public_base_url).hostname == host
               for lst in policy.listeners if lst.public_base_url)


def refusal(request: web.BaseRequest, policy) -> str | None:
    if policy.admin.allow_remote:
        return None
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not peer or not isinstance(peer, tuple):
        return ("admin endpoints answer loopback clients only, and this connection has no peer address "
                + ALLOW_REMOTE)
    if not loopback_address(str(peer[0])):
        return f"admin endpoints answer loopback clients only {ALLOW_REMOTE}"
    host = request.headers.get("Host")
    if not _names_this_machine(host, policy):
        return (f"admin endpoints answer requests whose Host names this machine (localhost, 127.0.0.1, "
                f"[::1] or a listener's public_base_url), not {(host or '')[:80]!r}: a web page must not "
                f"reach them by pointing its own name at 127.0.0.1 {ALLOW_REMOTE}")
    return None
