"""Each real client alone through the proxy: its own code flow, an unfiltered crm/Accounts (the proxy adds
Exact's mandatory $filter), a filtered set over three pages, one account by key, and, once its access
token has expired, the filtered set and the key again (the client's refresh, or the proxy's, goes to
Exact once).

Pass: every step has every row; Exact saw no 429, no too-early or old-refresh-token refresh, at most 8
errors per app and endpoint, and at least one refresh.
"""

from __future__ import annotations

import pytest

from .conftest import BRACED, GUID, UPPER, exact_problems
from .jobs import STEPS, drive, exact_saw_refresh, run_problems, verdict

pytestmark = pytest.mark.interop


async def judge(w, run) -> None:
    stats = await w.stats()
    problems = run_problems(w, run, STEPS) + exact_problems(stats) + exact_saw_refresh(stats)
    verdict(w, problems, stats, run)


async def test_exact_online_sdk(world, clients):
    """Plain listener, ``{GUID}`` client id, HTTP Basic token calls, follows ``__next``."""
    w = await world()
    run = await drive(w, clients["exact-online-sdk"], "sdk_driver.py", w.env(), base=w.plain, client_id=BRACED)
    await judge(w, run)


async def test_ossobv_exactonline(world, clients):
    """HTTPS listener (certificate verified against the local CA), bare GUID, follows ``__next``."""
    w = await world()
    run = await drive(w, clients["exactonline"], "ossobv_driver.py", w.env(), base=w.secure, client_id=GUID)
    await judge(w, run)


async def test_python_exact_online(world, clients):
    """Hard-coded https://start.exactonline.be, through HTTPS_PROXY interception; upper-case GUID."""
    w = await world()
    run = await drive(w, clients["python-exact-online"], "pyexact_driver.py", w.env(intercept=True),
                      client_id=UPPER)
    await judge(w, run)


async def test_quantix_exact_online(world, clients):
    """Hard-coded https://start.exactonline.nl (Node's fetch through ProxyAgent); refreshes only after a 401."""
    w = await world()
    work = w.tmp / "quantix-tokens"
    work.mkdir()
    run = await drive(w, clients["quantix"], "quantix_driver.cjs", w.env(intercept=True, TMPDIR=str(work)),
                      client_id=GUID)
    await judge(w, run)
