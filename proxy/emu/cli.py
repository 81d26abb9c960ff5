"""``exact-proxy emulate``: the emulator as a command.

Contract
- ``add_arguments(parser)``: ``--host`` (127.0.0.1), ``--port`` (9090), ``--config`` (YAML), ``--clock-scale``
  (time runs this many times faster, e.g. 6 for 10-second minutes), ``--request-log`` (JSONL path).
- ``run(args) -> int``: prints the base URL, the demo client and the browser auth URL, serves until SIGINT or
  SIGTERM, returns 0; a bad config prints file, line and reason to stderr and returns 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from proxy.clock import ScaledClock, SystemClock

from .config import ConfigError, EmulatorConfig, load_config
from .runner import start_emulator

DEMO_CLIENT = "demo-app"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9090, help="port to listen on (default 9090)")
    parser.add_argument(
        "--config", default=None, help="emulator YAML settings (limits, tokens, data, faults)"
    )
    parser.add_argument(
        "--clock-scale",
        type=float,
        default=1.0,
        help="run the emulator's clock this many times faster (6 = 10-second minutes)",
    )
    parser.add_argument("--request-log", default=None, help="append one JSON line per request to this file")


def _config(args: argparse.Namespace) -> EmulatorConfig:
    cfg = load_config(args.config) if args.config else EmulatorConfig()
    if args.request_log:
        cfg.request_log = args.request_log
    return cfg


async def serve(args: argparse.Namespace, cfg: EmulatorConfig, out=None) -> int:
    out = out or sys.stdout
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    scale = float(args.clock_scale or 1.0)
    clock = ScaledClock(scale) if scale != 1.0 else SystemClock()
    running = await start_emulator(cfg, clock, host=args.host, port=args.port)
    base = running.base_url
    secret = cfg.clients.get(DEMO_CLIENT)
    print(f"Exact Online emulator listening on {base}", file=out)
    if scale != 1.0:
        print(f"clock runs {scale:g}x faster: a minute lasts {60 / scale:g} s", file=out)
    if secret is not None:
        print(f"demo client: client_id={DEMO_CLIENT} client_secret={secret}", file=out)
        print(
            f"authorize in a browser: {base}/api/oauth2/auth?client_id={DEMO_CLIENT}"
            f"&redirect_uri=http://localhost/callback&response_type=code",
            file=out,
        )
    print(f"statistics: {base}/_emulator/stats", file=out)
    out.flush()
    try:
        await stop.wait()
    finally:
        await running.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
    except (ConfigError, ValueError) as exc:
        print(f"exact-proxy emulate: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(args, cfg))
    except OSError as exc:
        print(
            f"exact-proxy emulate: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.emu.cli", description="Exact Online emulator")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
