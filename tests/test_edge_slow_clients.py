"""Slow and impatient clients cannot hold a connection (issue 14): a request head must arrive whole within
``clients.head_timeout`` of its first byte (408 otherwise), an idle connection is closed after
``clients.idle_timeout`` (not aiohttp's 3,630 s), and a listener holds at most ``clients.max_connections``
connections (503 beyond, Retry-After, Exact's envelope). Body deadlines: tests/test_edge_bodies.py.

Raw sockets throughout (a client library would hide the timing), a handful of connections, timeouts of
a fraction of a second on the event loop's clock (the one the sockets run on).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.policy import Policy, PolicyError, parse_policy
from tests.fake_upstream import SEEN
from tests.raw_http import base_url as _base
from tests.raw_http import message as _message
from tests.raw_http import open_raw as _open
from tests.raw_http import read_response as _response


async def _closed_within(reader, timeout: float) -> bool:
    """True when the proxy closes the connection within ``timeout`` seconds (whatever it sent first)."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True



GET = b"GET /api/v1/1/crm/Accounts?$top=1 HTTP/1.1\r\nHost: localhost\r\n\r\n"


# -- idle keep-alive ---------------------------------------------------------------------------------

async def test_idle_keepalive_connection_is_closed_after_idle_timeout(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "clients: {idle_timeout: 0.6}\n")
    reader, writer = await _open(proxy)
    writer.write(GET)
    status, headers, _ = await _response(reader)
    assert status == 200 and headers.get("connection", "").lower() != "close"
    await asyncio.sleep(0.2)  # well within idle_timeout: the connection is still good for another request
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    t0 = time.monotonic()
    assert await _closed_within(reader, 5.0), "an idle keep-alive connection stayed open"
    assert 0.4 <= time.monotonic() - t0 < 3.0
    writer.close()


async def test_silent_new_connection_is_closed_after_idle_timeout(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "clients: {idle_timeout: 0.5, head_timeout: 10}\n")
    reader, writer = await _open(proxy)
    t0 = time.monotonic()
    assert await _closed_within(reader, 5.0)
    assert 0.3 <= time.monotonic() - t0 < 3.0
    writer.close()


def test_idle_timeout_default_is_75_seconds_not_aiohttps_3630():
    clients = Policy.defaults().clients
    assert clients.idle_timeout == 75
    assert (clients.head_timeout, clients.body_timeout, clients.body_min_rate, clients.max_connections) == (
        20, 20, 500, 1024)


# -- request heads -----------------------------------------------------------------------------------

async def test_trickled_heads_are_cut_at_head_timeout_with_408(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "clients: {head_timeout: 0.6, idle_timeout: 30}\n")
    conns = [await _open(proxy) for _ in range(5)]

    async def trickle(writer):
        for byte in GET[:-2]:  # never the final CRLF
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                return
            await asyncio.sleep(0.1)

    tasks = [asyncio.create_task(trickle(w)) for _, w in conns]
    t0 = time.monotonic()
    # meanwhile a tool that sends its head at once is served as usual
    reader, writer = await _open(proxy)
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    writer.close()
    for r, _ in conns:
        status, headers, body = await _response(r)
        assert status == 408 and headers["connection"].lower() == "close"
        assert "head_timeout" in _message(body)
        assert await _closed_within(r, 2.0)
    assert time.monotonic() - t0 < 4.0
    for t in tasks:
        t.cancel()
    for _, w in conns:
        w.close()
    assert len(upstream.app[SEEN]) == 1  # only the tool that sent its head in time


async def test_head_started_late_in_the_idle_window_gets_its_whole_head_timeout(upstream, start_proxy):
    """The idle deadline does not cut a head that is on its way; the head's own deadline does."""
    proxy = await start_proxy(_base(upstream), "clients: {head_timeout: 1.5, idle_timeout: 0.6}\n")
    reader, writer = await _open(proxy)
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    await asyncio.sleep(0.4)
    writer.write(GET[:10])   # the next head starts 0.2 s before the idle deadline ...
    await asyncio.sleep(0.6)
    writer.write(GET[10:])   # ... and ends after it, well within head_timeout
    assert (await _response(reader))[0] == 200
    writer.close()


async def test_a_body_that_ends_a_read_does_not_start_a_head_deadline(upstream, start_proxy):
    """Head and body in separate reads: the read that ends the body is not the start of a new head, so
    the connection then idles under idle_timeout (no 408 at head_timeout)."""
    proxy = await start_proxy(_base(upstream), "clients: {head_timeout: 0.4, idle_timeout: 5}\n")
    reader, writer = await _open(proxy)
    for _ in range(2):
        writer.write(b"POST /api/v1/1/crm/Accounts HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"{}")
        assert (await _response(reader))[0] == 200
    try:
        extra = await asyncio.wait_for(reader.read(100), 1.2)  # three head_timeouts, idle
    except TimeoutError:
        extra = None
    assert extra is None, f"an idle connection got {extra!r}"
    writer.write(GET)
    assert (await _response(reader))[0] == 200
    writer.close()


async def test_a_trickled_connect_head_is_cut_at_head_timeout(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "clients: {head_timeout: 0.5, idle_timeout: 30}\n")
    reader, writer = await _open(proxy)
    t0 = time.monotonic()
    for byte in b"CONNECT start.exactonline.nl:443 HTTP/1.1\r\n":
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            break
        if reader.at_eof():
            break
        await asyncio.sleep(0.05)
    assert await _closed_within(reader, 3.0)
    assert time.monotonic() - t0 < 3.0
    writer.close()


async def test_an_https_listeners_tls_handshake_must_end_within_head_timeout(upstream, start_proxy, tmp_path):
    from proxy.clock import SystemClock
    from proxy.tls.ca import LocalCA

    LocalCA.create(str(tmp_path / "ca"), SystemClock())
    proxy = await start_proxy(_base(upstream), f"ca: {{dir: '{tmp_path / 'ca'}'}}\n"
                              "clients: {head_timeout: 0.5, idle_timeout: 30}\n", listeners_yaml=(
                                  "listeners:\n  - {name: default, port: 0, upstream: test, tls: true}\n"))
    reader, writer = await _open(proxy)  # TCP only: no ClientHello ever comes
    t0 = time.monotonic()
    assert await _closed_within(reader, 5.0)
    assert time.monotonic() - t0 < 3.0
    writer.close()


# -- connections per listener ------------------------------------------------------------------------

async def test_connections_beyond_max_connections_get_503_with_retry_after(upstream, start_proxy, log_output):
    proxy = await start_proxy(_base(upstream), "clients: {max_connections: 3}\n", listeners_yaml=(
        "listeners:\n  - {name: default, port: 0, upstream: test}\n  - {name: other, port: 0, upstream: test}\n"))
    held = [await _open(proxy) for _ in range(3)]
    reader, writer = await _open(proxy)
    writer.write(GET)
    status, headers, body = await _response(reader)
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"].lower() == "close"
    assert "max_connections" in _message(body) and headers["x-exact-proxy"] == "local"
    assert await _closed_within(reader, 2.0)
    writer.close()
    # the cap is per listener: another listener still serves
    r2, w2 = await _open(proxy, "other")
    w2.write(GET)
    assert (await _response(r2))[0] == 200
    w2.close()
    # the connections held are served as usual
    hr, hw = held[0]
    hw.write(GET)
    assert (await _response(hr))[0] == 200
    # once one closes, there is room again
    held[1][1].close()
    for _ in range(40):
        await asyncio.sleep(0.05)
        r3, w3 = await _open(proxy)
        w3.write(GET)
        status = (await _response(r3))[0]
        w3.close()
        if status == 200:
            break
    assert status == 200
    for _, w in held:
        w.close()
    assert "max_connections" in log_output.getvalue()
    assert len(upstream.app[SEEN]) == 3


# -- settings ----------------------------------------------------------------------------------------

def test_clients_settings_are_checked_with_file_and_line():
    text = "clients:\n  head_timeout: -1\n  max_connections: 0\n  idel_timeout: 5\n  body_min_rate: fast\n"
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "policies.yaml")
    problems = [str(p) for p in exc.value.problems]
    assert any(p.startswith("policies.yaml:2: clients.head_timeout: must be greater than 0") for p in problems)
    assert any(p.startswith("policies.yaml:3: clients.max_connections: must be at least 1") for p in problems)
    assert any(p.startswith("policies.yaml:4: clients.idel_timeout: unknown setting; did you mean "
                            "'idle_timeout'?") for p in problems)
    assert any(p.startswith("policies.yaml:5: clients.body_min_rate:") for p in problems)


def test_repo_policy_shows_the_clients_defaults():
    from proxy.policy import load_policy

    assert load_policy("policies.yaml").clients == Policy.defaults().clients
