"""Filter ``route``: pick the configured Exact host for this request, or refuse it.

Contract
- ``CONNECT`` is refused with 405: nothing is tunnelled.
- An absolute-form request (``GET https://start.exactonline.be/api/… HTTP/1.1``, as sent to an
  ``HTTP_PROXY``) goes to the configured upstream with that host; any other host gets 403 and nothing is
  forwarded. Its target is rewritten to origin-form.
- Otherwise a ``Host`` header naming a configured Exact host selects that upstream; anything else (such
  as ``localhost:8080``) goes to the listener's upstream.
- A target that is not a path (``*``) gets 400.
The proxy therefore never forwards to a host that is not in ``upstreams`` of the policy.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import exact_error


class Route:
    name = "route"

    def __init__(self, services) -> None:
        self.services = services

    def before(self, ctx):
        policy = ctx.policy
        if ctx.method == "CONNECT":
            ctx.decide("refused (CONNECT)")
            return exact_error(405, f"CONNECT {ctx.raw_path} refused: exact-proxy is not a tunnel; point the "
                               "tool's base URL at this proxy instead", {"Allow": "GET, HEAD, POST, PUT, "
                               "DELETE, PATCH, OPTIONS", "Connection": "close"})
        target = ctx.raw_path
        if target[:8].lower().startswith(("http://", "https://")):
            parts = urlsplit(target)
            upstream = policy.upstream_for_authority(parts.netloc) if parts.netloc else None
            if upstream is None:
                ctx.decide("refused (not an Exact host)")
                return exact_error(403, f"refused to forward to {parts.hostname or target!r}: it is not "
                                   "a configured Exact Online host (see upstreams in policies.yaml)")
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
