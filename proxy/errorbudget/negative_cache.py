"""The negative cache: what Exact just refused, answered again locally instead of spending an error.

Contract: ``request_key(method, path, query, app, accept)`` normalises a request: method upper case,
path percent-decoded and case-folded, query parameters percent-decoded (``%24select`` = ``$select``,
``guid%27…%27`` = ``guid'…'``) and sorted, plus the app and whether JSON or Atom was asked for.
``put`` remembers (status, body, content type) for ``ttl`` seconds; ``get`` returns it while fresh.
At most ``max_entries`` are kept (oldest dropped first). ``forget_endpoint`` drops every entry of one
(app, division, endpoint) after a write there succeeded (a created record may now exist).
Only GET and HEAD are ever cached or answered; the caller enforces that writes never are.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from proxy.errorbudget.window import Key

# (method, path, sorted query parameters, app, json | atom)
RequestKey = tuple[str, str, tuple[tuple[str, str], ...], str, str]


@dataclass(frozen=True)
class Cached:
    status: int
    body: bytes
    content_type: str | None
    stored_at: float
    group: Key


def request_key(method: str, path: str, query: str, app: str, accept: str) -> RequestKey:
    params = sorted(parse_qsl(query, keep_blank_values=True))  # decodes %XX (and + as space)
    fmt = "json" if "json" in accept.lower() else "atom"
    return (method.upper(), unquote(path).lower(), tuple(params), app, fmt)


class NegativeCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[RequestKey, Cached] = OrderedDict()
        self._groups: Counter[Key] = Counter()  # entries per (app, division, endpoint)

    def has_group(self, group: Key) -> bool:
        """Cheap: lets the caller skip building a request key when nothing of the endpoint is cached."""
        return group in self._groups

    def get(self, key: RequestKey, now: float, ttl: float) -> Cached | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if now - hit.stored_at >= ttl:
            self._drop(key)
            return None
        return hit

    def put(self, key: RequestKey, value: Cached, max_entries: int) -> None:
        if max_entries <= 0:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = value
        self._groups[value.group] += 1
        while len(self._entries) > max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: RequestKey) -> None:
        group = self._entries.pop(key).group
        self._groups[group] -= 1
        if self._groups[group] <= 0:
            del self._groups[group]

    def forget_group(self, group: Key) -> int:
        if group not in self._groups:
            return 0
        gone = [k for k, v in self._entries.items() if v.group == group]
        for k in gone:
            self._drop(k)
        return len(gone)

    def __len__(self) -> int:
        return len(self._entries)
