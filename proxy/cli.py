"""The ``exact-proxy`` command: run, check-config, status, usage, emulate, demo.

Contract: every subcommand returns a process exit code (0 ok, 1 failed, 2 bad usage or bad config).
``run`` refuses to start on an invalid policy and prints every problem with file, line, key and reason.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys

from proxy.cluster.settings import URL_ENV, ClusterError, ClusterSettings, url_problem
from proxy.policy import Policy, PolicyError, load_policy
from proxy.policy.watch import PolicyHolder
from proxy.tls.ca import CAError

log = logging.getLogger("exact_proxy.cli")
DEFAULT_CONFIG = "policies.yaml"
CLOCK_ENV = "EXACT_PROXY_CLOCK"  # "factor,start,real_start": a sped-up clock (demos and tests only)



def _config_path(value: str | None) -> str:
    return value or os.environ.get("EXACT_PROXY_CONFIG") or DEFAULT_CONFIG


def _load(path: str) -> Policy | None:
    try:
        return load_policy(path)
    except PolicyError as exc:
        print(f"exact-proxy: {path} is not a valid policy:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    policy = _load(args.file)
    if policy is None:
        return 2
    listeners = ", ".join(f"{lst.name}={lst.host}:{lst.port}->{lst.upstream}" for lst in policy.listeners)
    print(f"{args.file}: OK ({listeners})")
    cluster = policy.cluster.with_url(os.environ.get(URL_ENV))
    if cluster.enabled:
        return _check_cluster(cluster)
    return 0


def _check_cluster(cluster: ClusterSettings) -> int:
    """check-config in cluster mode: is the shared server reachable, and is the token key set?"""
    from proxy.tokens.sealing import ENV, Sealer

    try:
        from proxy.cluster.probe import reach
    except ImportError:
        print("cluster: redis-py is not installed: pip install 'exact-proxy[cluster]'", file=sys.stderr)
        return 1
    ok, text = asyncio.run(reach(cluster))
    print(f"cluster: {cluster.safe_url()} {text}", file=sys.stdout if ok else sys.stderr)
    if not Sealer.from_env().encrypting:
        print(f"cluster: {ENV} is not set; cluster mode refuses to start without it", file=sys.stderr)
        ok = False
    return 0 if ok else 1


def cmd_run(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    policy = _load(path)
    if policy is None:
        return 2
    if args.host or args.port is not None:
        first = policy.listeners[0]
        first = dataclasses.replace(first, host=args.host or first.host,
                                    port=first.port if args.port is None else args.port)
        policy = dataclasses.replace(policy, listeners=(first, *policy.listeners[1:]))
    if args.state:
        policy = dataclasses.replace(policy, state=dataclasses.replace(policy.state, path=args.state))
    url = args.redis_url or os.environ.get(URL_ENV)
    if url:
        why = url_problem(url)
        if why:
            print(f"exact-proxy: --redis-url / {URL_ENV} {why}", file=sys.stderr)
            return 2
        policy = dataclasses.replace(policy, cluster=policy.cluster.with_url(url))
    overrides = {"host": args.host, "port": args.port, "state": args.state, "redis_url": url}
    from proxy.ops.logs import setup_logging

    setup_logging(policy.log, args.log_format)
    holder = PolicyHolder(policy, path)
    holder.on_change(lambda old, new: _reapply_overrides(holder, new, overrides, args.log_format))
    try:
        asyncio.run(_serve(holder))
    except (OSError, CAError, ClusterError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    return 0


def _reapply_overrides(holder: PolicyHolder, new: Policy, overrides: dict, log_format: str | None) -> None:
    """Command-line overrides outlive a reload of the file."""
    from proxy.ops.logs import setup_logging

    first = new.listeners[0]
    first = dataclasses.replace(first, host=overrides["host"] or first.host,
                                port=first.port if overrides["port"] is None else overrides["port"])
    new = dataclasses.replace(new, listeners=(first, *new.listeners[1:]))
    if overrides["state"]:
        new = dataclasses.replace(new, state=dataclasses.replace(new.state, path=overrides["state"]))
    if overrides["redis_url"]:
        new = dataclasses.replace(new, cluster=new.cluster.with_url(overrides["redis_url"]))
    holder.current = new
    setup_logging(new.log, log_format)


async def _serve(holder: PolicyHolder) -> None:
    from proxy.http.server import ProxyServer

    clock = None
    if os.environ.get(CLOCK_ENV):  # demos and cluster tests: several processes on one sped-up clock
        from proxy.clock import ScaledClock

        clock = ScaledClock.from_text(os.environ[CLOCK_ENV])
    server = ProxyServer(holder, clock)
    # Handlers first: a supervisor that reads the "listening" line may stop us at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    await server.start()
    await stop.wait()
    log.info("shutting down: no new connections; in-flight requests get up to %g s",
             holder.current.forwarding.drain_timeout)
    await server.stop()
    log.info("stopped")


def cmd_emulate(args: argparse.Namespace) -> int:
    from proxy.emulator import cli as emulator_cli

    return emulator_cli.run(args)


def _policy_for_reading(args: argparse.Namespace) -> Policy | None:
    """The policy of ``status`` and ``usage``, with ``--state`` naming another state file."""
    policy = _load(_config_path(args.config))
    if policy is not None and args.state:
        policy = dataclasses.replace(policy, state=dataclasses.replace(policy.state, path=args.state))
    return policy


def cmd_status(args: argparse.Namespace) -> int:
    policy = _policy_for_reading(args)
    if policy is None:
        return 2
    if args.watch:
        from proxy.ops.watch import watch

        return watch(policy, url=args.url, interval=args.interval)
    from proxy.ops.status_cli import status

    return status(policy, url=args.url, as_json=args.json)


def cmd_usage(args: argparse.Namespace) -> int:
    policy = _policy_for_reading(args)
    if policy is None:
        return 2
    from proxy.ops.usage_cli import usage

    return usage(policy, url=args.url, day=args.day, by=args.by, as_json=args.json)


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo.run import main as demo_main

    return demo_main(args)


def cmd_token_key(args: argparse.Namespace) -> int:
    from proxy.tokens.sealing import ENV, new_key

    print(new_key())
    print(f"# keep it secret; start the proxy with {ENV}=<that key> to encrypt tokens at rest", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exact-proxy", description="A local proxy that keeps tools "
                                     "inside Exact Online's API limits.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the proxy")
    run.add_argument("--config", help=f"policy file (default: $EXACT_PROXY_CONFIG or ./{DEFAULT_CONFIG})")
    run.add_argument("--host", help="bind the first listener to this address (default from the policy: "
                     "127.0.0.1)")
    run.add_argument("--port", type=int, help="port of the first listener (default from the policy: 8080)")
    run.add_argument("--state", help="state file (overrides state.path of the policy)")
    run.add_argument("--log-format", choices=("text", "json"), help="override log.format of the policy")
    run.add_argument("--redis-url", help=f"cluster mode: the shared Valkey/Redis server (overrides "
                     f"cluster.redis_url; default ${URL_ENV})")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a policy file without starting")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    check.set_defaults(func=cmd_check_config)

    st = sub.add_parser("status", help="show calls, queues, pauses, error budgets and token chains")
    st.add_argument("--config", help=f"policy file (default: $EXACT_PROXY_CONFIG or ./{DEFAULT_CONFIG})")
    st.add_argument("--url", help="the proxy to ask (default: the policy's first listener)")
    st.add_argument("--state", help="state file to read when the proxy is down (default: the policy's)")
    st.add_argument("--json", action="store_true", help="print JSON for scripts")
    st.add_argument("--watch", action="store_true", help="redraw an at-a-glance view until Ctrl-C, like top")
    st.add_argument("--interval", type=float, default=2.0, metavar="SECONDS",
                    help="with --watch: seconds between redraws (default 2)")
    st.set_defaults(func=cmd_status)

    us = sub.add_parser("usage", help="where the budget went: calls per day, tool, division and endpoint, "
                        "and advice")
    us.add_argument("--config", help=f"policy file (default: $EXACT_PROXY_CONFIG or ./{DEFAULT_CONFIG})")
    us.add_argument("--url", help="the proxy to ask (default: the policy's first listener)")
    us.add_argument("--state", help="state file to read when the proxy is down (default: the policy's)")
    us.add_argument("--day", help="the UTC day, YYYY-MM-DD (default: today)")
    us.add_argument("--by", choices=("tool", "division", "endpoint", "app"), help="group the rows (default: "
                    "every key: app, division, listener, tool, endpoint)")
    us.add_argument("--json", action="store_true", help="print JSON for scripts")
    us.set_defaults(func=cmd_usage)

    key = sub.add_parser("token-key", help="print a new key for EXACT_PROXY_TOKEN_KEY (tokens encrypted at rest)")
    key.set_defaults(func=cmd_token_key)

    from proxy.tls import commands as ca_commands

    ca = sub.add_parser("ca", help="the local certificate authority for HTTPS listeners and CONNECT "
                        "interception: init, show")
    ca_commands.add_arguments(ca)

    emulate = sub.add_parser("emulate", help="run the Exact Online emulator")
    try:
        from proxy.emulator import cli as emulator_cli

        emulator_cli.add_arguments(emulate)
    except ImportError:  # pragma: no cover - the emulator ships with the package
        pass
    emulate.set_defaults(func=cmd_emulate)

    demo = sub.add_parser("demo", help="run a naive legacy tool against the emulator, directly and through "
                          "the proxy, and compare (no credentials, no network)")
    demo.add_argument("--factor", type=float, default=30.0, help="speed-up of the clock in emulator and "
                      "proxy (default 30: a minute lasts 2 s)")
    demo.add_argument("--seconds", type=float, default=25.0, help="real seconds per run (default 25)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
