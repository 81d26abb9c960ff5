"""The small sections of policies.yaml, each with its settings and its reader: ``forwarding`` (the
connection to Exact), ``log``, ``admin``, ``ca``, ``forward_proxy``, ``state``, ``links`` and
``mandatory_filters``. Each ``read_*`` takes the section's ``Reader`` and returns its frozen settings,
recording every problem with its line; ``proxy.policy.document`` puts them together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from proxy.exact.mandatory import DEFAULT_FILTER
from proxy.policy.matching import Match, read_match
from proxy.policy.reader import Reader


@dataclass(frozen=True)
class Forwarding:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    total_timeout: float = 120.0
    pool_size: int = 100
    keepalive_timeout: float = 30.0
    max_request_body: int = 40 * 1024 * 1024
    replay_buffer: int = 1024 * 1024
    max_url_length: int = 16384
    drain_timeout: float = 30.0


@dataclass(frozen=True)
class LogSettings:
    format: str = "text"
    file: str | None = None
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5
    level: str = "info"


@dataclass(frozen=True)
class AdminSettings:
    """``/_proxy/*`` and ``/metrics``: answered to loopback clients only, unless ``allow_remote``."""
    allow_remote: bool = False


@dataclass(frozen=True)
class CASettings:
    """The local certificate authority (``exact-proxy ca init``); relative to the policy file."""
    dir: str = "ca"


@dataclass(frozen=True)
class ForwardProxySettings:
    """``CONNECT`` (tools run with ``HTTPS_PROXY``): intercept configured Exact hosts; tunnel blind only
    the hosts listed; refuse everything else."""
    intercept: bool = True
    tunnel_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class StateSettings:
    path: str = "exact-proxy.sqlite"
    flush_interval: float = 1.0


@dataclass(frozen=True)
class LinkRule:
    match: Match
    rewrite: bool = True
    base_url: str | None = None


@dataclass(frozen=True)
class LinkSettings:
    """Rewriting of Exact's absolute links (``__next``, ``__metadata.uri``, Atom links, Location)."""

    rewrite: bool = True
    rules: tuple[LinkRule, ...] = ()

    def resolve(self, listener: str, headers) -> tuple[bool, str | None]:
        """(rewrite?, base URL or None for "from the request's Host") for one request."""
        for rule in self.rules:
            if rule.match.matches(listener, headers):
                return rule.rewrite, rule.base_url
        return self.rewrite, None


@dataclass(frozen=True)
class MandatoryFilterSettings:
    """Endpoints where Exact demands a ``$filter``: the filter to add to an unfiltered GET."""

    endpoints: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MANDATORY))
    learn: bool = True


DEFAULT_MANDATORY: dict[str, str] = {e: DEFAULT_FILTER for e in (
    "crm/accounts", "bulk/crm/accounts", "logistics/items", "bulk/logistics/items")}


def read_ca(r: Reader) -> CASettings:
    s = CASettings(dir=r.text("dir", CASettings.dir))
    r.finish()
    return s


def read_forward_proxy(r: Reader) -> ForwardProxySettings:
    intercept = r.boolean("intercept", True)
    hosts = r.strings("tunnel_hosts", ())
    r.finish()
    for i, h in enumerate(hosts):
        host, _, port = h.rpartition(":") if h.count(":") == 1 else (h, "", "")
        if not host or (port and not port.isdigit()) or "/" in h or "*" in h:
            r.problem(("tunnel_hosts", i), f"must be a host name or host:port (no wildcards), got {h!r}")
    return ForwardProxySettings(intercept=intercept, tunnel_hosts=tuple(h.lower() for h in hosts))


def read_mandatory(r: Reader) -> MandatoryFilterSettings:
    learn = r.boolean("learn", True)
    r.seen.add("endpoints")
    raw = r.data.get("endpoints")
    endpoints = dict(DEFAULT_MANDATORY)
    if raw is not None:
        endpoints = {}
        if not isinstance(raw, dict):
            r.problem(("endpoints",), "must map endpoint keys (like crm/accounts) to a $filter, or to "
                      "'default'")
            raw = {}
        for key, expr in raw.items():
            if expr is None or expr == "default":
                expr = DEFAULT_FILTER
            if not isinstance(expr, str) or not expr.strip():
                r.problem(("endpoints", key), f"must be a $filter expression or 'default', got {expr!r}")
                continue
            if key != key.lower() or key.startswith("/") or " " in key:
                r.problem(("endpoints", key), "must be an endpoint key: lower case, no leading slash, like "
                          "crm/accounts or bulk/logistics/items")
                continue
            endpoints[key] = expr.strip()
    r.finish()
    return MandatoryFilterSettings(endpoints=endpoints, learn=learn)


def read_links(r: Reader) -> LinkSettings:
    rewrite = r.boolean("rewrite", True)
    rules: list[LinkRule] = []
    for rr in r.sequence("rules") or []:
        match = read_match(rr.mapping("match"))
        rule_rewrite = rr.boolean("rewrite", True)
        base = rr.text("base_url", None)
        rr.finish()
        if base is not None:
            p = urlsplit(base)
            if p.scheme not in ("http", "https") or not p.netloc or p.path not in ("", "/"):
                rr.problem(("base_url",), f"must be scheme and host, like http://localhost:8080, got {base!r}")
            base = base.rstrip("/")
        rules.append(LinkRule(match=match, rewrite=rule_rewrite, base_url=base))
    r.finish()
    return LinkSettings(rewrite=rewrite, rules=tuple(rules))


def read_forwarding(r: Reader) -> Forwarding:
    d = Forwarding()
    f = Forwarding(
        connect_timeout=r.number("connect_timeout", d.connect_timeout, minimum=0.0, exclusive_minimum=True),
        read_timeout=r.number("read_timeout", d.read_timeout, minimum=0.0, exclusive_minimum=True),
        total_timeout=r.number("total_timeout", d.total_timeout, minimum=0.0, exclusive_minimum=True),
        pool_size=r.integer("pool_size", d.pool_size, minimum=1, maximum=10000),
        keepalive_timeout=r.number("keepalive_timeout", d.keepalive_timeout, minimum=0.0),
        max_request_body=r.size("max_request_body", d.max_request_body),
        replay_buffer=r.size("replay_buffer", d.replay_buffer),
        max_url_length=r.integer("max_url_length", d.max_url_length, minimum=1024, maximum=1 << 20),
        drain_timeout=r.number("drain_timeout", d.drain_timeout, minimum=0.0),
    )
    r.finish()
    if f.total_timeout < f.connect_timeout:
        r.problem(("total_timeout",), "must not be shorter than connect_timeout")
    return f


def read_log(r: Reader) -> LogSettings:
    d = LogSettings()
    s = LogSettings(
        format=r.text("format", d.format, choices=("text", "json")),
        file=r.text("file", None),
        max_bytes=r.size("max_bytes", d.max_bytes),
        backups=r.integer("backups", d.backups, minimum=0, maximum=1000),
        level=r.text("level", d.level, choices=("debug", "info", "warning", "error")),
    )
    r.finish()
    return s


def read_state(r: Reader) -> StateSettings:
    d = StateSettings()
    s = StateSettings(
        path=r.text("path", d.path),
        flush_interval=r.number("flush_interval", d.flush_interval, minimum=0.01, maximum=60),
    )
    r.finish()
    return s


