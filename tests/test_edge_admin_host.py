"""Admin endpoints check who asks and by which name (issue 14): a web page that rebinds its own DNS name
to 127.0.0.1 reaches the proxy from a loopback address, but with its own name in ``Host``; it must not
read ``/_proxy/status``. Loopback names (localhost, 127.0.0.1, [::1], with or without port) and the
listener's ``public_base_url`` host pass; ``admin.allow_remote`` keeps its meaning (anyone, any name).
"""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from tests.fake_upstream import SEEN


def _base(upstream) -> str:
    return str(upstream.make_url("")).rstrip("/")


async def _status(reader, writer, host: str | None, version: str = "1.1") -> tuple[int, bytes]:
    head = f"GET /_proxy/status HTTP/{version}\r\n" + (f"Host: {host}\r\n" if host is not None else "")
    writer.write((head + "Connection: close\r\n\r\n").encode())
    raw = await asyncio.wait_for(reader.read(), 5.0)
    writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def _ask(proxy, host: str | None, listener: str = "default", connect_to: str | None = None,
               version: str = "1.1") -> tuple[int, bytes]:
    bound_host, port = proxy.bound[listener]
    reader, writer = await asyncio.open_connection(connect_to or bound_host, port)
    return await _status(reader, writer, host, version)


@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "LOCALHOST", "localhost.", "127.0.0.1",
                                  "127.0.0.1:{port}", "[::1]", "[::1]:{port}", "[::ffff:127.0.0.1]:{port}"])
async def test_loopback_names_pass(upstream, start_proxy, host):
    proxy = await start_proxy(_base(upstream))
    status, body = await _ask(proxy, host.format(port=proxy.bound["default"][1]))
    assert status == 200 and "totals" in json.loads(body)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example",
                                  "localhost.evil.example:{port}", "[::1", "", None])
async def test_other_names_are_refused_even_from_loopback(upstream, start_proxy, host):
    proxy = await start_proxy(_base(upstream))
    # no Host at all: HTTP/1.0 (aiohttp's parser answers an HTTP/1.1 request without Host with 400 itself)
    status, body = await _ask(proxy, None if host is None else host.format(port=proxy.bound["default"][1]),
                              version="1.0" if host is None else "1.1")
    assert status == 403
    assert "Host" in json.loads(body)["error"]
    assert upstream.app[SEEN] == []


async def test_the_listeners_public_base_url_host_passes(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), listeners_yaml=(
        "listeners:\n  - {name: default, port: 0, upstream: test, public_base_url: 'http://Accounting-PC:8080'}\n"))
    assert (await _ask(proxy, "accounting-pc:8080"))[0] == 200
    assert (await _ask(proxy, "accounting-pc"))[0] == 200
    assert (await _ask(proxy, "other-pc:8080"))[0] == 403


async def test_allow_remote_keeps_its_meaning(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream), "admin: {allow_remote: true}\n")
    assert (await _ask(proxy, "metrics.internal:9100"))[0] == 200


async def test_a_v4_mapped_loopback_peer_counts_as_loopback(upstream, start_proxy):
    """On a dual-stack socket 127.0.0.1 arrives as ::ffff:127.0.0.1, which Python 3.11 does not call
    loopback. (asyncio makes the proxy's own '::' listeners IPv6-only, so the listener's handler is served
    here on a dual-stack socket of the test's own.)"""
    proxy = await start_proxy(_base(upstream))
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::ffff:127.0.0.1", 0))  # IPv4 loopback, through an IPv6 socket
    dual = await asyncio.get_running_loop().create_server(proxy.runners[0].server, sock=sock)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        status, _ = await _status(reader, writer, "localhost")
    finally:
        dual.close()
        await dual.wait_closed()
    assert status == 200


async def test_a_transport_without_a_peer_address_is_refused(upstream, start_proxy, tmp_path):
    """The listener's own handler on a unix socket: no peer address, so nothing says it is loopback."""
    proxy = await start_proxy(_base(upstream))
    server = proxy.runners[0].server
    path = str(tmp_path / "admin.sock")
    unix = await asyncio.get_running_loop().create_unix_server(server, path)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        status, body = await _status(reader, writer, "localhost")
    finally:
        unix.close()
        await unix.wait_closed()
    assert status == 403 and "loopback" in json.loads(body)["error"]
