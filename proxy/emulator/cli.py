"""``exact-proxy emulate``: the emulator on a port, for your own tools and for trying the proxy."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from proxy.clock import ScaledClock, SystemClock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    parser.add_argument("--config", help="emulator.yaml with settings (see proxy/emulator/emulator.example.yaml)")
    parser.add_argument("--clock-scale", type=float, default=1.0, help="run the clock this many times faster")
    parser.add_argument("--request-log", help="append one JSON line per call to this file")


def run(args: argparse.Namespace) -> int:
    from proxy.emulator.config import EmulatorConfig, load_config

    try:
        config = load_config(args.config) if args.config else EmulatorConfig()
    except ValueError as exc:
        print(f"exact-proxy emulate: {exc}", file=sys.stderr)
        return 2
    if args.request_log:
        config.request_log = args.request_log
    clock = ScaledClock(args.clock_scale) if args.clock_scale != 1.0 else SystemClock()
    return asyncio.run(_serve(config, clock, args.host, args.port))


async def _serve(config, clock, host: str, port: int) -> int:
    from proxy.emulator.runner import start_emulator

    # Signal handlers go in before the emulator announces itself: whoever reads the banner
    # may send SIGTERM at once, and must get a clean exit (0), not the default kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    emu = await start_emulator(config, clock, host, port)
    client = "demo-app" if "demo-app" in config.clients else next(iter(config.clients))
    secret = config.clients[client]
    print(f"Exact Online emulator on {emu.base_url}  (clock x{getattr(clock, 'factor', 1.0):g})\n"
          f"  client id / secret: {client} / {secret}\n"
          f"  authorize in a browser: {emu.base_url}/api/oauth2/auth?client_id={client}"
          "&redirect_uri=http://localhost/callback&response_type=code\n"
          f"  then POST the code to {emu.base_url}/api/oauth2/token (grant_type=authorization_code)\n"
          f"  statistics: {emu.base_url}/_emulator/stats", flush=True)
    await stop.wait()
    await emu.stop()
    return 0
