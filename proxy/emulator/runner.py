"""Start the emulator on a socket from code (the demo, benchmarks, TLS tests).

``await start_emulator(config=None, clock=None, host="127.0.0.1", port=0, ssl_context=None)`` returns a
``RunningEmulator`` with ``base_url``, ``app``, ``state`` (the ``Emulator``) and ``await stop()``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from proxy.emulator.app import EMULATOR, Emulator, create_app


@dataclass
class RunningEmulator:
    base_url: str
    app: web.Application
    state: Emulator
    runner: web.AppRunner

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_emulator(config=None, clock=None, host: str = "127.0.0.1", port: int = 0,
                         ssl_context=None) -> RunningEmulator:
    app = create_app(config, clock)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # port 0 picks a free port
    scheme = "https" if ssl_context else "http"
    return RunningEmulator(f"{scheme}://{host}:{bound}", app, app[EMULATOR], runner)
