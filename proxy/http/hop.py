"""Header hygiene for a forwarding proxy (RFC 9110 §7.6.1).

Contract
- ``to_upstream(headers, host)`` copies the client's headers for Exact: hop-by-hop headers (and any
  named in ``Connection``) are dropped, ``Host`` is set to the upstream's, ``Content-Length`` is dropped
  (the sender recomputes it), ``Expect`` is dropped (the proxy reads the body itself), and ``Via`` gains
  ``1.1 exact-proxy``. Everything else passes untouched, repeated headers included: Authorization,
  Accept, Content-Type, Prefer, cookies, custom headers.
- ``to_client(headers)`` does the same for Exact's answer, keeping ``Content-Length``,
  ``Content-Encoding``, ``Set-Cookie`` (every one), ``X-RateLimit-*``, ``Reason``, ``Retry-After``,
  ``Location``.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "TE", "Trailer", "Trailers",
    "Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
))
VIA = "1.1 exact-proxy"


def _drop(headers: CIMultiDictProxy | CIMultiDict, always: frozenset[str]) -> frozenset[str] | set[str]:
    """``always`` plus the headers the sender's ``Connection`` names."""
    return always.union(_connection_tokens(headers)) if "Connection" in headers else always


def _connection_tokens(headers: CIMultiDictProxy | CIMultiDict) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _copy(headers, drop) -> CIMultiDict:
    out = CIMultiDict(headers)  # copied in C, order and repeats kept; then the few to drop go
    for name in {k.lower() for k in headers.keys()}:
        if name in drop or name[:6] == "proxy-":
            del out[name]
    return out


def _add_via(out: CIMultiDict) -> None:
    if "Via" not in out:
        out["Via"] = VIA
        return
    existing = out.getall("Via")
    out.popall("Via", None)
    out["Via"] = ", ".join([*existing, VIA])


_TO_UPSTREAM = HOP_BY_HOP | {"host", "content-length", "expect"}


def to_upstream(headers, host: str) -> CIMultiDict:
    out = _copy(headers, _drop(headers, _TO_UPSTREAM))
    out["Host"] = host
    _add_via(out)
    return out


def to_client(headers) -> CIMultiDict:
    out = _copy(headers, _drop(headers, HOP_BY_HOP))
    _add_via(out)
    return out
