"""``CONNECT`` handling: intercept configured Exact hosts, tunnel explicitly allowed hosts, refuse the rest.

Contract
- ``decide(policy, target)`` is the whole rule, as data: a ``CONNECT`` to the host and port of a
  configured upstream's ``base_url`` is intercepted (when ``forward_proxy.intercept``); one to a host in
  ``forward_proxy.tunnel_hosts`` (``host`` means port 443) is tunnelled blind; anything else is refused
  (403). A configured Exact host is always intercepted, never tunnelled, so every protection applies.
- ``Interceptor.take_over(transport, head, rest)`` is called by ``listen.ConnectGuard`` with the raw
  connection and the complete ``CONNECT`` request head. It answers refusals itself (Exact's envelope,
  ``Connection: close``). For an interception it answers ``200 Connection established``, upgrades the
  client connection to TLS (``loop.start_tls``) with a leaf from the local CA for the requested host,
  and hands the decrypted stream to an aiohttp request handler that runs the normal handler of the
  listener, hence the whole filter chain, with the upstream fixed to the requested host. That handler
  gets ``connection_made`` before any byte, even bytes that came with the end of the handshake. A request on
  that stream whose ``Host`` (or absolute-form target) names another host gets 421 and goes nowhere.
- Without a usable local CA the ``CONNECT`` gets 502 with what to run; the tool sees an error, never an
  unverified connection.
- ``shutdown(timeout)`` drains intercepted connections like a listener's own: idle ones (a tool's
  pooled connection) close at once, a request in flight gets up to ``timeout`` to finish; blind
  tunnels are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from proxy.errors import envelope
from proxy.tls.ca import CAError
from proxy.tls.contexts import ServerContexts

if TYPE_CHECKING:
    from proxy.policy.hosts import Upstream

log = logging.getLogger("exact_proxy.connect")

ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
HANDSHAKE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Decision:
    action: str                  # intercept | tunnel | refuse
    host: str = ""
    port: int = 0
    upstream: Upstream | None = None  # set for intercept
    status: int = 403
    reason: str = ""


def parse_target(target: str) -> tuple[str, int] | None:
    """``host:port`` of a CONNECT request line; None when it is not one."""
    try:
        parts = urlsplit("//" + target)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host or port is None or parts.path or parts.query or "@" in target:
        return None
    return host.lower().rstrip("."), port


def _base_target(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def decide(policy, target: str) -> Decision:
    parsed = parse_target(target)
    if parsed is None:
        return Decision("refuse", status=400, reason=f"CONNECT target {target[:80]!r} is not host:port")
    host, port = parsed
    fp = policy.forward_proxy
    for up in policy.upstreams.values():
        if _base_target(up.base_url) == (host, port):
            if fp.intercept:
                return Decision("intercept", host, port, up)
            return Decision("refuse", host, port, reason=f"CONNECT {host}:{port} refused: forward_proxy."
                            "intercept is off in the policy; point the tool's base URL at this proxy instead")
    allowed = {h if ":" in h else f"{h}:443" for h in fp.tunnel_hosts}
    if f"{host}:{port}" in allowed:
        return Decision("tunnel", host, port)
    return Decision("refuse", host, port, reason=f"CONNECT {host}:{port} refused: not a configured Exact "
                    "Online host (upstreams in policies.yaml), and not in forward_proxy.tunnel_hosts; "
                    "exact-proxy is not a tunnel to other hosts")


def _answer(status: int, reason: str, message: str) -> bytes:
    body = envelope(message)
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"X-Exact-Proxy: local\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


REASONS = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}


def refuse(transport: asyncio.BaseTransport, status: int, message: str) -> None:
    transport.write(_answer(status, REASONS.get(status, "Error"), message))  # type: ignore[attr-defined]
    transport.close()


class Interceptor:
    """CONNECT handling for one listener."""

    def __init__(self, services, listener, contexts: ServerContexts,
                 make_server: Callable[[Callable], web.Server]) -> None:
        self.services = services
        self.listener = listener
        self.contexts = contexts
        self._make_server = make_server
        self._servers: dict[tuple[str, str, int], web.Server] = {}
        self._tasks: set[asyncio.Task] = set()
        self._tunnels: set[asyncio.BaseTransport] = set()

    # -- entry ------------------------------------------------------------------------------------
    def take_over(self, transport: asyncio.Transport, head: bytes, rest: bytes) -> None:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            refuse(transport, 400, "malformed CONNECT request line")
            return
        if rest:
            refuse(transport, 400, "data sent before the CONNECT was answered")
            return
        policy = self.services.holder.current
        d = decide(policy, parts[1])
        peer = transport.get_extra_info("peername")
        if d.action == "refuse":
            log.info("CONNECT %s from %s refused (%d)", parts[1][:200], peer and peer[0], d.status)
            refuse(transport, d.status, d.reason)
            return
        if d.action == "tunnel":
            log.info("CONNECT %s:%d from %s tunnelled blind (forward_proxy.tunnel_hosts)", d.host, d.port,
                     peer and peer[0])
            self._spawn(self._tunnel(transport, d.host, d.port, policy.forwarding.connect_timeout))
            return
        upstream = d.upstream
        assert upstream is not None  # decide() names the upstream of every interception
        try:
            ctx = self.contexts.for_names((d.host,))
        except (CAError, ValueError, OSError, ssl.SSLError) as exc:
            log.error("CONNECT %s:%d cannot be intercepted: %s", d.host, d.port, exc)
            refuse(transport, 502, f"CONNECT {d.host}:{d.port} cannot be intercepted: {exc}")
            return
        log.debug("CONNECT %s:%d from %s intercepted -> upstream %s", d.host, d.port, peer and peer[0],
                  upstream.name)
        transport.pause_reading()
        transport.write(ESTABLISHED)
        self._spawn(self._intercept(transport, ctx, d, upstream))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- interception -----------------------------------------------------------------------------
    def _server_for(self, d: Decision, upstream: Upstream) -> web.Server:
        key = (upstream.name, d.host, d.port)
        server = self._servers.get(key)
        if server is None:
            from proxy.http.handler import make_handler

            view = dataclasses.replace(self.listener, upstream=upstream.name, tls=True, public_base_url=None)
            server = self._make_server(_host_guard(make_handler(self.services, view), d.host, d.port))
            self._servers[key] = server
        return server

    async def _intercept(self, transport: asyncio.Transport, ctx: ssl.SSLContext, d: Decision,
                         upstream: Upstream) -> None:
        loop = asyncio.get_running_loop()
        protocol = self._server_for(d, upstream)()
        hold = _Hold()
        try:
            tls = await loop.start_tls(transport, hold, ctx, server_side=True,
                                       ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            # Typically: the tool does not trust the local CA. Say so once, plainly.
            log.warning("CONNECT %s:%d: TLS handshake with the tool failed (%s); does it trust the local "
                        "CA? See 'exact-proxy ca show'", d.host, d.port, exc)
            transport.close()
            return
        if tls is None:  # pragma: no cover - the transport closed during the handshake
            return
        hold.hand_over(tls, protocol)

    # -- blind tunnel -----------------------------------------------------------------------------
    async def _tunnel(self, transport: asyncio.Transport, host: str, port: int, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        transport.pause_reading()
        try:
            async with asyncio.timeout(timeout):
                up_transport, up_pipe = await loop.create_connection(_Pipe, host, port)
        except (OSError, TimeoutError) as exc:
            refuse(transport, 502, f"cannot connect to {host}:{port}: {type(exc).__name__}")
            return
        client_pipe = _Pipe()
        client_pipe.connection_made(transport)
        transport.set_protocol(client_pipe)
        client_pipe.attach(up_transport)
        up_pipe.attach(transport)
        for t in (transport, up_transport):
            self._tunnels.add(t)
        client_pipe.on_lost = up_pipe.on_lost = self._tunnels.discard
        transport.write(ESTABLISHED)
        transport.resume_reading()

    async def shutdown(self, timeout: float) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for t in list(self._tunnels):
            t.close()
        for server in self._servers.values():
            pre_shutdown = getattr(server, "pre_shutdown", None)  # aiohttp >= 3.10: close idle ones now
            if pre_shutdown is not None:
                pre_shutdown()
        for server in self._servers.values():
            await server.shutdown(timeout)
        self._servers.clear()


def _host_guard(handler, host: str, port: int):
    """Requests inside an intercepted tunnel must stay on the tunnel's host."""

    def same(authority: str) -> bool:
        parsed = parse_target(authority) if ":" in authority.rsplit("]", 1)[-1] else None
        if parsed is None:
            return authority.lower().strip("[]").rstrip(".") == host
        return parsed == (host, port)

    async def guarded(request: web.BaseRequest) -> web.StreamResponse:
        raw = request.raw_path
        if raw[:8].lower().startswith(("http://", "https://")):
            authority = urlsplit(raw).netloc
        else:
            authority = request.headers.get("Host", "")
        if not same(authority):
            return web.Response(status=421, body=envelope(
                f"this connection is a tunnel to {host}:{port}; a request for {authority[:80]!r} does not "
                "belong in it"), content_type="application/json", headers={"X-Exact-Proxy": "local"})
        return await handler(request)

    return guarded


class _Hold(asyncio.Protocol):
    """The tunnel's protocol while ``start_tls`` finishes. asyncio hands over bytes that came with the
    handshake's last flight (a tool's first request) before ``start_tls`` returns; the request handler
    must see ``connection_made`` first (asyncio's protocol contract), so they wait here."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.eof = False
        self.lost: tuple[Exception | None] | None = None

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        return True  # the handler decides, once it has the connection

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = (exc,)

    def hand_over(self, tls: asyncio.Transport, protocol: asyncio.BaseProtocol) -> None:
        tls.set_protocol(protocol)
        protocol.connection_made(tls)
        for chunk in self.chunks:
            protocol.data_received(chunk)  # type: ignore[attr-defined]
        self.chunks.clear()
        if self.eof and not protocol.eof_received():  # type: ignore[attr-defined]
            tls.close()
        if self.lost is not None:
            protocol.connection_lost(self.lost[0])


class _Pipe(asyncio.Protocol):
    """One direction of a blind tunnel, with flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: asyncio.Transport | None = None
        self._early: list[bytes] = []
        self._eof = False
        self.on_lost: Callable[[asyncio.BaseTransport], None] = lambda t: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def attach(self, peer: asyncio.Transport) -> None:
        self.peer = peer
        for chunk in self._early:
            peer.write(chunk)
        self._early.clear()
        if self._eof:
            self.eof_received()

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._early.append(data)
        else:
            self.peer.write(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self.peer is not None:
            if self.peer.can_write_eof():
                self.peer.write_eof()
            else:
                self.peer.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.on_lost(self.transport)
        if self.peer is not None:
            self.peer.close()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()
