"""tap-exactonline (a Singer tap on the Meltano SDK and ossobv exactonline) piped into target-jsonl, the way
such a pipeline runs, through the proxy's HTTPS listener.

The tap reads its tokens from AWS Secrets Manager (``secret_id``) and writes them back after a refresh;
boto3 is pointed at a local stand-in (``jobs.SecretsManager``). The operator's code flow, through the
proxy, seeds the secret. The accounts stream is ``sync/CRM/Accounts`` from a Timestamp bookmark; the
emulator's sync pages are 60 rows here, so the 150 rows are three pages. Two scheduled runs: one with the
fresh token, one after it expired, when ossobv refreshes it (the proxy goes to Exact once) and the tap
stores the new pair.

Pass: both runs write every row; the secret holds a new refresh token; Exact saw no 429, no too-early
or old-refresh-token refresh, at most 8 errors per app and endpoint.
"""

from __future__ import annotations

import pytest

from .conftest import ACCESS, GUID, exact_problems, sleep_until
from .jobs import Tap, exact_saw_refresh, verdict

pytestmark = pytest.mark.interop


async def test_tap_exactonline_into_target_jsonl(world, clients, secrets_manager):
    w = await world(bulk_page_size=60)
    tap = Tap(w, clients, secrets_manager)
    await tap.discover()
    tokens = await w.authorize(GUID, via=w.secure)
    secrets_manager.seed(tokens)
    run1, rows1 = await tap.run("run-1")
    await sleep_until(tokens["received_at"] + ACCESS + 2)
    run2, rows2 = await tap.run("run-2")
    stats = await w.stats()
    problems = tap.problems(run1, rows1) + tap.problems(run2, rows2)
    if "UpdateSecret" not in secrets_manager.calls or secrets_manager.stored["refresh_token"] == tokens["refresh_token"]:
        problems.append(f"the tap stored no refreshed token (Secrets Manager calls {secrets_manager.calls})")
    problems += exact_problems(stats) + exact_saw_refresh(stats)
    verdict(w, problems, stats, run1, run2)
