"""Several real clients at once on one app, sharing one refresh token through the proxy's token broker.

One authorization (the operator's, through the proxy) gives one token pair, and every client is set up
with that same pair and its own spelling of the client id: exact-online-sdk ``{GUID}`` (HTTP Basic),
python-exact-online the upper-case GUID, quantix and ossobv the bare GUID, and the Singer tap (two
scheduled runs, the bare GUID). They run at the same time, and each refreshes when its own logic says so,
presenting the refresh token it was given. Without the broker, the first refresh rotates it and every
other client gets "Old refresh token used" (or refreshes too early).

ossobv only reads an account by key here (its paging is test_clients' job).

Pass: every client reads every row; Exact saw one app, no 429, no too-early or old-refresh-token
refresh, at most 8 errors per app and endpoint, and the refresh.
"""

from __future__ import annotations

import asyncio

import pytest

from .conftest import ACCESS, BRACED, GUID, UPPER, exact_problems, sleep_until
from .jobs import STEPS, Tap, drive, exact_saw_refresh, run_problems, verdict

pytestmark = pytest.mark.interop


async def test_clients_share_one_refresh_token(world, clients, secrets_manager):
    w = await world(bulk_page_size=60)
    tap = Tap(w, clients, secrets_manager)
    await tap.discover()
    tokens = await w.authorize(GUID)
    secrets_manager.seed(tokens)
    refresh_at = tokens["received_at"] + ACCESS + 2
    steps = [s for s in STEPS if s != "authorize"]
    quantix_tokens = w.tmp / "quantix-tokens"
    quantix_tokens.mkdir()
    jobs = [
        (clients["exact-online-sdk"], "sdk_driver.py", w.env(), dict(base=w.plain, client_id=BRACED, steps=steps)),
        (clients["python-exact-online"], "pyexact_driver.py", w.env(intercept=True), dict(client_id=UPPER, steps=steps)),
        (clients["quantix"], "quantix_driver.cjs", w.env(intercept=True, TMPDIR=str(quantix_tokens)),
         dict(client_id=GUID, steps=steps)),
        (clients["exactonline"], "ossobv_driver.py", w.env(),
         dict(base=w.secure, client_id=GUID, steps=["get_one", "wait", "get_one"])),
    ]

    async def scheduled_tap():
        first = await tap.run("run-1")
        await sleep_until(refresh_at)
        return first, await tap.run("run-2")

    *runs, ((tap1, rows1), (tap2, rows2)) = await asyncio.gather(
        *(drive(w, client, driver, env, tokens=tokens, refresh_at=refresh_at, **spec)
          for client, driver, env, spec in jobs), scheduled_tap())
    stats = await w.stats()
    problems = []
    for run, (_, _, _, spec) in zip(runs, jobs, strict=True):
        problems += run_problems(w, run, spec["steps"])
    problems += tap.problems(tap1, rows1) + tap.problems(tap2, rows2)
    problems += exact_problems(stats) + exact_saw_refresh(stats)
    apps = {row["app"] for row in stats["calls"]}
    if apps != {GUID}:
        problems.append(f"Exact saw these apps, not one: {sorted(map(str, apps))}")
    verdict(w, problems, stats, *runs, tap1, tap2, lines=100)
