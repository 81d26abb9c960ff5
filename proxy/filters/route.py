"""Filter ``route``: pick the configured Exact host for this request, or refuse it.

Contract
- ``CONNECT`` is refused with 405: nothing is tunnelled.
- An absolute-form request (``GET https://start.exactonline.be/api/… HTTP/1.1``, as sent to an
  ``HTTP_PROXY``) names a host and a port (its scheme's default when none is written), and goes to the
  configured upstream with that host when the port is the upstream's too (that of its ``base_url``, or
  that scheme's default), as for ``CONNECT`` (``tls.intercept.decide``). Both at their scheme's default
  port is the same endpoint: ``http://start.exactonline.nl/…`` (a tool with a plain-HTTP base URL and
  ``HTTP_PROXY``) goes to ``https://start.exactonline.nl``, but ``…exactonline.nl:8443`` does not. Any
  other host, the upstream's host on another port, or a target with user information gets 403 and
  nothing is forwarded; a port that is not a number from 1 to 65535 gets 400. The target is rewritten
  to origin-form.
- Otherwise a ``Host`` header naming a configured Exact host selects that upstream; anything else (such
  as ``localhost:8080``) goes to the listener's upstream.
- A target that is not a path (``*``) gets 400.
The proxy therefore never forwards to a host that is not in ``upstreams`` of the policy.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from proxy.context import Context, Reply
from proxy.errors import exact_error

if TYPE_CHECKING:
    from proxy.services import Services

_DEFAULT_PORT = {"http": 80, "https": 443}


@functools.lru_cache(maxsize=64)
def _upstream_port(base_url: str) -> tuple[int, bool]:
    """The port of an upstream's ``base_url``, and whether it is its scheme's default."""
    parts = urlsplit(base_url)
    default = _DEFAULT_PORT[parts.scheme]
    port = parts.port or default
    return port, port == default


class Route:
    name = "route"

    def __init__(self, services: Services) -> None:
        self.services = services

    def before(self, ctx: Context) -> Reply | None:
        policy = ctx.policy
        if ctx.method == "CONNECT":
            ctx.decide("refused (CONNECT)")
            return exact_error(405, f"CONNECT {ctx.raw_path} refused: exact-proxy is not a tunnel; point the "
                               "tool's base URL at this proxy instead", {"Allow": "GET, HEAD, POST, PUT, "
                               "DELETE, PATCH, OPTIONS", "Connection": "close"})
        target = ctx.raw_path
        if target[:8].lower().startswith(("http://", "https://")):
            parts = urlsplit(target)
            try:
                port = parts.port
            except ValueError:
                port = 0
            if port is None:
                port = _DEFAULT_PORT[parts.scheme]
            if not port:
                ctx.decide("refused (bad target)")
                return exact_error(400, f"request target {target[:80]!r} has a port that is not a number "
                                   "from 1 to 65535")
            host = parts.hostname
            upstream = (policy.upstream_for_authority(host)
                        if host and "@" not in parts.netloc else None)
            if upstream is None:
                ctx.decide("refused (not an Exact host)")
                return exact_error(403, f"refused to forward to {host or target!r}: it is not "
                                   "a configured Exact Online host (see upstreams in policies.yaml)")
            up_port, up_default = _upstream_port(upstream.base_url)
            if port != up_port and not (up_default and port == _DEFAULT_PORT[parts.scheme]):
                ctx.decide("refused (not the upstream's port)")
                return exact_error(403, f"refused to forward to {host}:{port}: the configured Exact Online "
                                   f"host is {upstream.base_url} (port {up_port}); see upstreams in "
                                   "policies.yaml")
            ctx.upstream = upstream
            ctx.absolute_form = True
            ctx.raw_path = parts.path or "/"
            return None
        if not target.startswith("/"):
            ctx.decide("refused (bad target)")
            return exact_error(400, f"request target {target[:80]!r} is not a path")
        host = ctx.request.headers.get("Host", "")
        upstream = policy.upstream_for_authority(host) if host else None
        if upstream is None or not upstream.is_known_exact_host:
            upstream = policy.upstreams.get(ctx.listener.upstream)
        if upstream is None:
            return exact_error(502, f"listener {ctx.listener.name!r} names no configured upstream")
        ctx.upstream = upstream
        return None
