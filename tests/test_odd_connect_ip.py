"""CONNECT to an upstream given by IP address (issue 14, item 3).

Emulator setups name the upstream ``https://127.0.0.1:PORT`` and send tools through ``HTTPS_PROXY``.
The leaf the local CA issued for such a host carried the IP as its common name; with only an IP in
the SAN, OpenSSL checks a DNS-like CN against the CA's DNS name constraints, so every verifying client
failed ("permitted subtree violation"). A leaf for IP hosts now has an IP SAN and no CN. Real TLS
clients (aiohttp, and the ssl module on a raw CONNECT) verify against the local CA only, strictly,
through the proxy's CONNECT, to the real emulator served over TLS.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from proxy.clock import SystemClock
from proxy.emulator.runner import start_emulator
from proxy.tls.ca import LocalCA
from tests.test_tls import trusting


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture(params=["127.0.0.1", "::1"])
async def ip_emulator(request, tmp_path):
    """The emulator over TLS on an IP address, with a leaf for that IP from a test CA."""
    ip = request.param
    if ip == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    test_ca = LocalCA.create(str(tmp_path / "exact-test-ca"), SystemClock())
    leaf = test_ca.leaf([ip])
    (tmp_path / "leaf.pem").write_bytes(leaf.chain_pem)
    (tmp_path / "leaf.key").write_bytes(leaf.key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    emu = await start_emulator(host=ip, ssl_context=ctx)
    port = int(emu.base_url.rsplit(":", 1)[1])
    emu.ip, emu.port, emu.test_ca = ip, port, test_ca.cert_path
    emu.authority = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    yield emu
    await emu.stop()


@pytest.fixture
async def proxy(start_proxy, ip_emulator, tmp_path):
    upstreams = (f"upstreams:\n  emu: {{base_url: 'https://{ip_emulator.authority}', "
                 f"ca_bundle: '{ip_emulator.test_ca}'}}\n")
    listeners = "listeners:\n  - {name: plain, port: 0, upstream: emu}\n"
    LocalCA.create(str(tmp_path / "ca"), SystemClock())
    return await start_proxy("", extra_yaml=f"ca: {{dir: '{tmp_path / 'ca'}'}}\n", listeners_yaml=listeners,
                             upstreams_yaml=upstreams)


async def test_aiohttp_through_connect_to_an_ip_upstream_verifies_and_pages(proxy, ip_emulator, tmp_path):
    ctx = trusting(str(tmp_path / "ca" / "ca.pem"))
    token = ip_emulator.state.issue_tokens("test-app")["access_token"]
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    url, rows = f"https://{ip_emulator.authority}/api/v1/7/crm/Accounts?$select=ID", 0
    async with aiohttp.ClientSession() as s:
        while url:
            assert url.startswith(f"https://{ip_emulator.authority}/"), url
            async with s.get(url, headers=h, proxy=proxy.url("plain"), ssl=ctx) as r:
                assert r.status == 200, await r.text()
                d = (await r.json())["d"]
            rows += len(d["results"])
            url = d.get("__next")
    assert rows == 250
    # every page went through the proxy's filters: the mandatory $filter was added each time
    assert ip_emulator.state.count(outcome="mandatory_filter") == 0
    assert ip_emulator.state.count(division=7, endpoint="crm/accounts") == 5


async def test_ssl_module_on_a_raw_connect_sees_an_ip_san_and_no_common_name(proxy, ip_emulator, tmp_path):
    ctx = trusting(str(tmp_path / "ca" / "ca.pem"))
    h, p = proxy.bound["plain"]
    reader, writer = await asyncio.open_connection(h, p)
    target = ip_emulator.authority.encode()
    writer.write(b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    await writer.start_tls(ctx, server_hostname=ip_emulator.ip)  # verifies chain, constraints and the IP
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == [ip_emulator.ip]
    assert san.get_values_for_type(x509.DNSName) == []
    token = ip_emulator.state.issue_tokens("test-app")["access_token"]
    writer.write(f"GET /api/v1/current/Me HTTP/1.1\r\nHost: {ip_emulator.authority}\r\nAuthorization: Bearer "
                 f"{token}\r\nAccept: application/json\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    assert b" 200 " in status_line, data[:300]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["d"]["results"][0]["CurrentDivision"]


def test_leaves_name_ip_hosts_by_ip_san_only_and_dns_hosts_by_cn_and_san(tmp_path):
    ca = LocalCA.create(str(tmp_path / "ca"), SystemClock())
    for names, cn in ((["127.0.0.1"], None), (["::1"], None), (["127.0.0.1", "::1"], None),
                      (["start.exactonline.nl"], "start.exactonline.nl"),
                      (["localhost", "127.0.0.1", "::1"], "localhost")):
        cert = x509.load_pem_x509_certificate(ca.leaf(names).chain_pem)
        got = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        assert got == ([cn] if cn else []), names
        assert len(cert.subject) >= 1  # never an empty subject (RFC 5280 would want the SAN critical)
