"""policies.yaml: what the proxy may do, as one immutable snapshot.

Contract
- ``load_policy(path)`` reads and validates the file and returns a frozen ``Policy``. Any problem raises
  ``PolicyError`` listing every problem with file, line, key and reason; nothing half-valid is returned.
- ``Policy.defaults()`` is the policy of an empty file (``{}``). An empty or whitespace-only file is
  refused: a truncated file must never silently become "all defaults".
- A request takes one snapshot (``ctx.policy``) and keeps it, so a reload never changes the rules of a
  request in flight. Reloading is ``policy_watch``'s job.

Each section is read by one function: below, or beside its settings (``hosts`` for upstreams and
listeners, ``client_settings``, ``limits.settings``, ``errorbudget.settings``); later features add a
section and a field, nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from proxy.errorbudget.settings import ErrorBudgetSettings, read_error_budget
from proxy.exact.client_id import normal_client_id
from proxy.exact.mandatory import DEFAULT_FILTER
from proxy.http.client_settings import ClientSettings, read_clients
from proxy.limits.settings import LimitSettings, RetrySettings, read_limits, read_retry
from proxy.policy.hosts import KNOWN_EXACT_HOSTS, Listener, Upstream, read_listeners, read_upstreams
from proxy.policy.matching import Match, read_match
from proxy.policy.reader import PolicyError, Problem, Reader, parse
from proxy.tokens.settings import TokenSettings, read_tokens

__all__ = ["KNOWN_EXACT_HOSTS", "Listener", "Policy", "PolicyError", "Upstream", "load_policy", "parse_policy"]


_P = TypeVar("_P", str, "str | None")  # a file name, or an optional one


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


@dataclass(frozen=True)
class Policy:
    source: str = "<defaults>"
    default_app: str | None = None       # the app of unknown tokens when neither listener nor chains say
    listeners: tuple[Listener, ...] = (Listener(name="default"),)
    upstreams: dict[str, Upstream] = field(default_factory=lambda: {
        "nl": Upstream("nl", "https://start.exactonline.nl")})
    forwarding: Forwarding = Forwarding()
    clients: ClientSettings = ClientSettings()
    log: LogSettings = LogSettings()
    state: StateSettings = StateSettings()
    reload_interval: float = 1.0
    links: LinkSettings = LinkSettings()
    mandatory_filters: MandatoryFilterSettings = MandatoryFilterSettings()
    tokens: TokenSettings = TokenSettings()
    admin: AdminSettings = AdminSettings()
    error_budget: ErrorBudgetSettings = ErrorBudgetSettings()
    limits: LimitSettings = LimitSettings()
    retry: RetrySettings = RetrySettings()
    ca: CASettings = CASettings()
    forward_proxy: ForwardProxySettings = ForwardProxySettings()
    # answers of upstream_for_authority, per Host value seen (a policy object never changes)
    _by_authority: dict[str, Upstream | None] = field(default_factory=dict, init=False, repr=False,
                                                      compare=False)

    @classmethod
    def defaults(cls) -> Policy:
        return parse_policy("{}", "<defaults>")

    def upstream_for_authority(self, authority: str) -> Upstream | None:
        """The configured upstream whose host (and port, when given) matches ``authority``."""
        try:
            return self._by_authority[authority]
        except KeyError:
            pass
        found = self._find_upstream(authority)
        if len(self._by_authority) < 1024:  # Host values come from clients: keep the cache bounded
            self._by_authority[authority] = found
        return found

    def _find_upstream(self, authority: str) -> Upstream | None:
        authority = authority.lower().strip()
        host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
        for up in self.upstreams.values():
            if authority == up.authority or authority == up.host or (host == up.host and up.host):
                return up
        return None


def load_policy(path: str) -> Policy:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise PolicyError([Problem(path, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([Problem(path, None, "", f"cannot read: {exc}")]) from None
    policy = parse_policy(text, path)
    base = os.path.dirname(os.path.abspath(path))
    return _resolve_paths(policy, base)


def parse_policy(text: str, filename: str) -> Policy:
    if not text.strip():
        raise PolicyError([Problem(filename, 1, "", "the file is empty (truncated?); write '{}' to use "
                                   "every default")])
    data, lines = parse(text, filename)
    problems: list[Problem] = []
    r = Reader(data, (), lines, filename, problems)
    default_app = normal_client_id(r.text("default_app", None)) or None
    upstreams = read_upstreams(r)
    listeners = read_listeners(r, upstreams)
    forwarding = _read_forwarding(r.mapping("forwarding"))
    clients = read_clients(r.mapping("clients"))
    log = _read_log(r.mapping("log"))
    state = _read_state(r.mapping("state"))
    reload_interval = r.number("reload_interval", 1.0, minimum=0.05)
    links = _read_links(r.mapping("links"))
    mandatory = _read_mandatory(r.mapping("mandatory_filters"))
    tokens = read_tokens(r.mapping("tokens"))
    error_budget = read_error_budget(r.mapping("error_budget"))
    limits = read_limits(r.mapping("limits"))
    retry = read_retry(r.mapping("retry"))
    admin_r = r.mapping("admin")
    admin = AdminSettings(allow_remote=admin_r.boolean("allow_remote", False))
    admin_r.finish()
    ca, forward_proxy = _read_ca(r.mapping("ca")), _read_forward_proxy(r.mapping("forward_proxy"))
    r.finish()
    if problems:
        raise PolicyError(problems)
    return Policy(source=filename, default_app=default_app, listeners=listeners, upstreams=upstreams,
                  forwarding=forwarding, clients=clients, log=log, state=state,
                  reload_interval=reload_interval, links=links, mandatory_filters=mandatory, tokens=tokens,
                  admin=admin, error_budget=error_budget, limits=limits, retry=retry, ca=ca,
                  forward_proxy=forward_proxy)


def _read_ca(r: Reader) -> CASettings:
    s = CASettings(dir=r.text("dir", CASettings.dir))
    r.finish()
    return s


def _read_forward_proxy(r: Reader) -> ForwardProxySettings:
    intercept = r.boolean("intercept", True)
    hosts = r.strings("tunnel_hosts", ())
    r.finish()
    for i, h in enumerate(hosts):
        host, _, port = h.rpartition(":") if h.count(":") == 1 else (h, "", "")
        if not host or (port and not port.isdigit()) or "/" in h or "*" in h:
            r.problem(("tunnel_hosts", i), f"must be a host name or host:port (no wildcards), got {h!r}")
    return ForwardProxySettings(intercept=intercept, tunnel_hosts=tuple(h.lower() for h in hosts))


def _read_mandatory(r: Reader) -> MandatoryFilterSettings:
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


def _read_links(r: Reader) -> LinkSettings:
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


def _read_forwarding(r: Reader) -> Forwarding:
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


def _read_log(r: Reader) -> LogSettings:
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


def _read_state(r: Reader) -> StateSettings:
    d = StateSettings()
    s = StateSettings(
        path=r.text("path", d.path),
        flush_interval=r.number("flush_interval", d.flush_interval, minimum=0.01, maximum=60),
    )
    r.finish()
    return s


def _resolve_paths(policy: Policy, base: str) -> Policy:
    """Relative file names in the policy are relative to the policy file's directory."""
    from dataclasses import replace

    def resolve(p: _P) -> _P:
        if p is None or p == ":memory:" or "://" in p or os.path.isabs(p):
            return p
        return os.path.join(base, p)

    ups = {n: replace(u, ca_bundle=resolve(u.ca_bundle)) for n, u in policy.upstreams.items()}
    listeners = tuple(replace(lst, cert_file=resolve(lst.cert_file), key_file=resolve(lst.key_file))
                      for lst in policy.listeners)
    return replace(policy, upstreams=ups, log=replace(policy.log, file=resolve(policy.log.file)),
                   state=replace(policy.state, path=resolve(policy.state.path)), listeners=listeners,
                   ca=replace(policy.ca, dir=resolve(policy.ca.dir)))
