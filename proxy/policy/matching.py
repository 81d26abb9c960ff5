"""Which requests a policy rule applies to: by listener, User-Agent or request header.

Contract: ``Match`` holds optional conditions; every condition given must hold (an empty match holds
for every request). ``user_agent`` and header values are shell-style globs (``python-exact-online*``),
compared case-insensitively. ``read_match(reader)`` reads one ``match:`` mapping of policies.yaml.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from proxy.policy.reader import Reader


@dataclass(frozen=True)
class Match:
    listener: str | None = None
    user_agent: str | None = None
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def matches(self, listener: str, headers) -> bool:
        if self.listener is not None and self.listener != listener:
            return False
        if self.user_agent is not None and not fnmatch.fnmatchcase(
                headers.get("User-Agent", "").lower(), self.user_agent.lower()):
            return False
        for name, pattern in self.headers:
            value = headers.get(name)
            if value is None or not fnmatch.fnmatchcase(value.lower(), pattern.lower()):
                return False
        return True


def read_match(r: Reader) -> Match:
    listener = r.text("listener", None)
    user_agent = r.text("user_agent", None)
    headers: list[tuple[str, str]] = []
    hr = r.mapping("header")
    for name in list(hr.data):
        value = hr.text(name, None)
        if value is not None:
            headers.append((name, value))
    r.finish()
    return Match(listener=listener, user_agent=user_agent, headers=tuple(headers))
