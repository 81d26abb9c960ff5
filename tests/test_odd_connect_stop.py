"""Stopping the proxy with connections that arrived through CONNECT (found with issue 14, item 3).

A plain listener's idle keep-alive connection is closed at once when the proxy stops; an intercepted
tunnel that sat idle (a tool's pooled connection) held the stop for the whole
``forwarding.drain_timeout`` (30 s). Idle tunnels now close at once too, while a request in flight in a
tunnel still finishes. Real TLS clients, the real emulator over TLS on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest

from proxy.clock import SystemClock
from proxy.emulator import EmulatorConfig
from proxy.emulator.runner import start_emulator
from proxy.tls.ca import LocalCA
from tests.test_tls import trusting

SLOW = 0.8


@pytest.fixture
async def emu(tmp_path):
    test_ca = LocalCA.create(str(tmp_path / "exact-test-ca"), SystemClock())
    leaf = test_ca.leaf(["127.0.0.1"])
    (tmp_path / "leaf.pem").write_bytes(leaf.chain_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    config = EmulatorConfig.from_dict({"faults": [{"path": "/api/v1/*/crm/contacts*", "kind": "slow", "every": 1,
                                                   "delay": SLOW}]})
    running = await start_emulator(config=config, ssl_context=ctx)
    running.authority = running.base_url.removeprefix("https://")
    running.test_ca = test_ca.cert_path
    yield running
    await running.stop()


@pytest.fixture
async def proxy(start_proxy, emu, tmp_path):
    upstreams = f"upstreams:\n  emu: {{base_url: '{emu.base_url}', ca_bundle: '{emu.test_ca}'}}\n"
    LocalCA.create(str(tmp_path / "ca"), SystemClock())
    return await start_proxy("", extra_yaml=f"ca: {{dir: '{tmp_path / 'ca'}'}}\n", upstreams_yaml=upstreams,
                             listeners_yaml="listeners:\n  - {name: plain, port: 0, upstream: emu}\n")


async def tunnel(proxy, emu, tmp_path):
    h, p = proxy.bound["plain"]
    reader, writer = await asyncio.open_connection(h, p)
    target = emu.authority.encode()
    writer.write(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    await writer.start_tls(trusting(str(tmp_path / "ca" / "ca.pem")), server_hostname="127.0.0.1")
    return reader, writer


def request(emu, path: str, token: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {emu.authority}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\n\r\n").encode()


async def test_stop_does_not_wait_for_idle_tunnels(proxy, emu, tmp_path):
    token = emu.state.issue_tokens("test-app")["access_token"]
    _idle_reader, idle = await tunnel(proxy, emu, tmp_path)          # never sent a request
    reader, used = await tunnel(proxy, emu, tmp_path)                # one request, then kept alive
    used.write(request(emu, "/api/v1/current/Me", token))
    assert b" 200 " in (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
    t0 = time.monotonic()
    await proxy.stop()
    assert time.monotonic() - t0 < 3.0
    for w in (idle, used):
        w.close()


async def test_stop_lets_a_request_in_flight_in_a_tunnel_finish(proxy, emu, tmp_path):
    token = emu.state.issue_tokens("test-app")["access_token"]
    reader, writer = await tunnel(proxy, emu, tmp_path)
    writer.write(request(emu, "/api/v1/7/crm/Contacts?$top=1", token))
    await asyncio.sleep(SLOW / 4)  # the request is with the (slow) emulator now
    stopping = asyncio.ensure_future(proxy.stop())
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    body = await reader.readexactly(length)
    assert b" 200 " in head.split(b"\r\n", 1)[0] and b'"results"' in body
    await asyncio.wait_for(stopping, 5)
    writer.close()
