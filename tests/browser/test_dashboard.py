"""The dashboard as a person sees it: ``/_proxy/`` of a real busy proxy (``tests.support.scene``: calls
that queue, a chain refreshed upstream, errors until Exact blocks an endpoint) in a real headless
Chromium (``tests.support.browser``), compared with the JSON the proxy serves at the same moment.

``EXACT_PROXY_SCREENSHOT=path`` also saves a full-page PNG of the busy page there
(``scripts/dashboard-screenshot`` makes the README's picture so).
"""

from __future__ import annotations

import json
import os

import pytest

from tests.support.browser import Browser, require_chromium
from tests.support.scene import Scene
from tests.support.scene import division as _division

pytestmark = pytest.mark.browser

ON_SCREEN = "document.body.dataset.updated === %s"


def _q(selector: str) -> str:
    return json.dumps(selector)


async def _glance(scene: Scene) -> dict:
    async with scene.session.get(scene.proxy_url + "/_proxy/glance") as r:
        return await r.json()


async def _shown(page, scene: Scene) -> dict:
    """The glance the page shows: build one, then wait until the page has rendered a build at least as
    new (the scene's clock stands still, so the figures of both are the same)."""
    g = await _glance(scene)
    await page.wait_for("document.body.dataset.updated !== undefined && "
                        f"Number(document.body.dataset.updated) >= {g['now']}", timeout=10)
    return g


async def _bar(page, division_selector: str, window: str) -> dict:
    return await page.evaluate(f"""(() => {{
        const bar = document.querySelector({_q(division_selector)} + ' .bar[data-window="{window}"]');
        if (!bar) return null;
        return {{now: bar.getAttribute('aria-valuenow'), max: bar.getAttribute('aria-valuemax'),
                 level: bar.dataset.level, figure: bar.querySelector('.figure').textContent.trim(),
                 role: bar.getAttribute('role'), label: bar.getAttribute('aria-label')}};
    }})()""")


async def test_the_dashboard_shows_the_figures_the_proxy_has(tmp_path):
    require_chromium()
    scene = await Scene(tmp_path).start()
    try:
        await scene.traffic()  # queues and a refresh; no errors yet
        async with Browser() as browser:
            page = await browser.new_page(1280, 900)
            await page.goto(scene.proxy_url + "/_proxy/")
            await page.wait_for("document.querySelector('#connection').dataset.state === 'live'", timeout=10)
            g = await _shown(page, scene)
            assert g["banner"] == []
            assert await page.evaluate("document.querySelectorAll('#banner .banner-item').length") == 0

            for d in g["divisions"]:  # every bar shows what the JSON has
                sel = f'.division[data-app="{d["app"]}"][data-division="{d["division"]}"]'
                for window in ("minute", "day"):
                    bar = await _bar(page, sel, window)
                    want = d[window]
                    assert bar is not None, (sel, window)
                    assert bar["figure"] == f"{want['used']}/{want['limit']}"
                    assert (bar["now"], bar["max"]) == (str(want["used"]), str(want["limit"]))
                    assert bar["level"] == want["level"] and bar["role"] == "meter" and bar["label"]
            busy = '.division[data-division="102"]'
            assert (await _bar(page, busy, "minute"))["level"] == "over"
            assert "3 waiting" in await page.evaluate(f"document.querySelector({_q(busy + ' .queue')}).textContent")
            shares = await page.evaluate("""[...document.querySelectorAll('.division[data-division="101"] .share')]
                .map((s) => [s.dataset.share, s.querySelector('.bar[data-window="share-day"] .figure')?.textContent.trim()])""")
            want = [[x["share"], f"{x['today']}/{x['cap_day']}"] for x in _division(g, 101)["shares"]]
            assert shares == want and want[0] == ["replication", "7/40"]
            chain = g["chains"][0]
            assert await page.evaluate(f"document.querySelector('.chain[data-chain=\"{chain['chain']}\"]')"
                                       ".dataset.state") == chain["state"]
            for row in g["tools"]["rows"]:
                figure = await page.evaluate(f"document.querySelector('.tool-row[data-tool=\"{row['tool']}\"] "
                                             ".figure').textContent")
                assert str(row["requests"]) in figure
            assert await page.evaluate("document.querySelectorAll('.decision-row').length") == len(g["decisions"])

            await scene.spend_errors()  # Exact blocks crm/accounts: the banner appears without a reload
            await page.wait_for("document.querySelector('#banner .banner-item[data-kind=\"blocked\"]')",
                                timeout=5)
            g = await _shown(page, scene)
            banner = await page.evaluate("document.querySelector('#banner').textContent")
            assert g["banner"][0]["text"] in " ".join(banner.split())
            errors = await page.evaluate("""(() => {
                const row = document.querySelector('.error-row[data-endpoint="crm/accounts"]');
                const bar = row.querySelector('.bar[data-window="errors"]');
                return {figure: bar.querySelector('.figure').textContent.trim(), level: bar.dataset.level};
            })()""")
            assert errors == {"figure": "3/8", "level": "over"}
            tables = await page.evaluate("document.querySelectorAll('table caption').length")
            assert tables >= 4  # the table fallback a screen reader follows

            html = await page.evaluate("document.documentElement.outerHTML")
            for token in scene.tokens + ["test-secret"]:
                assert token not in html
            shot = os.environ.get("EXACT_PROXY_SCREENSHOT")
            if shot:
                await page.screenshot(shot, full_page=True)
            problems = [m for m in page.console if m.startswith(("error", "exception"))
                        or "Content Security Policy" in m]
            assert problems == []

            # the page is redrawn every second; the table fallback only when a figure in it changed, so
            # a screen reader keeps its place
            await page.evaluate("window.__card = document.querySelector('.division'); "
                                "window.__table = document.querySelector('#tables-body table'); true")
            await page.wait_for("window.__card !== document.querySelector('.division')", timeout=5)
            assert await page.evaluate("window.__table === document.querySelector('#tables-body table')")

            await scene.release()  # the queue drains: the page follows the feed
            await page.wait_for(f"document.querySelector({_q(busy + ' .queue')}).textContent.includes('no queue')",
                                timeout=5)
            assert await page.evaluate("window.__table !== document.querySelector('#tables-body table')")
    finally:
        await scene.stop()


async def test_the_page_says_when_the_proxy_is_gone(tmp_path):
    require_chromium()
    scene = await Scene(tmp_path).start()
    try:
        await scene.traffic()
        async with Browser() as browser:
            page = await browser.new_page(1280, 900)
            await page.goto(scene.proxy_url + "/_proxy/")
            await page.wait_for("document.querySelector('#connection').dataset.state === 'live'", timeout=10)
            await scene.release()  # (a stop waits for queued calls, up to forwarding.drain_timeout)
            await scene.proxy.stop()
            scene.proxy = None
            await page.wait_for("document.querySelector('#connection').dataset.state !== 'live'", timeout=10)
            # the last figures stay on the page
            assert await page.evaluate("document.querySelectorAll('.division').length") == 3
    finally:
        await scene.stop()
