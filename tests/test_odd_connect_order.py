"""An intercepted tunnel's connection handler sees ``connection_made`` before any byte (asyncio's
protocol contract), even when the tool's first request arrives with the end of the TLS handshake.

Found with issue 14, item 3: the interceptor called ``connection_made`` only after ``start_tls``
returned, and asyncio delivers data that came with the handshake's last flight before that, so a
handler that sets up per-connection state in ``connection_made`` (deadlines) failed on the first
request of a tunnel. The real proxy and the real interceptor; the connection handler is a real aiohttp
handler that records the order of the calls it gets.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tests.test_tls import (  # noqa: F401 - exact, local_ca and run_proxy are test_tls's fixtures
    EXACT,
    exact,
    local_ca,
    raw_connect,
    run_proxy,
    trusting,
)


class _Recording(RequestHandler):
    def connection_made(self, transport) -> None:
        self._manager.order.append((self, "made"))
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._manager.order.append((self, "data"))
        super().data_received(data)


class _RecordingServer(web.Server):
    def __init__(self, handler, **kwargs) -> None:
        super().__init__(handler, **kwargs)
        self.order: list[tuple[RequestHandler, str]] = []  # keeps the handlers alive

    def __call__(self) -> RequestHandler:
        return _Recording(self, loop=self._loop, **self._kwargs)


async def test_connection_made_comes_before_the_first_request_of_a_tunnel(run_proxy, exact, local_ca,  # noqa: F811
                                                                          tmp_path):
    proxy = await run_proxy(tls_listener=False)
    servers: list[_RecordingServer] = []

    def make_server(handler) -> web.Server:
        servers.append(_RecordingServer(handler))
        return servers[-1]

    (interceptor,) = proxy.interceptors
    interceptor._make_server = make_server
    ctx = trusting(str(tmp_path / "ca" / "ca.pem"))
    for _ in range(20):
        _, _, reader, writer = await raw_connect(proxy, f"{EXACT}:443".encode())
        await writer.start_tls(ctx, server_hostname=EXACT)
        writer.write(f"GET /api/v1/1/crm/Contacts HTTP/1.1\r\nHost: {EXACT}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        writer.close()
    (server,) = servers
    first: dict[RequestHandler, str] = {}
    for conn, event in server.order:
        first.setdefault(conn, event)
    assert len(first) == 20 and set(first.values()) == {"made"}, [e for _, e in server.order]
