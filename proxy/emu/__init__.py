"""An Exact Online emulator faithful to the 2021 limits: OAuth, OData, call and error limits, faults.

Public interface: ``create_app(config=None, clock=None)``, ``EmulatorConfig``, ``load_config(path)`` and
``EMULATOR`` (the ``web.AppKey`` of the state object). ``proxy.emu.runner.start_emulator`` serves it on a
socket; ``proxy.emu.cli`` is the ``exact-proxy emulate`` command.
"""

from __future__ import annotations

from .app import create_app
from .config import ConfigError, EmulatorConfig, load_config
from .state import EMULATOR, Emulator

__all__ = ["EMULATOR", "ConfigError", "Emulator", "EmulatorConfig", "create_app", "load_config"]
