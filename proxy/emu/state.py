"""The emulator's state object, reachable as ``app[EMULATOR]``.

Contract: one ``Emulator`` per application, holding the config, the injected clock, the call windows, the
error limit, the token store, the data, the faults and the statistics. Its public methods are what tests,
the benchmark and the demo use: ``stats()``, ``count()``, ``issue_tokens()``, ``account_ids()``,
``deleted_account_id()``, ``set_limits()``, ``reset_limits()``, ``set_faults()``, ``reset()`` and ``requests``.
"""

from __future__ import annotations

from aiohttp import web

from .config import EmulatorConfig
from .data import DataStore
from .errorlimit import ErrorLimit
from .faults import Faults
from .stats import Stats
from .tokens import Tokens
from .windows import Windows


class Emulator:
    def __init__(self, config: EmulatorConfig, clock) -> None:
        self.config = config
        self.clock = clock
        self.windows = Windows(config)
        self.errors = ErrorLimit(config)
        self.tokens = Tokens(config)
        self.data = DataStore(config, clock)
        self.faults = Faults(config.faults)
        self.stats_ = Stats(config.request_log)
        self.mandatory = frozenset(e.lower() for e in config.mandatory_filter_endpoints)

    @property
    def requests(self) -> int:
        return self.stats_.requests

    def stats(self) -> dict:
        out = self.stats_.as_dict()
        out["blocks"] = self.errors.blocks()
        return out

    def count(
        self,
        outcome: str | None = None,
        app: str | None = None,
        division: int | None = None,
        endpoint: str | None = None,
    ) -> int:
        return self.stats_.count(outcome, app, division, endpoint)

    def issue_tokens(self, client_id: str = "test-app", user: str = "user-1") -> dict:
        return self.tokens.issue(client_id, user, self.clock.time())

    def account_ids(self, division: int) -> list[str]:
        return [r["ID"] for r in self.data.table(int(division), "Accounts").ordered()]

    def deleted_account_id(self, division: int) -> str:
        ids = self.data.deleted_ids(int(division))
        if not ids:
            raise LookupError(f"division {division} has no deleted account (deleted_accounts is 0)")
        return ids[0]

    def set_limits(
        self, app: str, division: int, minutely: int | None = None, daily: int | None = None
    ) -> None:
        self.windows.set_limits(app, int(division), minutely, daily)

    def reset_limits(self) -> None:
        self.windows.reset()
        self.errors.reset()

    def set_faults(self, rules: list[dict]) -> None:
        self.faults = Faults(rules)

    def reset(self) -> None:
        """``POST /_emulator/reset``: windows, limits, blocks, token-call counts and statistics start over."""
        self.reset_limits()
        self.tokens.reset_counts()
        self.stats_.reset()

    def close(self) -> None:
        self.stats_.close()


EMULATOR: web.AppKey[Emulator] = web.AppKey("emu", Emulator)
