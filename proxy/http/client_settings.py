"""The ``clients:`` section of policies.yaml: how long and how many connections from tools may stay.

Contract
- ``ClientSettings`` holds the deadlines that keep slow or idle clients from holding the proxy, and the
  number of connections one listener holds at most. Read per connection (a reload applies to new
  connections): ``proxy.http.client_timeouts`` (head, idle), ``proxy.http.body`` (body), ``proxy.http.connection_cap``.
- ``read_clients(r)`` reads the section with a ``policy.reader.Reader``, recording every problem (file,
  line, key, reason) on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.reader import Reader


@dataclass(frozen=True)
class ClientSettings:
    head_timeout: float = 20.0      # seconds from a request's first byte to the end of its head
    body_timeout: float = 20.0      # seconds the proxy waits for the next piece of a body it is reading
    body_min_rate: int = 500        # bytes a second a body must average while the proxy waits (0: off)
    idle_timeout: float = 75.0      # seconds a connection may sit idle before (and between) requests
    max_connections: int = 1024     # open connections per listener; beyond it a 503 with Retry-After


def read_clients(r: Reader) -> ClientSettings:
    d = ClientSettings()
    s = ClientSettings(
        head_timeout=r.number("head_timeout", d.head_timeout, minimum=0.0, exclusive_minimum=True),
        body_timeout=r.number("body_timeout", d.body_timeout, minimum=0.0, exclusive_minimum=True),
        body_min_rate=r.size("body_min_rate", d.body_min_rate),
        idle_timeout=r.number("idle_timeout", d.idle_timeout, minimum=0.0, exclusive_minimum=True),
        max_connections=r.integer("max_connections", d.max_connections, minimum=1, maximum=1_000_000),
    )
    r.finish()
    return s
