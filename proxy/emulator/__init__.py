"""The Exact Online emulator: the upstream of the tests, the benchmarks and the demo.

It enforces Exact's rules from ``shared/exact-online-api.md`` (OAuth with rotating refresh tokens and
the 570-second rule, minute and day call limits with Exact's headers, the hourly error limit,
mandatory filtering, bulk and sync rules, paging with absolute links, JSON and Atom) and shares no
limiter or window code with the proxy: from the proxy package it uses only ``proxy.clock``.
"""

from proxy.emulator.app import EMULATOR, Emulator, create_app
from proxy.emulator.config import EmulatorConfig, load_config

__all__ = ["EMULATOR", "Emulator", "EmulatorConfig", "create_app", "load_config"]
