"""Minimal tests of ``proxy.http`` parts no other test imports by name, each against its contract.

The listener is put together as ``proxy.http.server`` does it (``ExactServer`` behind a ``GuardedSite``,
``make_handler`` of a real, unstarted ``Services``) on a real loopback socket, and spoken to in raw bytes.
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp import web
from multidict import CIMultiDict

from proxy.http import hop
from proxy.http.bad_requests import ExactServer
from proxy.http.client_settings import ClientSettings
from proxy.http.client_timeouts import TimedRequestHandler
from proxy.http.connection_cap import ConnectionCap
from proxy.http.handler import make_handler
from proxy.http.listen import GuardedSite
from proxy.http.resolver import UpstreamResolver
from proxy.policy import PolicyError
from tests.raw_http import message, read_response
from tests.support import Rig, make_policy

FAST = ClientSettings(head_timeout=0.3, body_timeout=1.0, idle_timeout=5.0, max_connections=2)


@pytest.fixture
async def listener():
    """``await listener(rig, settings)`` -> (host, port) of a listening socket serving ``rig.services``."""
    runners: list[web.ServerRunner] = []

    async def start(rig: Rig, settings: ClientSettings = FAST) -> tuple[str, int]:
        server = ExactServer(
            make_handler(rig.services, rig.policy.listeners[0]), settings=lambda: settings, access_log=None
        )
        assert isinstance(server(), TimedRequestHandler)
        runner = web.ServerRunner(server, handle_signals=False)
        await runner.setup()
        runners.append(runner)
        site = GuardedSite(runner, "127.0.0.1", 0, settings=lambda: settings, name="default")
        await site.start()
        return runner.addresses[0][:2]

    yield start
    for runner in runners:
        await runner.cleanup()


async def _exchange(addr, data: bytes, *, trickle: float = 0.0):
    """Send ``data`` (a byte every ``trickle`` seconds, until the answer comes) and read one answer."""
    reader, writer = await asyncio.open_connection(*addr)

    async def send() -> None:
        for i in range(len(data)):
            if writer.is_closing():
                return
            writer.write(data[i : i + 1])
            await asyncio.sleep(trickle)

    sending = asyncio.ensure_future(send()) if trickle else None
    if sending is None:
        writer.write(data)
    try:
        return await read_response(reader)
    finally:
        if sending is not None:
            sending.cancel()
        writer.close()


async def test_admin_paths_are_answered_by_the_listener_itself_for_this_machine_only(listener):
    addr = await listener(Rig())
    status, _, body = await _exchange(addr, b"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, _, body = await _exchange(addr, b"GET /_proxy/health HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert status == 403 and "Host names this machine" in json.loads(body)["error"]


async def test_a_failing_filter_becomes_a_500_in_exacts_envelope_and_the_listener_keeps_serving(listener):
    rig = Rig()

    async def broken(ctx):
        raise RuntimeError("a bug")

    rig.services.entry = broken
    addr = await listener(rig)
    for _ in range(2):
        status, _, body = await _exchange(addr, b"GET /api/v1/101/crm/Accounts HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (
            status == 500
            and message(body) == "exact-proxy: internal proxy error (RuntimeError); see the proxy log"
        )


async def test_connect_without_an_interceptor_gets_405_in_exacts_envelope(listener):
    addr = await listener(Rig())
    status, headers, body = await _exchange(
        addr, b"CONNECT start.exactonline.nl:443 HTTP/1.1\r\nHost: start.exactonline.nl:443\r\n\r\n"
    )
    assert status == 405 and message(body).startswith("exact-proxy: ")


async def test_a_smuggling_shaped_request_gets_400_and_never_reaches_the_filters(listener):
    rig = Rig()
    reached: list[str] = []

    async def entry(ctx):
        reached.append(ctx.raw_path)
        raise AssertionError("must not be reached")

    rig.services.entry = entry
    addr = await listener(rig)
    status, headers, body = await _exchange(
        addr,
        b"POST /api/v1/101/crm/Accounts HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
    )
    assert status == 400 and message(body).startswith("exact-proxy: ") and reached == []


async def test_a_request_head_trickled_past_head_timeout_gets_408(listener):
    addr = await listener(Rig())
    head = b"GET /api/v1/101/crm/Accounts HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    status, _, body = await _exchange(addr, head, trickle=0.02)
    assert status == 408 and "head_timeout" in message(body)


async def test_a_connection_past_max_connections_gets_503_with_retry_after(listener):
    addr = await listener(Rig())
    held = [await asyncio.open_connection(*addr) for _ in range(2)]
    await asyncio.sleep(0.05)
    try:
        status, headers, body = await _exchange(
            addr, b"GET /_proxy/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        assert status == 503 and headers["retry-after"] == "1" and "max_connections" in message(body)
    finally:
        for _, w in held:
            w.close()


async def test_a_connection_cap_counts_open_transports_and_drops_closed_ones():
    class Transport:
        def __init__(self) -> None:
            self.closing = False

        def is_closing(self) -> bool:
            return self.closing

    cap, a, b, c = ConnectionCap("default"), Transport(), Transport(), Transport()
    assert cap.admit(a, 2) and cap.admit(b, 2) and not cap.admit(c, 2) and cap.refused == 1
    a.closing = True  # closed without release (a tunnel that ended elsewhere): found at the cap
    assert cap.admit(c, 2)
    cap.release(b)
    assert cap.open == {c}


def test_hop_by_hop_headers_stay_on_their_hop():
    client = CIMultiDict(
        [
            ("Connection", "keep-alive, X-Trace"),
            ("X-Trace", "1"),
            ("Keep-Alive", "5"),
            ("Proxy-Authorization", "Basic x"),
            ("Content-Length", "3"),
            ("Expect", "100-continue"),
            ("Host", "localhost:8080"),
            ("Authorization", "Bearer t"),
            ("Accept", "a"),
            ("Accept", "b"),
        ]
    )
    up = hop.to_upstream(client, "start.exactonline.nl")
    assert up["Host"] == "start.exactonline.nl" and up["Via"] == "1.1 exact-proxy"
    assert up.getall("Accept") == ["a", "b"] and up["Authorization"] == "Bearer t"
    assert not {
        "Connection",
        "X-Trace",
        "Keep-Alive",
        "Proxy-Authorization",
        "Content-Length",
        "Expect",
    } & set(up)
    answer = CIMultiDict(
        [
            ("Content-Length", "2"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
            ("Transfer-Encoding", "chunked"),
            ("Via", "1.1 exact"),
        ]
    )
    down = hop.to_client(answer)
    assert down["Content-Length"] == "2" and down.getall("Set-Cookie") == ["a=1", "b=2"]
    assert "Transfer-Encoding" not in down and down["Via"] == "1.1 exact, 1.1 exact-proxy"


def test_client_settings_are_read_from_the_clients_section_with_every_problem_named():
    assert make_policy("clients: {head_timeout: 2, max_connections: 5}\n").clients == ClientSettings(
        head_timeout=2.0, max_connections=5
    )
    with pytest.raises(PolicyError) as err:
        make_policy("clients: {head_timeout: 0, idle: 3}\n")
    text = str(err.value)
    assert "clients.head_timeout" in text and "clients.idle" in text


async def test_connect_to_changes_only_the_address_an_upstream_is_reached_at():
    policy = make_policy(
        upstreams_yaml="upstreams:\n  exact: {base_url: 'https://start.exactonline.nl', "
        "connect_to: '127.0.0.1:9443'}\n"
    )
    resolver = UpstreamResolver(lambda: policy)
    try:
        (hit,) = await resolver.resolve("start.exactonline.nl", 443)
        assert (hit["hostname"], hit["host"], hit["port"]) == ("start.exactonline.nl", "127.0.0.1", 9443)
        other = await resolver.resolve("localhost", 80, socket.AF_INET)  # not the upstream's port: unchanged
        assert {r["port"] for r in other} == {80} and all(r["host"] == "127.0.0.1" for r in other)
    finally:
        await resolver.close()
