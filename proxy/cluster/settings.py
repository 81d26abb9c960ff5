"""The ``cluster:`` section of policies.yaml: where the shared state lives and who this node is.

Contract: ``read_cluster(reader)`` returns ``ClusterSettings``; ``redis_url`` None means single-node
mode (the embedded SQLite store, nothing to install). The URL may also come from ``--redis-url`` or
``EXACT_PROXY_REDIS_URL`` (``with_url``), which win over the file. The node's name is ``node``, else
``EXACT_PROXY_NODE``, else hostname:pid. A password never sits in the file:
``password_env`` names the environment variable that holds it (default ``EXACT_PROXY_REDIS_PASSWORD``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from proxy.policy.reader import Reader

URL_ENV = "EXACT_PROXY_REDIS_URL"
NODE_ENV = "EXACT_PROXY_NODE"
SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix")


class ClusterError(Exception):
    """Cluster mode cannot start as configured (said at start, with the reason)."""


@dataclass(frozen=True)
class ClusterSettings:
    redis_url: str | None = None
    node: str = ""                   # empty: hostname:pid
    key_prefix: str = "xp"
    timeout_ms: int = 250            # per call on the request path
    pool_size: int = 32
    token_lease: float = 60.0        # seconds a node may hold a chain's refresh lease
    password_env: str = "EXACT_PROXY_REDIS_PASSWORD"

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)

    @property
    def node_name(self) -> str:
        return self.node or os.environ.get(NODE_ENV) or f"{socket.gethostname()}:{os.getpid()}"

    def with_url(self, url: str | None) -> ClusterSettings:
        return replace(self, redis_url=url) if url else self

    def password(self) -> str | None:
        return os.environ.get(self.password_env) or None

    def safe_url(self) -> str:
        """The URL without a password, for the log and the status page."""
        if not self.redis_url:
            return ""
        p = urlsplit(self.redis_url)
        host = p.hostname or ""
        if p.port:
            host += f":{p.port}"
        user = f"{p.username}@" if p.username else ""
        return f"{p.scheme}://{user}{host}{p.path}"


def url_problem(url: str) -> str | None:
    p = urlsplit(url)
    if p.scheme not in SCHEMES:
        return f"must be a redis://, rediss:// or unix:// URL, got {url!r}"
    if p.scheme != "unix" and not p.hostname:
        return f"names no host: {url!r}"
    if p.password:
        return "must not hold a password: put it in the environment variable named by password_env"
    return None


def read_cluster(r: Reader) -> ClusterSettings:
    d = ClusterSettings()
    url = r.text("redis_url", None)
    s = ClusterSettings(
        redis_url=url,
        node=r.text("node", ""),
        key_prefix=r.text("key_prefix", d.key_prefix),
        timeout_ms=r.integer("timeout_ms", d.timeout_ms, minimum=10, maximum=10000),
        pool_size=r.integer("pool_size", d.pool_size, minimum=2, maximum=1000),
        token_lease=r.number("token_lease", d.token_lease, minimum=35.0, maximum=600.0),
        password_env=r.text("password_env", d.password_env),
    )
    r.finish()
    if url is not None:
        why = url_problem(url)
        if why:
            r.problem(("redis_url",), why)
    if not s.key_prefix or any(c in s.key_prefix for c in " {}"):
        r.problem(("key_prefix",), "must be a short name without spaces or braces, like xp")
    return s
