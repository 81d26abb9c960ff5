"""The headless-Chromium harness (tests.support.browser) against a real aiohttp server on loopback."""

from __future__ import annotations

import struct

import pytest
from aiohttp import web

from tests.support.browser import Browser, BrowserError, require_chromium

pytestmark = pytest.mark.browser

CSP = {"Content-Security-Policy": "default-src 'none'; script-src 'self'"}
INDEX = """<!doctype html><html><head><title>harness</title></head><body>
<div id="out">waiting</div>
<script src="/app.js"></script>
<script>document.getElementById('out').dataset.inline = 'ran';</script>
</body></html>"""
APP_JS = """setTimeout(() => {
  document.getElementById('out').textContent = 'ready';
  console.error('boom from app.js');
}, 150);"""
TALL = """<!doctype html><html><body style="margin:0">
<div style="height:3000px;background:linear-gradient(#fff,#048)">tall</div></body></html>"""


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def serve(text: str, content_type: str, csp: bool = True):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type, headers=CSP if csp else {})
    return handler


@pytest.fixture
async def site(aiohttp_server):
    app = web.Application()
    app.router.add_get("/", serve(INDEX, "text/html"))
    app.router.add_get("/app.js", serve(APP_JS, "text/javascript"))
    app.router.add_get("/tall", serve(TALL, "text/html", csp=False))  # the CSP would block its style=""
    return await aiohttp_server(app, host="127.0.0.1")


async def test_harness_drives_a_real_chromium(site, tmp_path):
    binary = require_chromium()
    async with Browser(binary) as browser:
        page = await browser.new_page(width=800, height=600)
        await page.goto(str(site.make_url("/")))

        assert await page.evaluate("document.title") == "harness"
        assert await page.evaluate("Promise.resolve(6 * 7)") == 42
        assert await page.evaluate("({a: [1, 'two'], b: null})") == {"a": [1, "two"], "b": None}
        assert await page.wait_for("document.getElementById('out').textContent === 'ready'")

        with pytest.raises(BrowserError, match="kaputt"):
            await page.evaluate("(() => { throw new Error('kaputt') })()")
        with pytest.raises(AssertionError, match=r"'never'.*last value: False"):
            await page.wait_for("'never' === 'ever'", timeout=0.2)

        await page.wait_for("true")  # the console events come in on the same socket before this answer
        assert "error: boom from app.js" in page.console, page.console
        # Older Chromium says "Refused to execute inline script because it violates ... Content Security
        # Policy ..."; Chromium 150 says "Executing inline script violates the following Content Security
        # Policy directive ... The action has been blocked." Both name the policy.
        assert any("inline script" in line and "Content Security Policy" in line for line in page.console), \
            page.console
        assert await page.evaluate("document.getElementById('out').dataset.inline") is None

        await page.screenshot(str(tmp_path / "small.png"), full_page=False)
        assert png_size(tmp_path / "small.png") == (800, 600)

        await page.goto(str(site.make_url("/tall")))
        await page.screenshot(str(tmp_path / "tall.png"))
        assert png_size(tmp_path / "tall.png") == (800, 3000)
        assert await page.evaluate("innerHeight") == 600  # the viewport is restored after the shot

    assert browser.process is not None and browser.process.returncode is not None
    assert not browser.profile.exists()
