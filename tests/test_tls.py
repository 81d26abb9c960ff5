"""HTTPS towards the tools, with real TLS and no network.

"start.exactonline.nl" is a small TLS app on 127.0.0.1 with a certificate from a *test* CA; the proxy
reaches it through the upstream's ``connect_to`` and trusts it only through ``ca_bundle``. Tools trust
only the proxy's local CA. Shown: the HTTPS listener, CONNECT interception (the whole filter chain
runs: the mandatory $filter is added), refusal of other hosts, blind tunnels only when listed, plain
HTTP_PROXY absolute-form requests, and that upstream verification is never weakened.
"""

from __future__ import annotations

import asyncio
import json
import ssl

import aiohttp
import pytest
from aiohttp import web

from proxy.clock import SystemClock
from proxy.tls.ca import CAMissing, LocalCA

EXACT = "start.exactonline.nl"


class FakeExact:
    """Stands in for Exact (the emulator is written separately); ``seen`` lists what reached it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict]] = []
        self.port = 0
        self.ca_pem = ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.seen.append((request.method, request.raw_path, dict(request.headers)))
        body = {"d": {"results": [{"Host": request.headers.get("Host"), "target": request.raw_path,
                                   "sni_ok": request.secure}],
                      "__next": f"https://{EXACT}/api/v1/123/crm/Accounts?$skiptoken=guid'1'"}}
        return web.json_response(body)


@pytest.fixture
async def exact(tmp_path):
    fake = FakeExact()
    test_ca = LocalCA.create(str(tmp_path / "exact-test-ca"), SystemClock())
    leaf = test_ca.leaf([EXACT])
    (tmp_path / "exact-leaf.pem").write_bytes(leaf.chain_pem)
    (tmp_path / "exact-leaf.key").write_bytes(leaf.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "exact-leaf.pem", tmp_path / "exact-leaf.key")
    runner = web.ServerRunner(web.Server(fake.handle))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    fake.port = runner.addresses[0][1]
    fake.ca_pem = test_ca.cert_path
    yield fake
    await runner.cleanup()


@pytest.fixture
def local_ca(tmp_path):
    return LocalCA.create(str(tmp_path / "ca"), SystemClock())


def trusting(pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly one CA file, strictly."""
    ctx = ssl.create_default_context(cafile=pem)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    return ctx


@pytest.fixture
def run_proxy(start_proxy, exact, tmp_path):
    async def run(extra: str = "", ca_bundle: bool = True, tls_listener: bool = True):
        bundle = f", ca_bundle: '{exact.ca_pem}'" if ca_bundle else ""
        upstreams = (f"upstreams:\n  nl: {{base_url: 'https://{EXACT}', connect_to: '127.0.0.1:{exact.port}'"
                     f"{bundle}}}\n")
        listeners = "listeners:\n  - {name: plain, port: 0, upstream: nl}\n"
        if tls_listener:
            listeners += "  - {name: secure, port: 0, upstream: nl, tls: true}\n"
        return await start_proxy("", extra_yaml=f"ca: {{dir: '{tmp_path / 'ca'}'}}\n" + extra,
                                 listeners_yaml=listeners, upstreams_yaml=upstreams)
    return run


async def raw_connect(proxy, target: bytes, host: bytes | None = None):
    """Send a CONNECT; return (status line, headers+body so far, reader, writer)."""
    h, p = proxy.bound["plain"]
    reader, writer = await asyncio.open_connection(h, p)
    writer.write(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + (host or target) + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], head, reader, writer


# -- the HTTPS listener ---------------------------------------------------------------------------

async def test_https_listener_with_a_client_that_trusts_only_the_local_ca(run_proxy, exact, local_ca):
    proxy = await run_proxy()
    url = proxy.url("secure")
    assert url.startswith("https://127.0.0.1:")
    async with aiohttp.ClientSession() as s:
        for base in (url, url.replace("127.0.0.1", "localhost")):
            async with s.get(base + "/api/v1/123/crm/Accounts", ssl=trusting(local_ca.cert_path)) as r:
                assert r.status == 200
                body = await r.json()
    row = body["d"]["results"][0]
    assert row["Host"] == EXACT  # the upstream saw Exact's own host name, over verified TLS
    assert "$filter" in row["target"]  # the filter chain ran (mandatory filter added)
    assert body["d"]["__next"].startswith("https://localhost:")  # paging stays on the proxy, over https
    assert len(exact.seen) == 2


async def test_https_listener_refuses_clients_that_do_not_trust_the_local_ca(run_proxy, exact, local_ca):
    proxy = await run_proxy()
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(proxy.url("secure") + "/api/v1/current/Me", ssl=trusting(exact.ca_pem))
    assert exact.seen == []


async def test_https_listener_serves_exact_host_name_by_sni(run_proxy, exact, local_ca):
    """A tool that reaches the listener as start.exactonline.nl (hosts file) gets a certificate for it."""
    proxy = await run_proxy()
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url("secure") + "/api/v1/current/Me", server_hostname=EXACT,
                         headers={"Host": EXACT}, ssl=trusting(local_ca.cert_path)) as r:
            assert r.status == 200
            body = await r.json()
    assert body["d"]["__next"].startswith(f"https://{EXACT}/")  # already Exact's host: not rewritten


async def test_https_listener_without_a_ca_does_not_start(run_proxy, exact):
    with pytest.raises(CAMissing, match="ca init"):
        await run_proxy()


# -- CONNECT interception (HTTPS_PROXY) -----------------------------------------------------------

async def test_connect_mode_runs_the_filter_chain(run_proxy, exact, local_ca):
    proxy = await run_proxy(tls_listener=False)
    ctx = trusting(local_ca.cert_path)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://{EXACT}/api/v1/123/crm/Accounts", proxy=proxy.url("plain"), ssl=ctx) as r:
            assert r.status == 200
            body = await r.json()
        next_url = body["d"]["__next"]
        assert next_url.startswith(f"https://{EXACT}/")  # no rewriting needed: the tool stays on Exact's host
        async with s.get(next_url, proxy=proxy.url("plain"), ssl=ctx) as r:  # page 2, through the proxy
            assert r.status == 200
    assert len(exact.seen) == 2
    method, target, headers = exact.seen[0]
    assert "$filter" in target  # rewrite_filter ran inside the tunnel
    assert headers["Host"] == EXACT and "exact-proxy" in headers["Via"]
    assert "skiptoken" in exact.seen[1][1]


async def test_connect_mode_is_interception_not_a_blind_tunnel(run_proxy, exact, local_ca):
    """A client trusting only the real upstream's CA fails: the proxy terminated TLS itself."""
    proxy = await run_proxy(tls_listener=False)
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(f"https://{EXACT}/api/v1/current/Me", proxy=proxy.url("plain"),
                        ssl=trusting(exact.ca_pem))
    assert exact.seen == []


async def test_connect_to_other_hosts_is_refused(run_proxy, exact, local_ca):
    proxy = await run_proxy(tls_listener=False)
    for target in (b"evil.example:443", b"start.exactonline.nl:8443", b"start.exactonline.be:443",
                   f"127.0.0.1:{exact.port}".encode(), b"not a target"):
        status, head, _, writer = await raw_connect(proxy, target)
        assert b" 403 " in status or b" 400 " in status, (target, status)
        writer.close()
    async with aiohttp.ClientSession() as s:
        with pytest.raises(aiohttp.ClientHttpProxyError) as info:
            await s.get("https://evil.example/", proxy=proxy.url("plain"))
    assert info.value.status == 403
    assert exact.seen == []


async def test_connect_refusal_names_the_reason(run_proxy, exact, local_ca):
    proxy = await run_proxy(tls_listener=False)
    status, head, reader, writer = await raw_connect(proxy, b"evil.example:443")
    body = await reader.read()
    writer.close()
    assert b" 403 " in status
    message = json.loads(body)["error"]["message"]["value"]
    assert "not a configured Exact Online host" in message and "tunnel_hosts" in message


async def test_intercept_can_be_switched_off(run_proxy, exact, local_ca):
    proxy = await run_proxy("forward_proxy: {intercept: false}\n", tls_listener=False)
    status, _, _, writer = await raw_connect(proxy, b"start.exactonline.nl:443")
    writer.close()
    assert b" 403 " in status


async def test_connect_without_a_local_ca_says_what_to_run(run_proxy, exact):
    proxy = await run_proxy(tls_listener=False)
    status, _, reader, writer = await raw_connect(proxy, b"start.exactonline.nl:443")
    body = await reader.read()
    writer.close()
    assert b" 502 " in status and b"ca init" in body
    assert exact.seen == []


async def test_a_tunnel_keeps_to_its_host(run_proxy, exact, local_ca):
    """Inside a tunnel to .nl, a request naming another host gets 421 and goes nowhere."""
    proxy = await run_proxy(tls_listener=False)
    status, _, reader, writer = await raw_connect(proxy, b"start.exactonline.nl:443")
    assert b" 200 " in status
    await writer.start_tls(trusting(local_ca.cert_path), server_hostname=EXACT)
    writer.write(b"GET /api/v1/current/Me HTTP/1.1\r\nHost: start.exactonline.be\r\nConnection: close\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 421 ")
    assert exact.seen == []


async def test_blind_tunnel_only_for_listed_hosts(run_proxy, exact, local_ca):
    async def echo(reader, writer):
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await run_proxy(f"forward_proxy: {{tunnel_hosts: ['127.0.0.1:{port}']}}\n", tls_listener=False)
        status, _, reader, writer = await raw_connect(proxy, f"127.0.0.1:{port}".encode())
        assert b" 200 " in status
        writer.write(b"ping, not HTTP")
        assert await reader.read(100) == b"ping, not HTTP"
        writer.close()
    finally:
        server.close()


# -- plain HTTP_PROXY and the upstream side -------------------------------------------------------

async def test_http_proxy_absolute_form_for_an_exact_host(run_proxy, exact, local_ca):
    proxy = await run_proxy(tls_listener=False)
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://{EXACT}/api/v1/123/crm/Accounts", proxy=proxy.url("plain")) as r:
            assert r.status == 200
            body = await r.json()
        async with s.get("http://evil.example/api/v1/123/crm/Accounts", proxy=proxy.url("plain")) as r:
            assert r.status == 403
    assert body["d"]["results"][0]["Host"] == EXACT
    assert len(exact.seen) == 1 and "$filter" in exact.seen[0][1]


async def test_upstream_certificate_is_always_verified(run_proxy, exact, local_ca):
    """Without ca_bundle the test CA is not trusted (system store): the proxy refuses to talk."""
    proxy = await run_proxy(ca_bundle=False)
    async with aiohttp.ClientSession() as s:
        async with s.get(proxy.url("secure") + "/api/v1/current/Me", ssl=trusting(local_ca.cert_path)) as r:
            assert r.status == 502
            assert "certificate" in (await r.text()).lower()
    assert exact.seen == []


async def test_unchanged_python_tool_with_only_environment_variables(run_proxy, exact, local_ca, monkeypatch):
    """The standard library's urllib, told nothing but HTTPS_PROXY and SSL_CERT_FILE, reaches 'Exact'."""
    import urllib.request

    proxy = await run_proxy(tls_listener=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url("plain"))
    monkeypatch.setenv("SSL_CERT_FILE", local_ca.cert_path)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    def tool() -> dict:
        # build_opener reads the environment now (urlopen's global opener may have read it earlier)
        opener = urllib.request.build_opener()
        with opener.open(f"https://{EXACT}/api/v1/123/crm/Accounts", timeout=5) as r:
            return json.load(r)

    body = await asyncio.to_thread(tool)
    assert body["d"]["results"][0]["Host"] == EXACT
    assert "$filter" in exact.seen[0][1]
