"""The ``usage`` section of policies.yaml: how long usage is kept, how big a day may grow, and advice.

Contract: ``read_usage(r)`` reads the section with the policy ``Reader`` (every problem with file, line
and reason; unknown keys refused) and returns the frozen ``UsageSettings``:
- ``keep_days`` (1-366, default 35): days of usage kept in the state file; older days are dropped.
- ``max_keys_per_day`` (100-100000, default 5000): records per UTC day; requests beyond it are counted
  under one overflow record (``app``, ``tool`` and ``endpoint`` ``(other)``), so the file stays bounded
  whatever the tools send.
- ``advice.enabled`` (default true) and ``advice.whole_reads`` (1-100000, default 24): advise a tool that
  reads a whole set with a sync or bulk alternative more than that many times a UTC day.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.policy.reader import Reader


@dataclass(frozen=True)
class AdviceSettings:
    enabled: bool = True
    whole_reads: int = 24


@dataclass(frozen=True)
class UsageSettings:
    keep_days: int = 35
    max_keys_per_day: int = 5000
    advice: AdviceSettings = AdviceSettings()


def read_usage(r: Reader) -> UsageSettings:
    d = UsageSettings()
    keep_days = r.integer("keep_days", d.keep_days, minimum=1, maximum=366)
    max_keys = r.integer("max_keys_per_day", d.max_keys_per_day, minimum=100, maximum=100000)
    a = r.mapping("advice")
    advice = AdviceSettings(enabled=a.boolean("enabled", True),
                            whole_reads=a.integer("whole_reads", AdviceSettings.whole_reads, minimum=1,
                                                  maximum=100000))
    a.finish()
    r.finish()
    return UsageSettings(keep_days=keep_days, max_keys_per_day=max_keys, advice=advice)
