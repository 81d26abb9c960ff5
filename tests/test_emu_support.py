"""Shared fixtures for the proxy.emu tests (no tests here): the emulator on a real socket, a ManualClock."""

from __future__ import annotations

import pytest

from proxy.clock import ManualClock
from proxy.emu import EMULATOR, EmulatorConfig, create_app

START = 1_795_600_800.0  # 2026-11-25T10:00:00Z


@pytest.fixture
def emu_clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
def emu(aiohttp_client, emu_clock):
    """``await emu(config_dict=None)`` -> aiohttp TestClient with ``.state`` and ``.auth`` (JSON headers)."""

    async def start(config: dict | None = None, use_clock=None):
        app = create_app(EmulatorConfig.from_dict(config or {}), use_clock or emu_clock)
        client = await aiohttp_client(app)
        client.state = app[EMULATOR]
        tokens = client.state.issue_tokens()
        client.token = tokens["access_token"]
        client.auth = {"Authorization": f"Bearer {client.token}", "Accept": "application/json"}
        return client

    return start
