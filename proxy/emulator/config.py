"""The emulator's settings: Exact Online's rules as defaults, every uncertain point a setting.

Contract: ``EmulatorConfig`` holds every rule the emulator enforces. ``EmulatorConfig.from_dict(d)``
builds one from a mapping (unknown keys refused with their name); ``load_config(path)`` reads YAML and
refuses bad input with the file, the line and the reason. Client ids (the keys of ``clients``, the
``app`` of ``limits`` rules) are kept in their normal form (``identity.normal_client_id``); two keys
that normalise alike with different secrets are refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

from proxy.emulator.identity import normal_client_id


class SettingError(ValueError):
    """A bad setting; ``key`` names the top-level setting at fault (for the line number)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


DEFAULT_MANDATORY = ("crm/accounts", "bulk/crm/accounts", "logistics/items", "bulk/logistics/items")


@dataclass
class EmulatorConfig:
    # clients and users
    clients: dict[str, str] = field(default_factory=lambda: {"test-app": "test-secret",
                                                             "demo-app": "demo-secret"})
    user: str = "user-1"                      # who auto-approves /api/oauth2/auth (override with &user=)
    require_auth: bool = True                 # false: calls without a bearer token count as "anonymous"
    divisions: list[int] = field(default_factory=list)  # empty: every positive division number exists
    public_base_url: str | None = None        # default: the request's scheme and Host
    current_division: int = 7095              # CurrentDivision of current/Me when divisions is empty
    # tokens
    access_token_lifetime: float = 600.0
    min_refresh_interval: float = 570.0
    refresh_token_lifetime: float = 30 * 86400.0
    code_lifetime: float = 180.0
    daily_token_calls: int = 200
    token_daily_limit_status: int = 429       # the answer past it is undocumented
    token_daily_limit_body: bool = True       # OAuth-shaped body on it (false: empty body)
    old_refresh_grace: float = 0.0            # some apps get a short grace period for the old token
    too_early_invalidates: bool = False       # the seed reports that a too-early refresh may kill the token
    too_early_counts_as_error: bool = True
    # call limits
    minutely_limit: int = 60
    daily_limit: int = 5000
    limits: list[dict[str, Any]] = field(default_factory=list)   # [{app?, division?, minutely?, daily?}]
    retry_after_on_429: bool = False
    # the error limit
    error_statuses: list[int] = field(default_factory=lambda: [400, 401, 403, 404])
    error_limit: int = 10                     # more than this many in the window blocks
    error_window: float = 3600.0
    error_block_seconds: float = 3600.0
    error_block_status: int = 429
    error_block_body: str = ""
    # data and OData
    page_size: int = 60
    bulk_page_size: int = 1000
    rows: dict[str, int] = field(default_factory=dict)   # e.g. {"crm/accounts": 250}
    mandatory_filter_endpoints: list[str] = field(default_factory=lambda: list(DEFAULT_MANDATORY))
    mandatory_filter_fields: dict[str, list[str]] = field(default_factory=dict)  # entity name -> fields
    mandatory_filter_on_count: bool = True    # /$count needs a $filter too
    # faults and observability
    faults: list[dict[str, Any]] = field(default_factory=list)
    request_log: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EmulatorConfig:
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SettingError(unknown[0], f"unknown emulator setting(s): {', '.join(unknown)} "
                               f"(known: {', '.join(sorted(names))})")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("minutely_limit", "daily_limit", "page_size", "bulk_page_size", "error_limit",
                     "daily_token_calls"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingError(name, f"{name}: must be a whole number of at least 1, got {value!r}")
        for name in ("access_token_lifetime", "min_refresh_interval", "refresh_token_lifetime",
                     "code_lifetime", "error_window", "error_block_seconds", "old_refresh_grace"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise SettingError(name, f"{name}: must be a number of seconds, got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.clients, dict) or not self.clients:
            raise SettingError("clients", "clients: must map client ids to secrets")
        clients: dict[str, str] = {}
        for cid, secret in self.clients.items():
            key = normal_client_id(cid)
            if clients.get(key, secret) != secret:
                raise SettingError("clients", f"clients: {cid!r} is the same app as another key "
                                   "(braces, spaces and case do not matter) with another secret")
            clients[key] = secret
        self.clients = clients
        if not isinstance(self.rows, dict) or not all(isinstance(v, int) and v >= 0 for v in self.rows.values()):
            raise SettingError("rows", f"rows: must map endpoints (crm/accounts) to row counts, got {self.rows!r}")
        self.rows = {k.lower(): v for k, v in self.rows.items()}
        if not isinstance(self.mandatory_filter_fields, dict):
            raise SettingError("mandatory_filter_fields",
                               "mandatory_filter_fields: must map entity names (Accounts) to lists of fields")
        for name in ("error_statuses", "mandatory_filter_endpoints", "divisions", "limits"):
            if not isinstance(getattr(self, name), list):
                raise SettingError(name, f"{name}: must be a list, got {getattr(self, name)!r}")
        for rule in self.limits:
            if not isinstance(rule, dict) or not set(rule) <= {"app", "division", "minutely", "daily"}:
                raise SettingError("limits",
                                   f"limits: each rule is {{app?, division?, minutely?, daily?}}, got {rule!r}")
        self.limits = [{**r, "app": normal_client_id(r["app"])} if "app" in r else r for r in self.limits]
        from proxy.emulator.faults import validate_faults

        try:
            validate_faults(self.faults)
        except ValueError as exc:
            raise SettingError("faults", str(exc)) from None

    def limits_for(self, app: str, division: int) -> tuple[int, int]:
        minutely, daily = self.minutely_limit, self.daily_limit
        for rule in self.limits:
            if rule.get("app", app) == app and rule.get("division", division) == division:
                minutely = rule.get("minutely", minutely)
                daily = rule.get("daily", daily)
        return minutely, daily


def _key_lines(text: str) -> dict[str, int]:
    """Line (1-based) of every top-level key of a YAML mapping."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def load_config(path: str) -> EmulatorConfig:
    """Read an emulator.yaml; bad input raises ``ValueError("<path>:<line>: <reason>")``."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ValueError(f"{path}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}:1: must be a mapping of settings")
    try:
        return EmulatorConfig.from_dict(data)
    except SettingError as exc:
        at = _key_lines(text).get(exc.key)
        raise ValueError(f"{path}{':' + str(at) if at else ''}: {exc}") from None
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None
