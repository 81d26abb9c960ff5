"""Absolute-form targets name a host and a port (issue 14): the upstream's host on another port is
refused, as ``CONNECT`` is (``tls.intercept.decide``); nothing is forwarded."""

from __future__ import annotations

from tests.fake_upstream import SEEN
from tests.raw_http import base_url as _base
from tests.raw_http import message as _message
from tests.raw_http import open_raw as _open
from tests.raw_http import read_response as _response

# -- absolute-form targets ---------------------------------------------------------------------------

async def _absolute(proxy, target: str) -> tuple[int, bytes]:
    reader, writer = await _open(proxy)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status, _, body = await _response(reader)
    writer.close()
    return status, body


async def test_absolute_form_for_the_upstream_host_on_another_port_is_refused(upstream, start_proxy):
    base = _base(upstream)
    proxy = await start_proxy(base)
    other = upstream.port + 1 if upstream.port < 65535 else upstream.port - 1
    status, body = await _absolute(proxy, f"http://{upstream.host}:{other}/api/v1/1/crm/Accounts")
    assert status == 403 and f"{upstream.host}:{other}" in _message(body)
    status, body = await _absolute(proxy, f"http://{upstream.host}/api/v1/1/crm/Accounts")  # port 80
    assert status == 403
    assert upstream.app[SEEN] == []
    status, _ = await _absolute(proxy, f"{base}/api/v1/1/crm/Accounts")
    assert status == 200
    assert len(upstream.app[SEEN]) == 1


async def test_absolute_form_ports_follow_the_scheme_default(upstream, start_proxy):
    """An upstream without a port in base_url is on its scheme's default port, as for CONNECT; a target
    on its own scheme's default port names the same endpoint (http:// for an https upstream, as a tool
    with a plain-HTTP base URL behind HTTP_PROXY sends it: tests/test_tls.py); any other port does not."""
    proxy = await start_proxy("", upstreams_yaml=(
        "upstreams:\n  test: {base_url: 'http://start.exactonline.nl', "
        f"connect_to: '{upstream.host}:{upstream.port}'}}\n"))
    path = "/api/v1/1/crm/Accounts"
    for target in (f"http://start.exactonline.nl{path}", f"http://start.exactonline.nl:80{path}",
                   f"https://start.exactonline.nl{path}", f"https://START.exactonline.nl:443{path}"):
        assert (await _absolute(proxy, target))[0] == 200, target
    for target in (f"http://start.exactonline.nl:8080{path}", f"https://start.exactonline.nl:8443{path}",
                   f"http://user@start.exactonline.nl{path}"):
        status, body = await _absolute(proxy, target)
        assert status == 403, target
    assert len(upstream.app[SEEN]) == 4


async def test_absolute_form_with_a_port_that_is_not_a_number_gets_400(upstream, start_proxy):
    proxy = await start_proxy(_base(upstream))
    status, body = await _absolute(proxy, f"http://{upstream.host}:99999/x")
    assert status == 400
    status, body = await _absolute(proxy, f"http://{upstream.host}:abc/x")
    assert status == 400
    status, body = await _absolute(proxy, f"http://{upstream.host}:0/x")
    assert status == 400
    assert upstream.app[SEEN] == []
