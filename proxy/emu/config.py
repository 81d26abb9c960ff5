"""Emulator settings: every Exact behaviour the facts file calls uncertain is a setting here.

Contract
- ``EmulatorConfig()`` has Exact's defaults (60/minute, 5000/day, 600 s access tokens, 570 s refresh
  spacing, 30-day refresh tokens, 200 token calls a day, 3-minute codes, error limit 10 an hour).
- ``EmulatorConfig.from_dict(d)`` builds one from plain data; unknown keys raise ``ValueError``.
- ``load_config(path)`` reads YAML; bad input raises ``ConfigError`` naming file, line and reason.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import yaml

DEFAULT_COUNTS = {
    "crm/accounts": 250,
    "crm/contacts": 300,
    "logistics/items": 120,
    "financial/glaccounts": 80,
    "financialtransaction/transactionlines": 1500,
    "salesinvoice/salesinvoices": 200,
}
DEFAULT_MANDATORY = ["crm/accounts", "bulk/crm/accounts", "logistics/items", "bulk/logistics/items"]


@dataclass
class LimitOverride:
    app: str | None = None
    division: int | None = None
    minutely: int | None = None
    daily: int | None = None


@dataclass
class EmulatorConfig:
    public_base_url: str | None = None
    # call limits (per app = client_id, per division)
    minutely_limit: int = 60
    daily_limit: int = 5000
    limits: list[LimitOverride] = field(default_factory=list)
    retry_after_on_429: bool = False
    # OAuth
    clients: dict[str, str] = field(
        default_factory=lambda: {"test-app": "test-secret", "demo-app": "demo-secret"}
    )
    user: str = "user-1"
    token_type: str = "Bearer"
    access_token_lifetime: float = 600.0
    refresh_token_lifetime: float = 30 * 86400.0
    too_early_seconds: float = 570.0
    too_early_retry_after: bool = True
    invalidate_on_too_early: bool = False
    token_daily_limit: int = 200
    token_daily_status: int = 429
    code_lifetime: float = 180.0
    # refusals with a Reason header: user -> 401 reason (BlockedUser, InactiveUser, …),
    # division -> 403 reason (DivisionBlocked, NoDivisionAccess, LicenseExpired, BlockedCustomer)
    user_reasons: dict[str, str] = field(default_factory=dict)
    division_reasons: dict[int, str] = field(default_factory=dict)
    # data
    divisions: list[int] = field(default_factory=lambda: [7095, 7096, 7097])
    counts: dict[str, int] = field(default_factory=dict)
    deleted_accounts: int = 5
    page_size: int = 60
    bulk_page_size: int = 1000
    # rules
    mandatory_filter_endpoints: list[str] = field(default_factory=lambda: list(DEFAULT_MANDATORY))
    mandatory_filter_fields: dict[str, list[str]] = field(default_factory=dict)
    mandatory_filter_on_count: bool = True
    # error limit
    error_limit: int = 10
    error_window: float = 3600.0
    error_block_seconds: float = 3600.0
    error_statuses: list[int] = field(default_factory=lambda: [400, 401, 403, 404])
    error_block_status: int = 429
    error_block_body: str = ""
    # faults and logging
    faults: list[dict] = field(default_factory=list)
    faults_count_toward_limits: bool = False
    request_log: str | None = None

    def count_for(self, endpoint_key: str) -> int:
        return int(self.counts.get(endpoint_key, DEFAULT_COUNTS.get(endpoint_key, 50)))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> EmulatorConfig:
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
        if "limits" in d:
            rows = d["limits"] or []
            if not isinstance(rows, list):
                raise ValueError("limits: must be a list of {app, division, minutely, daily}")
            out = []
            for row in rows:
                if not isinstance(row, dict) or set(row) - {"app", "division", "minutely", "daily"}:
                    raise ValueError(f"limits: bad entry {row!r}")
                out.append(LimitOverride(**row))
            d["limits"] = out
        if "counts" in d:
            d["counts"] = {str(k).lower(): int(v) for k, v in (d["counts"] or {}).items()}
        if "mandatory_filter_endpoints" in d:
            d["mandatory_filter_endpoints"] = [str(e).lower() for e in d["mandatory_filter_endpoints"] or []]
        if "mandatory_filter_fields" in d:
            d["mandatory_filter_fields"] = {
                str(k).lower(): list(v) for k, v in (d["mandatory_filter_fields"] or {}).items()
            }
        if "division_reasons" in d:
            d["division_reasons"] = {int(k): str(v) for k, v in (d["division_reasons"] or {}).items()}
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in (
            "minutely_limit",
            "daily_limit",
            "token_daily_limit",
            "page_size",
            "bulk_page_size",
            "error_limit",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}: must be a non-negative integer, got {v!r}")
        for name in (
            "access_token_lifetime",
            "refresh_token_lifetime",
            "too_early_seconds",
            "code_lifetime",
            "error_window",
            "error_block_seconds",
        ):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name}: must be a non-negative number, got {v!r}")
        if not isinstance(self.clients, dict) or not all(isinstance(v, str) for v in self.clients.values()):
            raise ValueError("clients: must map client_id to client_secret")
        if self.page_size < 1 or self.bulk_page_size < 1:
            raise ValueError("page sizes must be at least 1")
        if not isinstance(self.faults, list):
            raise ValueError("faults: must be a list")
        from .faults import Faults

        try:
            Faults(self.faults)
        except ValueError as exc:
            raise ValueError(f"faults: {exc}") from None


class ConfigError(ValueError):
    """A bad emulator config file: the message names the file, the line and the reason."""


def load_config(path: str) -> EmulatorConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else "?"
        raise ConfigError(f"{path}:{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:
        return EmulatorConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of settings")
    lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            lines[str(key_node.value)] = key_node.start_mark.line + 1
    try:
        return EmulatorConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        line = next((n for k, n in lines.items() if msg.startswith(k) or f" {k}" in msg), None)
        if line is None:
            line = next(iter(lines.values()), 1)
        raise ConfigError(f"{path}:{line}: {msg}") from exc
