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


def _connection_tokens(headers: CIMultiDictProxy | CIMultiDict) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _copy(headers, drop: set[str]) -> CIMultiDict:
    out: CIMultiDict = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or low in drop or low.startswith("proxy-"):
            continue
        out.add(name, value)
    return out


def _add_via(out: CIMultiDict) -> None:
    existing = out.getall("Via", [])
    out.popall("Via", None)
    out["Via"] = ", ".join([*existing, VIA])


def to_upstream(headers, host: str) -> CIMultiDict:
    out = _copy(headers, _connection_tokens(headers) | {"host", "content-length", "expect"})
    out["Host"] = host
    _add_via(out)
    return out


def to_client(headers) -> CIMultiDict:
    out = _copy(headers, _connection_tokens(headers))
    _add_via(out)
    return out
