"""Serving the emulator on a real socket from code (tests, benchmarks, the demo).

Contract: ``await start_emulator(config=None, clock=None, host="127.0.0.1", port=0, ssl_context=None)``
-> ``RunningEmulator`` with ``.base_url`` (``http(s)://host:port``, the port actually bound), ``.app``,
``.state`` (``app[EMULATOR]``) and ``await .stop()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .app import create_app
from .config import EmulatorConfig
from .state import EMULATOR, Emulator


@dataclass
class RunningEmulator:
    base_url: str
    app: web.Application
    state: Emulator
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_emulator(
    config: EmulatorConfig | None = None, clock=None, host: str = "127.0.0.1", port: int = 0, ssl_context=None
) -> RunningEmulator:
    app = create_app(config, clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    shown = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in shown:
        shown = f"[{shown}]"
    scheme = "https" if ssl_context is not None else "http"
    return RunningEmulator(f"{scheme}://{shown}:{bound[1]}", app, app[EMULATOR], runner)
