"""policies.yaml: what the proxy may do, as one immutable snapshot.

Contract
- ``load_policy(path)`` reads and validates the file and returns a frozen ``Policy``. Any problem raises
  ``PolicyError`` listing every problem with file, line, key and reason; nothing half-valid is returned.
- ``Policy.defaults()`` is the policy of an empty file (``{}``). An empty or whitespace-only file is
  refused: a truncated file must never silently become "all defaults".
- A request takes one snapshot (``ctx.policy``) and keeps it, so a reload never changes the rules of a
  request in flight. Reloading is ``proxy.policy.watch``'s job.

Each section is read by one function beside its settings: ``policy.sections`` for the small ones,
``policy.hosts`` for upstreams and listeners, ``http.client_settings``, ``limits.settings``,
``errorbudget.settings``, ``tokens.settings``, ``cluster.settings``, ``ops.usage_settings``,
``reuse.settings``; later features add a section and a field, nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TypeVar

from proxy.cluster.settings import ClusterSettings, read_cluster
from proxy.errorbudget.settings import ErrorBudgetSettings, read_error_budget
from proxy.exact.client_id import normal_client_id
from proxy.http.client_settings import ClientSettings, read_clients
from proxy.limits.settings import LimitSettings, RetrySettings, read_limits, read_retry
from proxy.ops.usage_settings import UsageSettings, read_usage
from proxy.policy.hosts import KNOWN_EXACT_HOSTS, Listener, Upstream, read_listeners, read_upstreams
from proxy.policy.reader import PolicyError, Problem, Reader, parse
from proxy.policy.sections import (
    AdminSettings,
    CASettings,
    Forwarding,
    ForwardProxySettings,
    LinkSettings,
    LogSettings,
    MandatoryFilterSettings,
    StateSettings,
    read_ca,
    read_forward_proxy,
    read_forwarding,
    read_links,
    read_log,
    read_mandatory,
    read_state,
)
from proxy.reuse.settings import CacheSettings, CoalesceSettings, read_cache, read_coalesce
from proxy.tokens.settings import TokenSettings, read_tokens

__all__ = ["KNOWN_EXACT_HOSTS", "Listener", "Policy", "PolicyError", "Upstream", "load_policy", "parse_policy"]


_P = TypeVar("_P", str, "str | None")  # a file name, or an optional one


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
    cluster: ClusterSettings = ClusterSettings()
    usage: UsageSettings = UsageSettings()
    coalesce: CoalesceSettings = CoalesceSettings()
    cache: CacheSettings = CacheSettings()
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
    forwarding = read_forwarding(r.mapping("forwarding"))
    clients = read_clients(r.mapping("clients"))
    log = read_log(r.mapping("log"))
    state = read_state(r.mapping("state"))
    reload_interval = r.number("reload_interval", 1.0, minimum=0.05)
    links = read_links(r.mapping("links"))
    mandatory = read_mandatory(r.mapping("mandatory_filters"))
    tokens = read_tokens(r.mapping("tokens"))
    error_budget = read_error_budget(r.mapping("error_budget"))
    limits = read_limits(r.mapping("limits"))
    retry = read_retry(r.mapping("retry"))
    admin_r = r.mapping("admin")
    admin = AdminSettings(allow_remote=admin_r.boolean("allow_remote", False))
    admin_r.finish()
    ca, forward_proxy = read_ca(r.mapping("ca")), read_forward_proxy(r.mapping("forward_proxy"))
    cluster = read_cluster(r.mapping("cluster"))
    usage = read_usage(r.mapping("usage"))
    coalesce, cache = read_coalesce(r.mapping("coalesce")), read_cache(r)
    r.finish()
    if problems:
        raise PolicyError(problems)
    return Policy(source=filename, default_app=default_app, listeners=listeners, upstreams=upstreams,
                  forwarding=forwarding, clients=clients, log=log, state=state,
                  reload_interval=reload_interval, links=links, mandatory_filters=mandatory, tokens=tokens,
                  admin=admin, error_budget=error_budget, limits=limits, retry=retry, ca=ca,
                  forward_proxy=forward_proxy, cluster=cluster, usage=usage,
                  coalesce=coalesce, cache=cache)


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
